#!/usr/bin/env bash
# Installs what hpcdesk needs on Debian (bookworm or later).
#   ci/install.sh          what `hpcdesk serve` needs: TigerVNC, fonts, XFCE (and twm, xterm),
#                          and noVNC from npm into web/node_modules (embedded by the build)
#   ci/install.sh --test   plus what the test suite needs: Chromium, Playwright, python3-requests,
#                          python3-venv (schemathesis: ci/schemathesis.sh),
#                          OpenSSH (test nodes), Slurm with munge, PostgreSQL
# Idempotent: only missing packages are installed. Uses sudo when not run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# libpam0g-dev: the build links libpam (auth.password_backend = "pam").
# The default desktop is XFCE, started in its own D-Bus session (dbus-x11); twm and xterm stay
# as the minimal choice and the fallback. No recommends: no screensaver, locker or power manager.
runtime=(tigervnc-standalone-server tigervnc-tools xfonts-base x11-xserver-utils xterm twm
         xfce4-session xfwm4 xfce4-panel xfdesktop4 xfce4-terminal thunar xfce4-settings
         dbus-x11 fonts-dejavu-core adwaita-icon-theme xfce4-notifyd libnotify-bin
         libpam0g-dev)
test_only=(python3-requests python3-venv chromium openssh-server openssh-client iproute2 xclip
           slurmctld slurmd slurm-client munge postgresql)

testing=0
[ "${1:-}" = "--test" ] && testing=1

pkgs=("${runtime[@]}")
[ "$testing" -eq 1 ] && pkgs+=("${test_only[@]}")
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "ci/install.sh: installing ${missing[*]}" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
fi

# npm packages, pinned by the committed package-lock.json files.
npm_ci() { # dir
  if [ ! -d "$1/node_modules" ] || [ "$1/package-lock.json" -nt "$1/node_modules" ]; then
    echo "ci/install.sh: npm ci in $1" >&2
    npm ci --prefix "$1" --no-audit --no-fund --loglevel=error >/dev/null
    touch "$1/node_modules"
  fi
}
npm_ci web
[ "$testing" -eq 1 ] && npm_ci tests/browser
exit 0
