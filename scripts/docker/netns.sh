#!/usr/bin/env bash
# Network namespaces for the multi-host (swarm) tests: a bridge of the test's own in the root namespace
# and, per simulated host, a namespace joined to it by a veth pair. Every name derives from a tag the
# test chooses, so nothing of anyone else is touched. Needs root.
#   up TAG PREFIX          bridge ctb<TAG> with PREFIX.1/24 (PREFIX like 10.214.7)
#   add TAG N PREFIX       namespace ctn-<TAG>-<N> with PREFIX.<N+1>/24 on eth0, default route via PREFIX.1
#   down TAG N...          removes the namespaces (their veth pairs go with them) and the bridge
set -euo pipefail
cmd="${1:-}"; tag="${2:-}"
[ -n "$cmd" ] && [ -n "$tag" ] || { echo "usage: $0 up|add|down TAG ..." >&2; exit 2; }
br="ctb${tag}"
case "$cmd" in
up)
  ip link add "$br" type bridge
  ip addr add "$3.1/24" dev "$br"
  ip link set "$br" up
  ;;
add)
  n="$3"; ns="ctn-${tag}-${n}"; veth="ctv${tag}${n}"
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$br" up
  ip netns exec "$ns" ip addr add "$4.$((n + 1))/24" dev eth0
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip route add default via "$4.1"
  echo "$ns"
  ;;
down)
  shift 2
  for n in "$@"; do ip netns del "ctn-${tag}-${n}" 2>/dev/null || true; done
  ip link del "$br" 2>/dev/null || true
  ;;
*) echo "usage: $0 up|add|down TAG ..." >&2; exit 2 ;;
esac
