#!/usr/bin/env bash
# Starts a private PostgreSQL (Debian's `postgresql` package) for tests: initdb into DIR, a free port on
# 127.0.0.1 only, trust auth for the local test user, a database named couchtrove. Prints the URL
# (postgres://couchtrove@127.0.0.1:PORT/couchtrove) on stdout. Stop it with scripts/postgres/stop.sh DIR.
# Usage: scripts/postgres/start.sh DIR      (DIR must not exist or be empty)
# Needs: apt-get install postgresql (or PG_BIN=/path/to/bin). As root, the server runs as user postgres.
set -euo pipefail
dir=${1:?usage: start.sh DIR}
if [[ -z "${PG_BIN:-}" ]]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
fi
if [[ -z "${PG_BIN}" || ! -x "${PG_BIN}/initdb" ]]; then
  echo "start.sh: PostgreSQL not found: apt-get install postgresql (or set PG_BIN)" >&2
  exit 3
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
run=()
if [[ $(id -u) -eq 0 ]]; then
  # PostgreSQL refuses to run as root.
  chown postgres "$dir"
  chmod 700 "$dir"
  run=(runuser -u postgres --)
  if ! runuser -u postgres -- test -x "$dir"; then
    echo "start.sh: user postgres cannot reach $dir (a parent directory is private): use a directory directly under /tmp" >&2
    exit 1
  fi
fi
# A free loopback port: ask the kernel for one.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
  || node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
"${run[@]}" "$PG_BIN/initdb" -D "$dir/data" -U couchtrove --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }
echo "$port" >"$dir/port"
"${run[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=50" start >"$dir/pg_ctl.log" 2>&1 \
  || { cat "$dir/pg_ctl.log" "$dir/server.log" >&2; exit 1; }
"${run[@]}" "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U couchtrove couchtrove >&2
echo "postgres://couchtrove@127.0.0.1:$port/couchtrove"
