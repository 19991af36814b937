#!/usr/bin/env bash
# The gateway benchmark in one command: builds hpcdesk-bench in release mode, installs
# websockify 0.13 (+numpy, as Open OnDemand and most portals run it) into a private venv,
# and prints the table of shared/PERFORMANCE.md with ratios measured in this one run.
#   bench/gateway.sh [hpcdesk-bench run options, e.g. --conns 1000,10000 --reps 3]
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${HPCDESK_BENCH_VENV:-"$PWD/target/bench-venv"}
if [ ! -x "$venv/bin/websockify" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q websockify==0.13.0 numpy
fi
cargo build --release -q -p hpcdesk-bench
exec target/release/hpcdesk-bench run --websockify "$venv/bin/websockify" "$@"
