#!/usr/bin/env bash
# Installs the Debian packages couchtrove's storage tests and benchmarks need, when missing:
# a real OpenStack Swift all-in-one (scripts/swift/swift-aio.sh), memcached for tempauth,
# python-swiftclient and zstd for the benchmark's baseline. Idempotent; needs root (CI runs as root).
set -euo pipefail

PACKAGES=(swift swift-proxy swift-account swift-container swift-object python3-swiftclient memcached zstd)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then missing+=("$p"); fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-test-deps: all present (${PACKAGES[*]})"
  exit 0
fi
echo "install-test-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get -o DPkg::Lock::Timeout=600 update
# Debian's maintainer scripts do not start services where policy-rc.d forbids it (containers, CI);
# our scripts start their own private servers anyway.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}"
