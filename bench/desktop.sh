#!/usr/bin/env bash
# The real-desktop benchmark in one command: one TigerVNC desktop started through
# `hpcdesk serve`, reached directly, through a plain relay (socat), through websockify 0.13 and
# through hpcdesk's launch URL, measured interleaved; prints the table with ratios from this
# one run (bench/src/desktop.rs says what each column is).
#   bench/desktop.sh [hpcdesk-bench desktop options, e.g. --rounds 5 --secs 3 --keys 200]
# Run as root (the desktop then runs as hdtest, created by ci/test.sh) or as a desktop user.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${HPCDESK_BENCH_VENV:-"$PWD/target/bench-venv"}
if [ ! -x "$venv/bin/websockify" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q websockify==0.13.0 numpy
fi
if ! command -v socat >/dev/null 2>&1; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends socat >/dev/null
fi
cargo build --release -q -p hpcdesk -p hpcdesk-bench
exec target/release/hpcdesk-bench desktop --websockify "$venv/bin/websockify" \
  --hpcdesk target/release/hpcdesk "$@"
