#!/usr/bin/env bash
# Says what to install when the arm64 emulation tools are missing; exit 3 if anything is.
set -uo pipefail
missing=()
command -v debootstrap >/dev/null 2>&1 || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
command -v qemu-aarch64-static >/dev/null 2>&1 || missing+=(qemu-user-static)
command -v update-binfmts >/dev/null 2>&1 || [[ -x /usr/sbin/update-binfmts ]] || missing+=(binfmt-support)
if (( ${#missing[@]} )); then
    echo "arm64-check: missing ${missing[*]}. Install them with:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y qemu-user-static binfmt-support debootstrap" >&2
    exit 3
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    echo "arm64-check: binfmt_misc has no qemu-aarch64 entry, so arm64 binaries cannot run here. Run:" >&2
    echo "    sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; sudo update-binfmts --enable qemu-aarch64" >&2
    exit 3
fi
if [[ $(id -u) != 0 ]]; then
    echo "arm64-check: debootstrap and chroot need root; run it as root (or with sudo)." >&2
    exit 3
fi
