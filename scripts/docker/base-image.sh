#!/usr/bin/env bash
# Builds (once) the guest image's base for tests, where no image registry is reachable: a Debian 12
# root filesystem from the Debian mirror apt uses (debootstrap --variant=minbase), with the runtime
# libraries an Apache CouchDB 3.x release needs (SpiderMonkey 102, ICU 72, OpenSSL 3) already in it,
# so that the image build itself needs no network. Prints the path of the cached rootfs tarball, which
# `docker import - couchtrove-base:bookworm` turns into an image. Cache: $COUCHTROVE_TEST_CACHE
# (default /var/cache/couchtrove-test), keyed by the mirror, the package list and the month, so reruns
# take it as it is (~90 s the first time). Needs root and debootstrap.
set -euo pipefail

PACKAGES="ca-certificates,libmozjs-102-0,libicu72,libssl3,libstdc++6,zlib1g,libtinfo6"
cache="${COUCHTROVE_TEST_CACHE:-/var/cache/couchtrove-test}"
# The mirror apt already uses (deb822 URIs: or a one-line deb entry).
mirror="$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
  | grep -m1 -E 'debian/?$|debian ' | sed -E 's/^URIs:[[:space:]]*//; s/^deb (\[[^]]*\] )?//; s/[[:space:]].*$//' || true)"
mirror="${mirror:-http://deb.debian.org/debian}"
key="$(printf '%s|%s|%s' "$mirror" "$PACKAGES" "$(date -u +%Y-%m)" | sha256sum | cut -c1-16)"
out="$cache/couchtrove-base-bookworm-$key.tar"
if [ -s "$out" ]; then echo "$out"; exit 0; fi
mkdir -p "$cache"
# Test files run in parallel: one builds, the others wait for it and take its result.
exec 9>"$cache/.lock"
flock 9
if [ -s "$out" ]; then echo "$out"; exit 0; fi
command -v debootstrap >/dev/null || { echo "base-image: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
root="$(mktemp -d "$cache/rootfs.XXXXXX")"
trap 'rm -rf "$root"' EXIT
echo "base-image: debootstrap bookworm from $mirror into $root" >&2
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$mirror" >&2
# Smaller and reproducible enough: no apt lists, caches or logs.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log
tar -C "$root" --numeric-owner -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "$out"
