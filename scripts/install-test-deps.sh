#!/usr/bin/env bash
# Installs the Debian packages couchtrove's tests and benchmarks need, when missing: a real OpenStack
# Swift all-in-one (scripts/swift/swift-aio.sh) with memcached for tempauth, PostgreSQL for the state
# store, the real Trove clients (python3-troveclient, python3-openstackclient), python-swiftclient,
# zstd, openssl and GNU time for the benchmarks' baselines, Docker 20.10 (docker.io: the tests start
# their own daemons, scripts/docker/test-dockerd.sh) and debootstrap (the guest image's base, where no
# registry is reachable: scripts/docker/base-image.sh), zsh and fish (the completion scripts are run) and
# chromium (the web console's browser test, test/console). Idempotent; needs root (CI runs as root).
set -euo pipefail

PACKAGES=(chromium swift swift-proxy swift-account swift-container swift-object python3-swiftclient memcached zstd postgresql python3-troveclient python3-openstackclient openssl time docker.io debootstrap iproute2 curl zsh fish)

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
