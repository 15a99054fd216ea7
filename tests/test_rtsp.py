"""A real RTSP stream on 127.0.0.1 (GStreamer RTSP server, tools/rtsp_server.py, serving
an H.264 re-encode of the real test video): the server is killed mid-stream and started
again; the pipeline reconnects and goes on, still finding the faces."""
from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edgesdk.streaming import Pipeline
from edgesdk.streaming.sources import Backoff
from streamdata import ffmpeg, make_video, to_h264

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"


def _rtsp_server_missing() -> str:
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found (the GStreamer bindings live in the system Python)"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer"], capture_output=True)
    if probe.returncode != 0:
        return ("GStreamer RTSP server is not installed (python3-gi, gir1.2-gst-rtsp-server-1.0, "
                "gstreamer1.0-plugins-good/-bad/-ugly): run tools/install_system_deps.sh")
    if ffmpeg() is None:
        return "ffmpeg is not installed (needed to make the H.264 stream): run tools/install_system_deps.sh"
    return ""


pytestmark = pytest.mark.skipif(bool(_rtsp_server_missing()), reason=_rtsp_server_missing() or "ok")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RtspServer:
    def __init__(self, path: Path, port: int) -> None:
        self.path, self.port = path, port
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(ROOT / "tools" / "rtsp_server.py"), str(self.path),
                                      "--port", str(self.port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"RTSP server did not start: {line} {self.proc.stderr.read()}")
        return line.split(" ", 1)[1]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # no goodbye to the clients: the stream just breaks
            self.proc.wait(10)


@pytest.fixture(scope="module")
def h264_video(tmp_path_factory):
    d = tmp_path_factory.mktemp("rtsp")
    # 30 s at 15 fps: the stream must outlive the test on both sides of the restart
    info = make_video(d / "clip.mp4", fps=15, repeat=5)
    return to_h264(info.path, d / "clip_h264.mp4"), info


def test_pipeline_reconnects_after_the_server_restarts(h264_video, blazeface_model, tmp_path):
    from edgesdk.presets import make_bundle

    bundle = make_bundle(blazeface_model, tmp_path / "bf").path
    server = RtspServer(h264_video[0], _free_port())
    url = server.start()
    results: list[tuple[float, int, int]] = []
    lock = threading.Lock()

    def on_result(frame, result):
        with lock:
            results.append((time.time(), frame.index, len(result)))

    def count() -> int:
        with lock:
            return len(results)

    def wait_for(n: int, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while count() < n:
            assert time.time() < deadline, f"only {count()} results after {timeout} s"
            assert pipe.running, "pipeline ended"
            time.sleep(0.05)

    pipe = Pipeline(bundle, [f"door={url}"], on_result=on_result, batching="adaptive", slo_ms=200,
                    reconnect=Backoff(initial=0.2, maximum=1.0))
    try:
        pipe.start()
        wait_for(30)
        server.kill()
        killed_at = time.time()
        reader = pipe.readers[0]
        deadline = time.time() + 15
        while reader.reconnects < 1:  # the reader noticed and is trying again
            assert time.time() < deadline, "the lost stream was not noticed"
            time.sleep(0.05)
        time.sleep(1.0)  # a few failed attempts against a dead port (backoff)
        before_restart = count()
        server.start()
        wait_for(before_restart + 30)
    finally:
        pipe.stop("test over")
        pipe.wait(30)
        server.kill()
    report = pipe.report()
    after = [r for r in results if r[0] > killed_at]
    assert len(after) >= 30
    indices = [i for _, i, _ in results]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)  # numbering goes on
    assert report.stats["reconnects"] >= 1 and not report.source_errors
    assert any(n for _, _, n in after) and any(not n for _, _, n in after)  # faces and no faces, after too
