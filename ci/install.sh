#!/usr/bin/env bash
# Installs the system packages hpcdesk needs on Debian (bookworm or later).
#   ci/install.sh          what `hpcdesk serve` needs: TigerVNC, fonts, a window manager, xterm
#   ci/install.sh --test   plus what the test suite needs
# Idempotent: only missing packages are installed. Uses sudo when not run as root.
set -euo pipefail

runtime=(tigervnc-standalone-server tigervnc-tools xfonts-base x11-xserver-utils xterm twm)
test_only=(python3-requests)

pkgs=("${runtime[@]}")
if [ "${1:-}" = "--test" ]; then
  pkgs+=("${test_only[@]}")
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "ci/install.sh: installing ${missing[*]}" >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
