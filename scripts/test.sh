#!/usr/bin/env bash
# The whole test suite, from a fresh machine: Debian packages for the real servers the tests start
# (Swift, PostgreSQL, the Trove clients), npm packages, lint, type check, build, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
npm ci --no-audit --no-fund
npm run lint
npm run typecheck
npm test
