#!/usr/bin/env bash
# Stops the Swift all-in-one started in DIR and removes DIR: scripts/swift/stop.sh DIR [--keep]
exec "$(dirname "${BASH_SOURCE[0]}")/swift-aio.sh" stop "$@"
