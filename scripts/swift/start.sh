#!/usr/bin/env bash
# Starts a Swift all-in-one for tests/benchmarks: scripts/swift/start.sh DIR [--max-file-size BYTES] [--owner-pid PID]
# Prints ST_AUTH/ST_USER/ST_KEY and AWS_* assignments (also in DIR/env). See swift-aio.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/swift-aio.sh" start "$@"
