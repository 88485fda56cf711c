#!/usr/bin/env bash
# A real OpenStack Swift all-in-one (proxy + account + container + object servers + memcached) with
# tempauth and the S3 API (s3api), from Debian's packages, on 127.0.0.1 with free ports, in a private
# work directory. For couchtrove's tests, benchmarks and local development; never for production.
#
#   swift-aio.sh start DIR [--max-file-size BYTES] [--owner-pid PID]
#       Creates DIR (must not exist or be empty), starts everything, waits until tempauth answers, then
#       prints shell assignments (also kept in DIR/env; JSON in DIR/swift.json):
#         ST_AUTH ST_USER ST_KEY                       Swift v1 auth (python-swiftclient's variables)
#         AWS_ENDPOINT_URL AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY   S3 via s3api
#       --max-file-size  Swift's [swift-constraints] max_file_size: larger single PUTs fail with 413
#                        (a small value proves that segmented uploads are used). Default 5 GiB + 2.
#       --owner-pid      a watchdog stops everything once that process has exited (tests pass their pid).
#       --proxy-ip IP    where the proxy (auth, Swift and S3 APIs) listens: 127.0.0.1 (default) or 0.0.0.0, for
#                        containers to reach it too (the docker test). The other servers stay on 127.0.0.1.
#   swift-aio.sh stop DIR [--keep]      stops every process started for DIR, removes DIR unless --keep
#   swift-aio.sh kill DIR SERVICE       SIGKILL one service (proxy|account|container|object|memcached)
#   swift-aio.sh start-service DIR SERVICE   start one stopped service again, same port
#   swift-aio.sh restart DIR SERVICE    kill + start-service
#
# Needs: swift swift-proxy swift-account swift-container swift-object memcached (scripts/install-test-deps.sh).
# Pitfalls handled (see docs/storage.md): swift.conf path, user = root, workers = 0, no swift-init,
# console logging, memcached without UDP, ports baked into the rings.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
HELPER="$HERE/swift_aio.py"
SERVICES=(memcached account container object proxy)

die() { echo "swift-aio: $*" >&2; exit 1; }

need() {
  local missing=()
  for b in /usr/bin/swift-proxy-server /usr/bin/swift-account-server /usr/bin/swift-container-server /usr/bin/swift-object-server /usr/bin/memcached "$PY"; do
    [ -x "$b" ] || missing+=("$b")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: run scripts/install-test-deps.sh"
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

start_service() {
  local dir="$1" svc="$2"
  # shellcheck disable=SC1091
  . "$dir/ports"
  local pidfile="$dir/run/$svc.pid"
  if [ -f "$pidfile" ] && pid_alive "$(cat "$pidfile")"; then die "$svc already running"; fi
  case "$svc" in
    memcached)
      /usr/bin/memcached -u root -l 127.0.0.1 -p "$MEMCACHED_PORT" -U 0 -m 64 -c 256 \
        </dev/null >>"$dir/log/memcached.log" 2>&1 &
      ;;
    account|container|object|proxy)
      COUCHTROVE_SWIFT_CONF="$dir/etc/swift.conf" "$PY" "$HELPER" serve "$svc-server" "$dir/etc/$svc-server.conf" \
        </dev/null >>"$dir/log/$svc.log" 2>&1 &
      ;;
    *) die "unknown service $svc" ;;
  esac
  echo $! >"$pidfile"
}

wait_port() {
  local port="$1" svc="$2" dir="$3" i
  # Up to 60 s: on a loaded machine a Python server takes more than 10 s to import itself (it gives up at once if it died).
  for i in $(seq 1 1200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    pid_alive "$(cat "$dir/run/$svc.pid")" || return 1
    sleep 0.05
  done
  return 1
}

kill_service() {
  local dir="$1" svc="$2" sig="${3:-KILL}" pid
  [ -f "$dir/run/$svc.pid" ] || return 0
  pid="$(cat "$dir/run/$svc.pid")"
  if pid_alive "$pid"; then
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do pid_alive "$pid" || break; sleep 0.05; done
    pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/run/$svc.pid"
}

write_configs() {
  local dir="$1" max_file_size="$2"
  # shellcheck disable=SC1091
  . "$dir/ports"
  local hash; hash="$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  cat >"$dir/etc/swift.conf" <<EOF
[swift-hash]
swift_hash_path_suffix = couchtrove-$hash
swift_hash_path_prefix = couchtrove

[storage-policy:0]
name = Policy-0
default = yes

[swift-constraints]
max_file_size = $max_file_size
EOF
  local common="user = root
swift_dir = $dir/etc
devices = $dir/srv
mount_check = false
workers = 0
log_level = INFO"
  local svc port
  for svc in account container object; do
    case $svc in account) port=$ACCOUNT_PORT ;; container) port=$CONTAINER_PORT ;; object) port=$OBJECT_PORT ;; esac
    cat >"$dir/etc/$svc-server.conf" <<EOF
[DEFAULT]
$common
bind_ip = 127.0.0.1
bind_port = $port

[pipeline:main]
pipeline = healthcheck $svc-server

[app:$svc-server]
use = egg:swift#$svc

[filter:healthcheck]
use = egg:swift#healthcheck
EOF
  done
  cat >>"$dir/etc/container-server.conf" <<EOF

[container-sharder]
[container-updater]
[container-auditor]
[container-replicator]
EOF
  cat >"$dir/etc/proxy-server.conf" <<EOF
[DEFAULT]
$common
bind_port = $PROXY_PORT
bind_ip = $PROXY_IP

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl s3api tempauth copy slo dlo versioned_writes symlink proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
# Fail fast when a backend server is gone (the fault tests kill servers).
conn_timeout = 1
node_timeout = 30
# One node per ring here: after 10 errors Swift stops using a node for 60 s (error limiting), so an object
# server killed for a second under load would keep answering 503 for a minute after it is back. A real
# cluster routes around such a node to the other replicas; this one has none.
error_suppression_interval = 2

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
token_life = 86400

[filter:s3api]
use = egg:swift#s3api
location = us-east-1

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$MEMCACHED_PORT

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:tempurl]
use = egg:swift#tempurl
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
[filter:symlink]
use = egg:swift#symlink
EOF
}

cmd_start() {
  local dir="" max_file_size=5368709122 owner=""
  PROXY_IP=127.0.0.1
  while [ $# -gt 0 ]; do
    case "$1" in
      --max-file-size) max_file_size="$2"; shift 2 ;;
      --proxy-ip) PROXY_IP="$2"; shift 2 ;;
      --owner-pid) owner="$2"; shift 2 ;;
      -*) die "unknown option $1" ;;
      *) [ -z "$dir" ] || die "one directory only"; dir="$1"; shift ;;
    esac
  done
  [ -n "$dir" ] || die "usage: swift-aio.sh start DIR [--max-file-size BYTES] [--owner-pid PID] [--proxy-ip IP]"
  # Either way this host reaches the proxy on 127.0.0.1, the address of every URL below.
  case "$PROXY_IP" in 127.0.0.1|0.0.0.0) ;; *) die "--proxy-ip: 127.0.0.1 or 0.0.0.0, got $PROXY_IP" ;; esac
  need
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  [ -z "$(ls -A "$dir")" ] || die "$dir is not empty"
  mkdir -p "$dir/etc" "$dir/srv/d1" "$dir/run" "$dir/log"

  # Free ports are chosen now; if another process grabs one before a server binds it, start again
  # with new ports (they are baked into the rings, which are rebuilt).
  local attempt ok=""
  for attempt in 1 2 3 4 5; do
    local ports; mapfile -t ports < <("$PY" "$HELPER" ports 5)
    cat >"$dir/ports" <<EOF
PROXY_PORT=${ports[0]}
ACCOUNT_PORT=${ports[1]}
CONTAINER_PORT=${ports[2]}
OBJECT_PORT=${ports[3]}
MEMCACHED_PORT=${ports[4]}
EOF
    # shellcheck disable=SC1091
    . "$dir/ports"
    write_configs "$dir" "$max_file_size"
    "$PY" "$HELPER" rings "$dir/etc" "$ACCOUNT_PORT" "$CONTAINER_PORT" "$OBJECT_PORT"
    local svc
    for svc in "${SERVICES[@]}"; do start_service "$dir" "$svc"; done
    ok=1
    for svc in "${SERVICES[@]}"; do
      local port
      case $svc in memcached) port=$MEMCACHED_PORT ;; account) port=$ACCOUNT_PORT ;; container) port=$CONTAINER_PORT ;;
        object) port=$OBJECT_PORT ;; proxy) port=$PROXY_PORT ;; esac
      if ! wait_port "$port" "$svc" "$dir"; then ok=""; echo "swift-aio: $svc did not start on port $port (attempt $attempt)" >&2; break; fi
    done
    if [ -n "$ok" ]; then
      if "$PY" "$HELPER" wait 30 "http://127.0.0.1:$ACCOUNT_PORT/healthcheck" "http://127.0.0.1:$CONTAINER_PORT/healthcheck" \
          "http://127.0.0.1:$OBJECT_PORT/healthcheck" "http://127.0.0.1:$PROXY_PORT/healthcheck" >&2 \
        && "$PY" "$HELPER" auth "http://127.0.0.1:$PROXY_PORT/auth/v1.0" test:tester testing >/dev/null; then
        break
      fi
      ok=""
    fi
    for svc in "${SERVICES[@]}"; do kill_service "$dir" "$svc"; done
    tail -n 5 "$dir"/log/*.log >&2 || true
    rm -rf "$dir/srv/d1" && mkdir -p "$dir/srv/d1"
  done
  [ -n "$ok" ] || { cmd_stop "$dir" --keep; die "could not start Swift; logs in $dir/log"; }

  if [ -n "$owner" ]; then
    # Watchdog in its own session: stops everything when the owner process is gone, even after SIGKILL.
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && [ -d "$2/run" ]; do sleep 1; done; exec "$3" stop "$2" --from-watchdog' \
      watchdog "$owner" "$dir" "$HERE/swift-aio.sh" </dev/null >>"$dir/log/watchdog.log" 2>&1 &
    echo $! >"$dir/run/watchdog.pid"
  fi

  cat >"$dir/env" <<EOF
ST_AUTH=http://127.0.0.1:$PROXY_PORT/auth/v1.0
ST_USER=test:tester
ST_KEY=testing
AWS_ENDPOINT_URL=http://127.0.0.1:$PROXY_PORT
AWS_REGION=us-east-1
AWS_ACCESS_KEY_ID=test:tester
AWS_SECRET_ACCESS_KEY=testing
COUCHTROVE_S3_FORCE_PATH_STYLE=true
EOF
  cat >"$dir/swift.json" <<EOF
{"dir":"$dir","authUrl":"http://127.0.0.1:$PROXY_PORT/auth/v1.0","user":"test:tester","key":"testing",
 "s3Endpoint":"http://127.0.0.1:$PROXY_PORT","region":"us-east-1","accessKeyId":"test:tester","secretAccessKey":"testing",
 "ports":{"proxy":$PROXY_PORT,"account":$ACCOUNT_PORT,"container":$CONTAINER_PORT,"object":$OBJECT_PORT,"memcached":$MEMCACHED_PORT},
 "maxFileSize":$max_file_size}
EOF
  cat "$dir/env"
}

cmd_stop() {
  local dir="${1:-}" keep="" from_watchdog=""
  [ -n "$dir" ] || die "usage: swift-aio.sh stop DIR [--keep]"
  shift
  for a in "$@"; do case "$a" in --keep) keep=1 ;; --from-watchdog) from_watchdog=1 ;; *) die "unknown option $a" ;; esac; done
  [ -d "$dir/run" ] || { [ -n "$from_watchdog" ] && exit 0; die "$dir is not a swift-aio directory"; }
  # TERM everything at once, give them a second, then KILL what is left (test data needs no clean shutdown).
  local svc pids=()
  for svc in proxy object container account memcached; do
    if [ -f "$dir/run/$svc.pid" ]; then pids+=("$(cat "$dir/run/$svc.pid")"); fi
  done
  if [ -z "$from_watchdog" ] && [ -f "$dir/run/watchdog.pid" ]; then pids+=("$(cat "$dir/run/watchdog.pid")"); fi
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 20); do
      local alive=""
      for p in "${pids[@]}"; do pid_alive "$p" && alive=1; done
      [ -n "$alive" ] || break
      sleep 0.05
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
  rm -f "$dir"/run/*.pid
  if [ -z "$keep" ]; then rm -rf "$dir"; fi
}

main() {
  local cmd="${1:-}"
  [ $# -gt 0 ] && shift
  case "$cmd" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    kill) [ $# -eq 2 ] || die "usage: swift-aio.sh kill DIR SERVICE"; kill_service "$1" "$2" KILL ;;
    start-service)
      [ $# -eq 2 ] || die "usage: swift-aio.sh start-service DIR SERVICE"
      start_service "$1" "$2"
      # shellcheck disable=SC1091
      . "$1/ports"
      local port; port_var="$(echo "$2" | tr '[:lower:]' '[:upper:]')_PORT"; port="${!port_var}"
      wait_port "$port" "$2" "$1" || die "$2 did not start again"
      ;;
    restart) [ $# -eq 2 ] || die "usage: swift-aio.sh restart DIR SERVICE"; kill_service "$1" "$2" KILL; main start-service "$1" "$2" ;;
    *) die "usage: swift-aio.sh start|stop|kill|start-service|restart DIR ..." ;;
  esac
}

main "$@"
