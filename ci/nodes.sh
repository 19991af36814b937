#!/usr/bin/env bash
# Test "VNC nodes" for the ssh launcher: network namespaces vnode1 (10.213.1.2) and vnode2
# (10.213.2.2), each running its own sshd with its own host name and its own /tmp (so X
# display locks do not collide), reachable from this host over veth pairs. Homes and
# /var/tmp are shared, as homes are on a cluster. Needs root, iproute2 and openssh-server.
#   ci/nodes.sh up [vnode1 vnode2]     create / start (idempotent)
#   ci/nodes.sh down [vnode1 vnode2]   stop everything in the node and remove it
#   ci/nodes.sh env                    print the variables tests read
set -euo pipefail

DIR=${HPCDESK_NODES_DIR:-/var/tmp/hpcdesk-nodes}
. "$(dirname "$0")/lib.sh"
TUSER=${HPCDESK_TEST_USER:-hdtest}
# hdflood: an account whose shell start-up files the tests make misbehave.
TUSERS="$TUSER hdflood"
action=${1:-up}
shift || true
nodes=("$@")
[ "${#nodes[@]}" -gt 0 ] || nodes=(vnode1 vnode2)

index() { echo "${1#vnode}"; }

keys() {
  safe_dir "$DIR"
  safe_dir "$DIR/ssh"
  safe_dir "$DIR/ssh/keys"
  [ -f "$DIR/ssh/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/ssh/host_ed25519"
  [ -f "$DIR/ssh/client_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/ssh/client_ed25519"
  for u in $TUSERS; do
    cp "$DIR/ssh/client_ed25519.pub" "$DIR/ssh/keys/$u"
    chmod 644 "$DIR/ssh/keys/$u"
  done
  : >"$DIR/ssh/known_hosts"
  for n in vnode1 vnode2; do
    echo "10.213.$(index "$n").2 $(cut -d' ' -f1,2 "$DIR/ssh/host_ed25519.pub")" >>"$DIR/ssh/known_hosts"
  done
  mkdir -p -m 0755 /run/sshd
}

up() { # name
  local n=$1 i
  i=$(index "$n")
  if ! ip netns list | grep -qw "$n"; then
    ip netns add "$n"
    # A host side left from the node's previous life goes with it (its peer is gone).
    ip link del "vh-$n" >/dev/null 2>&1 || true
  fi
  if ! ip -n "$n" link show eth0 >/dev/null 2>&1; then
    ip link del "vh-$n" >/dev/null 2>&1 || true
    ip link add "vh-$n" type veth peer name eth0 netns "$n"
    # No IPv6 on the host side: its link-local address would arrive a second or two later
    # (after duplicate address detection), and Chromium, running a browser test meanwhile,
    # fails its requests with ERR_NETWORK_CHANGED.
    [ -e "/proc/sys/net/ipv6/conf/vh-$n" ] && sysctl -qw "net.ipv6.conf.vh-$n.disable_ipv6=1"
    ip addr add "10.213.$i.1/24" dev "vh-$n"
    ip -n "$n" addr add "10.213.$i.2/24" dev eth0
  fi
  ip link set "vh-$n" up
  ip -n "$n" link set eth0 up
  ip -n "$n" link set lo up
  safe_dir "$DIR/$n-tmp" 1777
  cat >"$DIR/sshd_$n.config" <<CONF
ListenAddress 10.213.$i.2
Port 22
HostKey $DIR/ssh/host_ed25519
PidFile $DIR/sshd_$n.pid
AuthorizedKeysFile $DIR/ssh/keys/%u
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
PermitRootLogin no
AllowUsers $TUSERS
X11Forwarding no
MaxSessions 32
LogLevel VERBOSE
CONF
  if ! (exec 3<>"/dev/tcp/10.213.$i.2/22") 2>/dev/null; then
    # Own host name and /tmp for the node; sshd in the foreground so the pid is known.
    setsid ip netns exec "$n" unshare --uts --mount --propagation private sh -c \
      "hostname $n; mount --rbind '$DIR/$n-tmp' /tmp && exec /usr/sbin/sshd -D -e -f '$DIR/sshd_$n.config'" \
      </dev/null >"$DIR/sshd_$n.log" 2>&1 &
    for _ in $(seq 1 100); do
      (exec 3<>"/dev/tcp/10.213.$i.2/22") 2>/dev/null && break
      sleep 0.05
    done
  fi
  (exec 3<>"/dev/tcp/10.213.$i.2/22") 2>/dev/null || { echo "sshd on $n did not start:" >&2; cat "$DIR/sshd_$n.log" >&2; exit 1; }
}

down() { # name
  local n=$1
  ip netns list | grep -qw "$n" || return 0
  # Kill until none is left: a connection sshd accepted just before it died is served by a
  # child forked after the first listing, and one survivor keeps the node on the network
  # (an ssh ControlMaster then reaches it for as long as it is used).
  local pids left=1
  for _ in $(seq 1 100); do
    pids=$(ip netns pids "$n")
    [ -n "$pids" ] || { left=0; break; }
    kill -9 $pids 2>/dev/null || true
    sleep 0.05
  done
  [ "$left" = 0 ] || { echo "processes of $n survive: $(ip netns pids "$n")" >&2; exit 1; }
  ip netns del "$n"
  # The kernel tears the namespace down after `del` returns: wait until its link is gone,
  # so that an `up` right after starts from nothing.
  for _ in $(seq 1 200); do
    ip link show "vh-$n" >/dev/null 2>&1 || break
    sleep 0.05
  done
  if ip link show "vh-$n" >/dev/null 2>&1; then
    echo "$n: its link vh-$n is still there 10 s after the namespace was deleted" >&2
    exit 1
  fi
  rm -rf "${DIR:?}/$n-tmp"
}

case "$action" in
  up)
    keys
    # Addresses of nodes that are down must be unreachable, as on a real network (this
    # sandbox's default route would otherwise accept any connection).
    ip route replace unreachable 10.213.0.0/16
    for n in "${nodes[@]}"; do up "$n"; done
    ;;
  down)
    for n in "${nodes[@]}"; do down "$n"; done
    ;;
  env)
    echo "HPCDESK_NODES_DIR=$DIR"
    ;;
  *)
    echo "usage: $0 up|down|env [vnode1 vnode2]" >&2
    exit 2
    ;;
esac
