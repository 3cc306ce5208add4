#!/usr/bin/env bash
# Makes the root file system that the service test boots with systemd-nspawn: the local base
# of docker/make-local-base.sh (Debian bookworm minbase, Node.js 24 and npm, no compiler) plus
# systemd as init, nftables, iproute2 and procps. Nothing else: no python3, make or C compiler.
#
# Usage: docker/make-systemd-rootfs.sh          prints the directory (a root file system)
# Env:   NODE_MAJOR (24), FORCE=1 to rebuild, FAKE_TCP_CACHE (/var/cache/fake-tcp).
#
# Cached on the machine, not in the checkout (CI runs on fresh clones; a cold build takes
# minutes: debootstrap, then apt), with a stamp naming its inputs, so a change to this script
# or to make-local-base.sh rebuilds it. The service test never writes into it: it boots
# overlays of it. Needs root and systemd-nspawn.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
node_major=${NODE_MAJOR:-24}
packages="systemd systemd-sysv nftables iproute2 procps"
dir="${FAKE_TCP_CACHE:-/var/cache/fake-tcp}/systemd-rootfs-bookworm-node$node_major"
log() { echo "make-systemd-rootfs: $*" >&2; }

# One build at a time on a machine (tests of several checkouts may start together).
mkdir -p "$(dirname "$dir")"
exec 8>"$dir.lock"
flock -w 1800 8

stamp="$(cat "$here/make-systemd-rootfs.sh" "$here/make-local-base.sh" | sha256sum | cut -c1-16) $packages"
if [ "${FORCE:-0}" != 1 ] && [ -d "$dir/rootfs" ] && [ "$(cat "$dir/stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$dir/rootfs"
  exit 0
fi

tarball=$(ROOTFS_ONLY=1 NODE_MAJOR="$node_major" bash "$here/make-local-base.sh")
rm -rf "$dir"
mkdir -p "$dir/rootfs.tmp"
tar -xf "$tarball" -C "$dir/rootfs.tmp"
log "installing $packages (Debian, in the new root)"
# nspawn shares the host's network here (no --private-network): apt reaches Debian's mirror.
if ! systemd-nspawn --quiet --register=no --keep-unit --resolv-conf=copy-host --pipe -D "$dir/rootfs.tmp" \
  sh -c "export DEBIAN_FRONTEND=noninteractive &&
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $packages >/dev/null &&
    apt-get clean && rm -rf /var/lib/apt/lists/*" >"$dir/install.log" 2>&1 </dev/null; then
  tail -20 "$dir/install.log" >&2
  exit 1
fi
# No compiler, ever: the install test depends on it.
for tool in cc gcc g++ make python3; do
  if systemd-nspawn --quiet --register=no --keep-unit --pipe -D "$dir/rootfs.tmp" sh -c "command -v $tool" \
    >/dev/null 2>&1 </dev/null; then
    log "$tool is present in the new root: refusing"
    exit 1
  fi
done
# A machine id is made at each boot (the overlays start without one, as a fresh image does).
: >"$dir/rootfs.tmp/etc/machine-id"
mv "$dir/rootfs.tmp" "$dir/rootfs"
echo "$stamp" >"$dir/stamp"
echo "$dir/rootfs"
