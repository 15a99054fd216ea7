"""Sources: telling specs apart, reading real files/folders, clear errors, reconnect with backoff."""
from __future__ import annotations

import socket
import threading

import cv2
import numpy as np
import pytest

from edgesdk.errors import SourceError
from edgesdk.streaming.buffer import FrameBuffer
from edgesdk.streaming.sources import (Backoff, CameraSource, ImageFolderSource, ProducerSource, SourceReader,
                                       StreamSource, VideoFileSource, make_source, split_name)
from edgesdk.streaming.sources.base import Source
from edgesdk.streaming.stats import PipelineStats
from streamdata import make_video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("video") / "clip.mp4")


def _read_all(src: Source, limit: int = 1000) -> list[np.ndarray]:
    src.open()
    out = []
    while len(out) < limit:
        img = src.read()
        if img is None:
            break
        out.append(img)
    src.close()
    return out


def test_specs_pick_the_right_source(video, tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4, 3), np.uint8))
    assert isinstance(make_source(0), CameraSource)
    assert isinstance(make_source("2"), CameraSource) and make_source("2").source_id == "cam2"
    assert isinstance(make_source("/dev/video0"), CameraSource)
    s = make_source("door=rtsp://10.0.0.5:554/live?x=1")
    assert isinstance(s, StreamSource) and s.source_id == "door" and s.spec == "rtsp://10.0.0.5:554/live?x=1"
    assert isinstance(make_source("http://cam.local/mjpeg"), StreamSource)
    v = make_source(str(video.path))
    assert isinstance(v, VideoFileSource) and v.source_id == "clip" and not v.live
    assert make_source(str(video.path), realtime=True).live  # a file played in real time behaves like a camera
    assert isinstance(make_source(str(tmp_path)), ImageFolderSource)
    assert isinstance(make_source(str(tmp_path / "*.png")), ImageFolderSource)
    assert isinstance(make_source(str(tmp_path / "a.png")), ImageFolderSource)
    assert isinstance(make_source(lambda: None), ProducerSource)
    assert isinstance(make_source([np.zeros((2, 2, 3), np.uint8)]), ProducerSource)
    assert split_name("rtsp://u:p=x@h/live") == (None, "rtsp://u:p=x@h/live")


def test_unknown_specs_raise_source_error_naming_them(tmp_path):
    with pytest.raises(SourceError, match="nothere.mp4"):
        make_source(str(tmp_path / "nothere.mp4"))
    with pytest.raises(SourceError, match="unknown scheme 'ftp'"):
        make_source("ftp://host/file")
    with pytest.raises(SourceError, match="cannot make a source from float"):
        make_source(1.5)


def test_video_file_reads_every_frame_and_rewinds(video):
    src = VideoFileSource(video.path, "clip")
    frames = _read_all(src)
    assert len(frames) == len(video)
    assert frames[0].shape == (256, 256, 3) and frames[0].dtype == np.uint8
    assert src.fps == pytest.approx(video.fps)
    src.open()
    for _ in range(3):
        src.read()
    assert src.rewind()
    first = src.read()
    src.close()
    assert np.abs(first.astype(int) - frames[0].astype(int)).mean() < 1.0


def test_unopenable_sources_name_themselves(tmp_path):
    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(SourceError, match="not_a_video.mp4"):
        VideoFileSource(bad, "bad").open()
    with pytest.raises(SourceError, match=r"camera '/dev/video97'.*connected"):
        CameraSource("/dev/video97", "cam").open()
    with pytest.raises(SourceError, match="no images"):
        ImageFolderSource(str(tmp_path / "*.jpg"), "imgs").open()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(SourceError, match=f"rtsp://127.0.0.1:{port}/live.*server running"):
        StreamSource(f"rtsp://127.0.0.1:{port}/live", "door", open_timeout_ms=2000).open()


def test_image_folder_in_name_order_skipping_unreadable(tmp_path, photos):
    names = ["b.png", "a.jpg", "c.png"]
    for i, name in enumerate(names):
        cv2.imwrite(str(tmp_path / name), cv2.resize(photos["astronaut"], (32 + i, 32)))
    (tmp_path / "broken.png").write_bytes(b"nope")
    (tmp_path / "notes.txt").write_text("not an image")
    frames = _read_all(ImageFolderSource(str(tmp_path), "f"))
    assert [f.shape[1] for f in frames] == [33, 32, 34]  # a.jpg, b.png, c.png; broken skipped
    frames = _read_all(ImageFolderSource(str(tmp_path / "*.png"), "g"))
    assert [f.shape[1] for f in frames] == [32, 34]


def test_producer_validates_what_it_gets():
    src = ProducerSource(iter([np.zeros((2, 2, 3), np.float32)]), "p")
    src.open()
    with pytest.raises(SourceError, match="uint8"):
        src.read()


class FlakyStream(Source):
    """A live source that loses its connection after a few frames and can be reopened only
    on some attempts: exercises the reader's reconnect and backoff without a network."""

    kind = "flaky"
    reconnects = True

    def __init__(self, fail_opens: int, drop_every: int = 5, total: int = 20) -> None:
        super().__init__("flaky", "flaky://", live=True)
        self.fail_opens = fail_opens
        self.drop_every = drop_every
        self.total = total
        self.opens = 0
        self.served = 0
        self._since_open = 0

    def open(self) -> None:
        self.opens += 1
        if 1 < self.opens <= 1 + self.fail_opens:
            raise SourceError("flaky: connection refused")
        self._since_open = 0

    def read(self):
        if self.served >= self.total:
            return None
        if self._since_open >= self.drop_every:
            return None  # connection lost
        self._since_open += 1
        self.served += 1
        return np.full((2, 2, 3), self.served, np.uint8)


def _run_reader(src: Source, **kw) -> tuple[SourceReader, FrameBuffer, PipelineStats, list]:
    buf, stats, stop = FrameBuffer(), PipelineStats(), threading.Event()
    buf.add_source(src.source_id, 1000, drop_oldest=False)
    events: list = []
    r = SourceReader(src, buf, stats, stop, on_event=lambda k, m: events.append(k), **kw)
    r.start()
    r.join(10)
    assert not r.is_alive()
    return r, buf, stats, events


def test_reader_reconnects_with_backoff_and_keeps_numbering():
    src = FlakyStream(fail_opens=2, drop_every=5, total=12)
    src.open()
    r, buf, stats, events = _run_reader(src, backoff=Backoff(initial=0.01, maximum=0.02, attempts=10),
                                        max_frames=12)
    frames = buf.take(100, 0)
    assert [f.index for f in frames] == list(range(12))
    assert [int(f.image[0, 0, 0]) for f in frames] == list(range(1, 13))
    assert r.reconnects == 2 and stats.snapshot()["reconnects"] == 2
    assert events.count("disconnected") == 2 and events.count("reconnected") == 2
    assert src.opens == 1 + 2 + 2  # first open, two failed attempts, two successful reconnects
    assert r.error is None and r.ended_reason == "max_frames"


def test_reader_gives_up_after_the_backoff_attempts_with_a_source_error():
    src = FlakyStream(fail_opens=100, drop_every=3)
    src.open()
    r, buf, _, _ = _run_reader(src, backoff=Backoff(initial=0.01, maximum=0.01, attempts=3))
    assert len(buf.take(100, 0)) == 3
    assert isinstance(r.error, SourceError) and "3 reconnect attempts" in str(r.error)
    assert r.ended_reason == "lost"


def test_reader_loops_files_and_stops_at_max_frames(video):
    src = VideoFileSource(video.path, "clip")
    src.open()
    r, buf, _, _ = _run_reader(src, loop=True, max_frames=len(video) + 5)
    frames = buf.take(1000, 0)
    assert len(frames) == len(video) + 5 and r.ended_reason == "max_frames"


def test_reader_ends_at_eof_and_reports_a_failing_producer():
    calls = {"n": 0}

    def producer():
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("camera SDK crashed")
        return np.zeros((2, 2, 3), np.uint8)

    src = ProducerSource(producer, "sdk")
    src.open()
    r, buf, _, _ = _run_reader(src)
    assert len(buf.take(10, 0)) == 3
    assert isinstance(r.error, SourceError) and "camera SDK crashed" in str(r.error) and "sdk" in str(r.error)


@pytest.mark.parametrize("spec, relative", [
    ("0", False), ("/dev/video2", False), ("cam=rtsp://host/live", False), ("HTTP://host/mjpg", False),
    ("clip.mp4", True), ("door=clips/door.mp4", True), ("file://clips/a.mp4", True), ("frames/*.jpg", True),
    ("/data/clip.mp4", False), ("~/clip.mp4", False), ("missing/not-yet-there.mp4", True)])
def test_is_relative_file_reads_the_source_table_without_the_file(spec, relative):
    from edgesdk.streaming.sources import is_relative_file
    assert is_relative_file(spec) is relative
