#!/usr/bin/env bash
# The Slurm benchmark in one command (as root, on the single-node Slurm that `ci/slurm.sh up`
# starts): create → running of a Slurm desktop beside its job's own start, with jobs that call
# back when their desktop is ready and with hpcdesk only looking, interleaved; medians.
#   bench/slurm.sh [--runs 5] [--user hdtest]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench/slurm.sh: needs root (desktops run as the test account)" >&2; exit 1; }
export SLURM_CONF=${SLURM_CONF:-/var/tmp/hpcdesk-slurm/slurm.conf}
sinfo -h -o %T >/dev/null || { echo "bench/slurm.sh: no Slurm; run ci/slurm.sh up" >&2; exit 1; }
cargo build --release -q -p hpcdesk -p hpcdesk-bench
exec target/release/hpcdesk-bench slurm --hpcdesk target/release/hpcdesk "$@"
