"""Streaming with real models on real video made from real photographs.

- BlazeFace (LiteRT) finds faces exactly in the frames that hold one, for two sources
  at once, each source's results in order;
- the PP-OCRv4 text detector (onnxruntime, dynamic input size) finds text only in the
  frames of a text page, with sources of two different resolutions;
- a deliberately slow sink does not slow capture: drops are counted, queues stay bounded;
- `edgesdk run` as a subprocess: SIGTERM / Ctrl-C end it cleanly with its sinks closed;
  errors come out as one line and an exit code.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest

from edgesdk.streaming import Pipeline, run
from edgesdk.streaming.sources import VideoFileSource
from streamdata import make_video

ROOT = Path(__file__).resolve().parent.parent
# a second video that starts without a face, so results of two sources cannot be confused
OTHER_PATTERN = (("horse", 5), ("camera", 5), ("page", 5), ("astronaut", 5), ("coffee", 5))


@pytest.fixture(scope="session")
def stream_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stream")


@pytest.fixture(scope="session")
def face_video(stream_dir):
    return make_video(stream_dir / "faces.mp4")


@pytest.fixture(scope="session")
def other_video(stream_dir):
    return make_video(stream_dir / "other.mp4", OTHER_PATTERN, size=(320, 240))


@pytest.fixture(scope="session")
def face_bundle(stream_dir, blazeface_model) -> Path:
    from edgesdk.presets import make_bundle
    return make_bundle(blazeface_model, stream_dir / "blazeface").path


@pytest.fixture(scope="session")
def text_bundle(stream_dir, det_model) -> Path:
    from edgesdk.presets import make_bundle
    # frames here are small: keep them at their size (max side 320) rather than enlarging to 736
    return make_bundle(det_model, stream_dir / "ppocr_det", limit_side_len=320, limit_type="max").path


def _collect():
    got: dict[str, list] = {}
    lock = threading.Lock()

    def on_result(frame, result):
        with lock:
            got.setdefault(frame.source_id, []).append(result)
    return got, on_result


@pytest.mark.parametrize("batching,kw", [("none", {}), ("adaptive", {"slo_ms": 200, "batch": 8})])
def test_faces_found_exactly_in_the_frames_with_a_face(face_bundle, face_video, other_video, batching, kw):
    got, on_result = _collect()
    report = run(face_bundle, [f"a={face_video.path}", f"b={other_video.path}"], batching=batching,
                 on_result=on_result, **kw)
    for sid, video in (("a", face_video), ("b", other_video)):
        results = got[sid]
        assert [r.frame_index for r in results] == list(range(len(video)))  # all of them, in order
        found = [len(r) > 0 for r in results]
        assert found == video.has_face, f"{sid}: wrong frames {[i for i, (f, h) in enumerate(zip(found, video.has_face)) if f != h]}"
        for r, face, label in zip(results, video.has_face, video.labels):
            if face:
                assert len(r) == 1 and r.labels == ["face"]
                if label == "astronaut":  # a frontal face filling a good part of the frame
                    assert r.scores[0] > 0.8
                x1, y1, x2, y2 = r.boxes[0]
                h, w = video.size[1], video.size[0]
                assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h  # in original-frame pixels
                assert r.keypoints is not None and r.keypoints.shape == (1, 6, 2)
    assert report.stats["dropped"] == 0 and report.stats["errors"] == {}


def test_text_found_only_in_text_frames_across_two_resolutions(text_bundle, face_video, other_video):
    got, on_result = _collect()
    report = run(text_bundle, [f"sq={face_video.path}", f"wide={other_video.path}"], batching="fixed", batch=4,
                 max_wait_ms=20, on_result=on_result)
    for sid, video in (("sq", face_video), ("wide", other_video)):
        results = got[sid]
        assert [r.frame_index for r in results] == list(range(len(video)))
        text = [label == "page" for label in video.labels]
        found = [len(r) >= 3 for r in results]  # a page of text: several lines
        assert found == text
        assert all(len(r) == 0 for r, t in zip(results, text) if not t)
        assert all(r.polygons is not None and len(r.polygons) == len(r) for r in results if len(r))
    assert report.stats["frames_out"] == len(face_video) + len(other_video)


def test_slow_sink_never_slows_capture(face_bundle, face_video):
    """A sink that needs 80 ms per result behind a 3-result queue, fed by a live source at
    60 fps: capture reads every frame at its own pace (it has finished long before the sink
    could have written them all), the sink's drops are counted, nothing grows unbounded."""
    written = []

    def slow_sink(frame, result):
        time.sleep(0.08)
        written.append(result.frame_index)

    src = VideoFileSource(face_video.path, "cam", realtime=True, fps=60)
    pipe = Pipeline(face_bundle, [src], [slow_sink], realtime=True, sink_queue=3, buffer_size=4)
    pipe.start()
    reader = pipe.readers[0]
    reader.join(30)
    written_when_capture_ended = len(written)
    assert pipe.wait(30)
    report = pipe.report()
    n = len(face_video)
    assert reader.frames == n and reader.ended_reason == "eof"
    # had the sink stalled capture, it would have written nearly every frame by then
    assert written_when_capture_ended < n // 2
    sink = next(iter(report.sinks.values()))
    assert sink["dropped"] > 0 and sink["written"] == len(written)
    assert sink["written"] + sink["dropped"] == report.stats["frames_out"]
    assert sink["high_water"] <= 3
    assert report.stats["drops"].get(f"sink_full:{sink_name(report)}", 0) > 0
    assert report.buffer_high_water["cam"] <= report.buffer_capacity["cam"] == 4


def sink_name(report) -> str:
    return next(iter(report.sinks))


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "edgesdk", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"edgesdk run ended early: {proc.communicate()}")
        time.sleep(0.1)
    raise AssertionError(f"no {n} results in {path} within {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_signal_stops_cleanly_with_sinks_closed(tmp_path, face_bundle, face_video, sig):
    out, video, rep = tmp_path / "out.jsonl", tmp_path / "out.mp4", tmp_path / "report.json"
    proc = _cli("run", str(face_bundle), "--source", f"cam={face_video.path}", "--loop", "--realtime",
                "--batching", "adaptive", "--slo-ms", "100", "--sink", str(out), "--sink", str(video),
                "--report", str(rep), "--no-status")
    try:
        _wait_lines(out, 15, proc)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line complete JSON
    report = json.loads(rep.read_text())
    assert report["stop_reason"] == sig.name
    assert len(records) == report["stats"]["frames_out"]  # in-flight results were delivered
    assert [r["frame_index"] for r in records] == sorted(r["frame_index"] for r in records)
    assert any(r["detections"] for r in records)
    cap = cv2.VideoCapture(str(video))  # the annotated video was finished (closed), not left partial
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(records)
    cap.release()
    assert "Streaming run" in stdout


def test_cli_errors_are_one_line_with_exit_codes(tmp_path, face_bundle, face_video):
    proc = _cli("run", str(face_bundle), "--source", "rtsp://127.0.0.1:9/none")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 9 and "error: cannot open stream 'rtsp://127.0.0.1:9/none'" in stderr
    assert "Traceback" not in stderr
    proc = _cli("run", str(face_bundle), "--source", str(face_video.path), "--batching", "adaptive")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--slo-ms" in stderr and "Traceback" not in stderr
    proc = _cli("run", str(face_bundle), "--source", str(face_video.path), "--sink", "out.xyz")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 10 and "unknown sink 'out.xyz'" in stderr


def test_http_mjpeg_stream_source(face_bundle, face_video):
    """An http:// camera stream: the test video as multipart JPEG (what IP cameras serve),
    from a local HTTP server, through the pipeline with the real model."""
    import http.server

    cap = cv2.VideoCapture(str(face_video.path))
    jpegs = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        jpegs.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    cap.release()

    class MJPEG(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for jpg in jpegs:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                     % len(jpg) + jpg + b"\r\n")
                    time.sleep(0.02)  # 50 fps, like a camera
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MJPEG)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        got, on_result = _collect()
        report = run(face_bundle, [f"web=http://127.0.0.1:{server.server_address[1]}/video.mjpg"],
                     on_result=on_result, max_frames=len(face_video))
    finally:
        server.shutdown()
    results = got["web"]
    assert [r.frame_index for r in results] == list(range(len(face_video)))
    assert [len(r) > 0 for r in results] == face_video.has_face
    assert report.stats["frames_out"] == len(face_video) and report.stop_reason == "sources ended"
