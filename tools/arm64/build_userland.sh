#!/usr/bin/env bash
# Build (once) a Debian bookworm arm64 userland that runs here through qemu-user-static + binfmt.
# Usage: tools/arm64/build_userland.sh ROOTFS_DIR
# Idempotent: a finished userland carries ROOTFS_DIR/.edgesdk-userland-ok and is reused.
set -euo pipefail
ROOTFS=${1:?usage: build_userland.sh ROOTFS_DIR}
SUITE=${ARM64_SUITE:-bookworm}
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/need_tools.sh"

if [[ -f "$ROOTFS/.edgesdk-userland-ok" ]]; then
    echo "arm64 userland: reusing $ROOTFS"
    exit 0
fi
# The host's own Debian mirror (the only one reachable in sandboxes); override with ARM64_MIRROR.
mirror=${ARM64_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
mirror=${mirror:-http://deb.debian.org/debian}
echo "arm64 userland: debootstrap $SUITE from $mirror into $ROOTFS (several minutes; nice -n 19)"
rm -rf "$ROOTFS.partial"
mkdir -p "$(dirname "$ROOTFS")"
# Built under .partial and renamed: an interrupted build never looks finished.
nice -n 19 debootstrap --arch=arm64 --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$ROOTFS.partial" "$mirror"
touch "$ROOTFS.partial/.edgesdk-userland-ok"
rm -rf "$ROOTFS"
mv "$ROOTFS.partial" "$ROOTFS"
echo "arm64 userland: ready at $ROOTFS"
