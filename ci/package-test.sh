#!/usr/bin/env bash
# The Debian package, as an operator meets it (root only): build it from a binary, install it
# with dpkg -i, check the unit with systemd-analyze, run the installed binary on the installed
# configuration as the unit does, create and delete a desktop through it, then remove and purge
# the package and check that the data directory is left.
#   ci/package-test.sh [binary]      (default: target/debug/hpcdesk, the build just tested)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "ci/package-test.sh: needs root" >&2; exit 1; }
user=${HPCDESK_TEST_USER:-hdtest}
port=65199

deb=$(packaging/build-deb.sh "${1:-target/debug/hpcdesk}")
echo "package-test: built $deb"
dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Depends\):/  \1:/p'
dpkg -i "$deb" >/dev/null
test -x /usr/bin/hpcdesk
test -f /etc/hpcdesk/hpcdesk.toml && test -f /etc/pam.d/hpcdesk
[ "$(stat -c %a /var/lib/hpcdesk)" = 700 ] || { echo "package-test: /var/lib/hpcdesk is not 0700" >&2; exit 1; }
systemd-analyze verify /usr/lib/systemd/system/hpcdesk.service
grep -qx 'KillMode=process' /usr/lib/systemd/system/hpcdesk.service
echo "package-test: installed; the unit verifies"

# As the unit runs it (no systemd here): its working directory and environment.
log=$(mktemp)
(cd /var/lib/hpcdesk && HPCDESK_SERVER__DATA_DIR=/var/lib/hpcdesk \
   HPCDESK_SERVER__LISTEN=127.0.0.1:$port HPCDESK_LAUNCHER__DEFAULT_DESKTOP=twm \
   exec /usr/bin/hpcdesk serve --config /etc/hpcdesk/hpcdesk.toml) >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do grep -q 'listening on' "$log" && break; sleep 0.1; done
grep -q 'listening on' "$log" || { cat "$log" >&2; exit 1; }
token=$(HPCDESK_SERVER__DATA_DIR=/var/lib/hpcdesk /usr/bin/hpcdesk token \
  --config /etc/hpcdesk/hpcdesk.toml --user pkgtest --compute-user "$user")
api=http://127.0.0.1:$port/hpc/openapi/v2/desktop/vnc
created=$(curl -sf -X PUT -H "token: $token" "$api")
echo "$created" | grep -q '"code":"0"' || { echo "package-test: create failed: $created" >&2; cat "$log" >&2; exit 1; }
id=$(echo "$created" | sed -n 's/.*"sessionId":"\([^"]*\)".*/\1/p')
echo "package-test: the installed service started $id"
curl -sf -X DELETE -H "token: $token" "$api/$id" | grep -q '"code":"0"'
kill "$server"; wait "$server" 2>/dev/null || true

dpkg -r hpcdesk >/dev/null
test ! -e /usr/bin/hpcdesk
dpkg -P hpcdesk >/dev/null
test ! -e /etc/hpcdesk/hpcdesk.toml
test -d /var/lib/hpcdesk && test -f /var/lib/hpcdesk/hpcdesk.db
echo "package-test: removed and purged; /var/lib/hpcdesk is left"
