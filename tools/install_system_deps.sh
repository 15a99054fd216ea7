#!/usr/bin/env bash
# Installs the system packages the tests and demo need (ffmpeg, an MQTT broker, GStreamer's
# RTSP server for the loopback RTSP test, and the fleet engines: an OCI registry, Mender's
# artifact tool and client, htpasswd for the registry's basic-auth test). Skips what is already there;
# without root or apt it says what is missing and carries on (those tests skip).
set -u
need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v mender-artifact >/dev/null 2>&1 || need+=(mender-artifact)
command -v mender >/dev/null 2>&1 || need+=(mender-client)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
/usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer' >/dev/null 2>&1 \
  || need+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav)
# `make arm64-check` only (ARM64=1): qemu-user-static + binfmt run arm64 binaries, debootstrap builds the userland
if [ -n "${ARM64:-}" ]; then
  command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
  command -v update-binfmts >/dev/null 2>&1 || [ -x /usr/sbin/update-binfmts ] || need+=(binfmt-support)
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
fi
enable_binfmt() {
  # the VM may not mount binfmt_misc by itself; qemu-aarch64 must be registered for chroot to run arm64
  [ -n "${ARM64:-}" ] && [ "$(id -u)" = 0 ] || return 0
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 2>/dev/null || true
}
if [ ${#need[@]} -eq 0 ]; then
  enable_binfmt
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: missing system packages (${need[*]}); install them to run the streaming tests" >&2
  exit 0
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
enable_binfmt
