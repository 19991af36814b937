#!/usr/bin/env bash
# The API benchmarks in one command: launchurl and list requests/s and latency at 64 clients
# against a trivial axum handler in the same process, the server logging a line per request as
# `hpcdesk serve` does (--no-log: without); then, as root with TigerVNC and the
# test account, create → ready of the local launcher against Xvnc's own start time.
#   bench/api.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p hpcdesk-bench -p hpcdesk
target/release/hpcdesk-bench api "$@"
if [ "$(id -u)" -eq 0 ] && command -v Xvnc >/dev/null && id "${HPCDESK_TEST_USER:-hdtest}" >/dev/null 2>&1; then
  target/release/hpcdesk-bench create --hpcdesk target/release/hpcdesk --user "${HPCDESK_TEST_USER:-hdtest}"
else
  echo "create → ready skipped: needs root, Xvnc and the account ${HPCDESK_TEST_USER:-hdtest}" >&2
fi
