#!/usr/bin/env bash
# Stops the PostgreSQL started by scripts/postgres/start.sh DIR and removes DIR.
# Usage: scripts/postgres/stop.sh DIR [--keep]
set -uo pipefail
dir=${1:?usage: stop.sh DIR [--keep]}
if [[ -z "${PG_BIN:-}" ]]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
fi
run=()
[[ $(id -u) -eq 0 ]] && run=(runuser -u postgres --)
if [[ -f "$dir/data/postmaster.pid" ]]; then
  "${run[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || {
    pid=$(head -1 "$dir/data/postmaster.pid" 2>/dev/null)
    [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null
  }
fi
[[ "${2:-}" == "--keep" ]] || rm -rf "$dir"
