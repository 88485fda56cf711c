#!/usr/bin/env bash
# A private Docker daemon for tests and benchmarks (Debian's docker.io): everything under DIR (data root,
# exec root, socket, pid file), its own bridge, no iptables rules, so it touches nothing of any other
# daemon on the machine. `start DIR [NETNS]` runs it (inside network namespace NETNS when given, for the
# swarm tests) and prints its socket; `stop DIR` stops it by its pid and removes what it left: processes
# started from DIR, mounts under DIR, its bridge, DIR itself. Needs root. TEST_DOCKERD_IPTABLES=1 lets the
# daemon write iptables rules (its isolation of networks) and masquerade what leaves its networks (so containers
# reach the host, e.g. the test's Swift, from the namespace's address): only inside NETNS, whose rules are its own.
set -euo pipefail

cmd="${1:-}"; dir="${2:-}"; netns="${3:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR [NETNS]" >&2; exit 2; }
dir="$(realpath -m "$dir")"
# Interface names are at most 15 characters: one per directory.
tag="$(printf '%s' "$dir" | sha256sum | cut -c1-8)"
bridge="ctd${tag}"
# nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup mounts dockerd needs.
in_ns() { if [ -n "$netns" ]; then nsenter --net="/run/netns/$netns" "$@"; else "$@"; fi; }

case "$cmd" in
start)
  command -v dockerd >/dev/null || { echo "test-dockerd: dockerd is not installed (apt-get install docker.io)" >&2; exit 1; }
  iptables=false
  if [ "${TEST_DOCKERD_IPTABLES:-}" = 1 ]; then
    [ -n "$netns" ] || { echo "test-dockerd: TEST_DOCKERD_IPTABLES=1 needs a network namespace" >&2; exit 2; }
    iptables=true
  fi
  mkdir -p "$dir/root" "$dir/exec"
  [ -n "$netns" ] && echo "$netns" > "$dir/netns"
  # A /24 out of 10.213.0.0/16 picked from the directory's hash, on our own bridge.
  octet=$(( 0x${tag:0:2} ))
  in_ns ip link add "$bridge" type bridge
  in_ns ip addr add "10.213.$octet.1/24" dev "$bridge"
  in_ns ip link set "$bridge" up
  in_ns ip link set lo up
  # The docker driver makes a network per instance: small ones, from a range of our own.
  echo '{"default-address-pools":[{"base":"10.214.0.0/16","size":28}]}' > "$dir/daemon.json"
  mkdir -p "$dir/etc"
  # In its own mount namespace: the daemon's mounts die with it, and its /etc/docker (where Docker 20.10
  # writes key.json, with no flag to move it) is a directory of ours.
  in_ns setsid unshare --mount --propagation private sh -c '
    mount --bind "$1/etc" /etc/docker && shift 2 && exec "$@"' sh "$dir" -- \
    dockerd --config-file "$dir/daemon.json" --data-root "$dir/root" --exec-root "$dir/exec" \
    --host "unix://$dir/docker.sock" --pidfile "$dir/dockerd.pid" --bridge "$bridge" --iptables="$iptables" --ip-masq="$iptables" \
    --log-level warn > "$dir/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 300); do
    if [ -S "$dir/docker.sock" ] && curl -sf --unix-socket "$dir/docker.sock" http://d/_ping >/dev/null 2>&1; then
      echo "unix://$dir/docker.sock"; exit 0
    fi
    sleep 0.1
  done
  echo "test-dockerd: the daemon did not answer within 30 s:" >&2; tail -20 "$dir/dockerd.log" >&2; exit 1
  ;;
stop)
  [ -f "$dir/netns" ] && netns="$(cat "$dir/netns")"
  if [ -f "$dir/dockerd.pid" ]; then
    pid="$(cat "$dir/dockerd.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  # containerd and its shims name the exec root on their command lines.
  for p in /proc/[0-9]*; do
    if { tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null | grep -qF -- "$dir/"; then kill -KILL "${p#/proc/}" 2>/dev/null || true; fi
  done
  { grep -F " $dir/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  in_ns ip link del "$bridge" 2>/dev/null || true
  rm -rf "$dir"
  ;;
*) echo "usage: $0 start|stop DIR [NETNS]" >&2; exit 2 ;;
esac
