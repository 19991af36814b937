#!/usr/bin/env bash
# The test command (README, and .ci/run): installs test dependencies, prepares the test
# accounts, runs every test of the workspace. Tests that need a real component fail in CI
# (CI=true) when it is missing, and skip loudly elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

ci/install.sh --test

if [ "$(id -u)" -eq 0 ]; then
  # Desktops never run as root: as root the tests start them for these accounts.
  # test_1215 is the account named by the SCNet seed example (gv101--test_1215--SIG--4);
  # hdflood is a user whose shell start-up files and job output the tests make misbehave;
  # hdprivate has a home (0700) that root without its file capabilities cannot enter.
  for u in hdtest test_1215 hdflood hdprivate; do
    id "$u" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$u"
  done
  # Real parts for the ssh and slurm launchers: two sshd nodes in network namespaces and
  # a single-node Slurm with munge; and a PostgreSQL for the store and several instances.
  ci/nodes.sh up
  ci/slurm.sh up >/dev/null
  pg=$(ci/postgres.sh up)
  export "${pg?}"
fi

cargo test --workspace --locked "$@"

# The API against its OpenAPI document: schemathesis on a live server (the binary just tested).
ci/schemathesis.sh run target/debug/hpcdesk

# The Debian package of the build just tested: install, run, remove (root only).
if [ "$(id -u)" -eq 0 ]; then
  ci/package-test.sh target/debug/hpcdesk
fi
