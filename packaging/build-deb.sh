#!/usr/bin/env bash
# Builds the Debian package of hpcdesk with dpkg-deb from what the repository holds.
#   packaging/build-deb.sh [binary]     → target/debian/hpcdesk_<version>_<arch>.deb
# The binary defaults to target/release/hpcdesk (built here if missing); CI passes the debug
# build it has just tested.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/release/hpcdesk}
if [ ! -x "$bin" ]; then
  cargo build --release --locked -p hpcdesk
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
root=target/debian/hpcdesk_${version}_${arch}
rm -rf "$root"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/etc/hpcdesk" "$root/etc/pam.d" \
  "$root/usr/lib/systemd/system" "$root/usr/share/doc/hpcdesk/examples" \
  "$root/usr/share/hpcdesk"
install -m 0755 "$bin" "$root/usr/bin/hpcdesk"
# The commented example, with the packaged paths.
sed -e 's|^data_dir = "./data"|data_dir = "/var/lib/hpcdesk"|' \
    -e 's|^# agent = "/usr/local/bin/hpcdesk"|agent = "/usr/bin/hpcdesk"|' \
  crates/hpcdesk-server/hpcdesk.example.toml > "$root/etc/hpcdesk/hpcdesk.toml"
chmod 0640 "$root/etc/hpcdesk/hpcdesk.toml"
install -m 0644 packaging/pam.d-hpcdesk "$root/etc/pam.d/hpcdesk"
install -m 0644 packaging/hpcdesk.service "$root/usr/lib/systemd/system/hpcdesk.service"
install -m 0644 packaging/nginx-hpcdesk.conf "$root/usr/share/doc/hpcdesk/examples/nginx-hpcdesk.conf"
install -m 0644 packaging/grafana-dashboard.json "$root/usr/share/hpcdesk/grafana-dashboard.json"
install -m 0644 README.md "$root/usr/share/doc/hpcdesk/README.md"
cat > "$root/DEBIAN/control" <<CONTROL
Package: hpcdesk
Version: ${version}
Architecture: ${arch}
Maintainer: hpcdesk developers <hpcdesk@localhost>
Section: net
Priority: optional
Depends: tigervnc-standalone-server, tigervnc-tools, xauth, libc6
Recommends: xfce4-session, xfwm4, xfce4-panel, xfdesktop4, xfce4-terminal, thunar, xfce4-notifyd, libnotify-bin, dbus-x11, xterm, twm, fonts-dejavu-core, xfonts-base
Suggests: nginx, postgresql, slurm-client
Description: Linux desktops in the browser for HPC clusters
 A portal calls hpcdesk's SCNet-compatible API with the user's token; hpcdesk
 starts a TigerVNC desktop for the user's cluster account (locally, over SSH
 or as a Slurm job) and returns a launch URL for a noVNC page that reaches that
 desktop through hpcdesk's own WebSocket gateway.
CONTROL
printf '/etc/hpcdesk/hpcdesk.toml\n/etc/pam.d/hpcdesk\n' > "$root/DEBIAN/conffiles"
install -m 0755 packaging/postinst "$root/DEBIAN/postinst"
install -m 0755 packaging/prerm "$root/DEBIAN/prerm"
install -m 0755 packaging/postrm "$root/DEBIAN/postrm"
dpkg-deb --root-owner-group --build "$root" >/dev/null
echo "$root.deb"
