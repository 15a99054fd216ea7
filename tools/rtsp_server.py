#!/usr/bin/python3
"""Serve an H.264 .mp4 over RTSP on one address (a real RTSP server for tests and demos).

Needs GStreamer's RTSP server and its Python bindings from the system packages
(python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good/-bad/-ugly;
tools/install_system_deps.sh installs them) and therefore runs with the system Python:

    /usr/bin/python3 tools/rtsp_server.py clip_h264.mp4 --port 8554 --path /live
    # -> rtsp://127.0.0.1:8554/live ; prints "READY <url>" once it listens

Each client gets its own session that plays the file from the start at its native pace
(the stream ends with the file; clients that reconnect start again). The file must be
H.264 in mp4 (re-encode: ffmpeg -i in.mp4 -c:v libx264 -g 15 -bf 0 -pix_fmt yuv420p out.mp4).
SIGTERM/SIGINT stop it.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", help="H.264 .mp4 file to serve")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--path", default="/live", help="mount point (default /live)")
    args = ap.parse_args(argv)

    if not os.path.isfile(args.file):
        print(f"error: {args.file} does not exist", file=sys.stderr)
        return 2
    try:
        import gi
        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as exc:
        print(f"error: GStreamer RTSP server bindings are missing ({exc}); install python3-gi "
              "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad "
              "gstreamer1.0-plugins-ugly (tools/install_system_deps.sh) and run with /usr/bin/python3",
              file=sys.stderr)
        return 3

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = os.path.abspath(args.file).replace('"', '\\"')
    factory.set_launch(f'( filesrc location="{location}" ! qtdemux ! h264parse ! '
                       "rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(False)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"error: cannot listen on {args.host}:{args.port} (port in use?)", file=sys.stderr)
        return 4
    loop = GLib.MainLoop()

    def stop(*_: object) -> bool:
        loop.quit()
        return False

    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, stop)
    print(f"READY rtsp://{args.host}:{server.get_bound_port()}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
