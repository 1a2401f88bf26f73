#!/usr/bin/env bash
# A minimal Debian 12 root (debootstrap --variant=minbase), made once into the cache
# ($TRAFFIC_CACHE/debian/bookworm-minbase) and never changed afterwards; prints its path.
# scripts/bundle.sh works out the Debian packages a bare box lacks against its package list,
# and the offline-install test copies it to install a bundle into, with the network off.
# Needs root (debootstrap) and, the first time, the Debian mirror of /etc/apt/sources.list.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${TRAFFIC_CACHE:-$ROOT/.cache}
DEST=$CACHE/debian/bookworm-minbase
say() { printf 'debian-root: %s\n' "$*" >&2; }
die() { printf 'debian-root: error: %s\n' "$*" >&2; exit 1; }
if [ ! -f "$DEST/.complete" ]; then
  [ "$(id -u)" -eq 0 ] || die "making a Debian root needs root (debootstrap); run this once as root"
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
      || die "could not install debootstrap with apt-get"
  fi
  # The mirror this machine's apt uses (deb822 or one-line sources), else Debian's own.
  mirror=$(grep -hsoE '^URIs: *[^ ]+/debian/?$' /etc/apt/sources.list.d/*.sources | head -1 | sed 's/^URIs: *//')
  [ -n "$mirror" ] || mirror=$(grep -hsoE '^deb +[^ ]+/debian/? +bookworm' /etc/apt/sources.list | head -1 | awk '{print $2}')
  mirror=${mirror:-http://deb.debian.org/debian}
  say "making a minimal Debian 12 root in $DEST from $mirror (once, a few minutes)"
  rm -rf "$DEST.part"
  mkdir -p "$(dirname "$DEST")"
  debootstrap --variant=minbase bookworm "$DEST.part" "$mirror" > "$CACHE/debian/debootstrap.log" 2>&1 \
    || die "debootstrap failed (log: $CACHE/debian/debootstrap.log)"
  rm -rf "$DEST.part"/var/cache/apt/archives/*.deb
  rm -rf "$DEST"
  mv "$DEST.part" "$DEST"
  touch "$DEST/.complete"
fi
echo "$DEST"
