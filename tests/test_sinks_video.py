"""Annotated video files (read back with cv2.VideoCapture) and the window sink."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgesdk.errors import SinkError
from edgesdk.results import Frame, Result
from edgesdk.sinks import make_sink
from edgesdk.sinks import window as window_mod
from edgesdk.sinks.video import VideoSink

W, H = 320, 240
BOX = (40, 60, 200, 180)  # x1, y1, x2, y2


@pytest.fixture(scope="module")
def image(photos):
    return cv2.resize(photos["astronaut"], (W, H), interpolation=cv2.INTER_AREA)


def det(i: int) -> Result:
    return Result(boxes=[BOX], scores=[0.9], class_ids=[0], labels=["face"], source_id="cam0", frame_index=i,
                  timestamp=100.0 + i / 10)


def frames(image, n: int, fps: float = 10.0, source: str = "cam0", meta=None):
    for i in range(n):
        yield Frame(source, i, 100.0 + i / fps, image, dict(meta or {}))


def read_video(path):
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cv2 cannot open {path}"
    fps = cap.get(cv2.CAP_PROP_FPS)
    imgs = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        imgs.append(img)
    cap.release()
    return imgs, fps


def edge_and_inside_diff(decoded: np.ndarray, original: np.ndarray) -> tuple[float, float]:
    """Mean |difference| on the box's bottom edge, and deep inside the box (should be codec noise)."""
    x1, y1, x2, y2 = BOX
    d = np.abs(decoded.astype(np.int16) - original.astype(np.int16)).mean(axis=2)
    edge = max(d[y, x1 + 5:x2 - 5].mean() for y in (y2 - 1, y2, y2 + 1))  # the 1-px line's row
    inside = d[y1 + 30:y2 - 30, x1 + 30:x2 - 30].mean()
    return float(edge), float(inside)


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_is_readable_with_boxes_drawn(tmp_path, image, suffix):
    out = tmp_path / f"out{suffix}"
    with make_sink(str(out)) as sink:  # fps measured from the frames' timestamps (10 fps)
        for f in frames(image, 24):
            sink.write(f, det(f.index))
            assert not out.exists()  # only the finished file appears under the final name
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temp file left
    imgs, fps = read_video(out)
    assert len(imgs) == 24 and imgs[0].shape == (H, W, 3)
    assert fps == pytest.approx(10.0, rel=0.05)
    edge, inside = edge_and_inside_diff(imgs[5], image)
    assert edge > 40 and inside < 12, (edge, inside)  # the box is drawn, the photo is intact
    assert sink.stats["written"] == 24 and sink.fps == pytest.approx(10.0, rel=0.05)


def test_fps_from_argument_and_from_frame_meta(tmp_path, image):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    with VideoSink(a, fps=7) as s:
        for f in frames(image, 3, fps=1000):
            s.write(f, det(f.index))
    with VideoSink(b) as s:  # a file read as fast as possible still knows its native rate
        for f in frames(image, 3, fps=1000, meta={"fps": 12}):
            s.write(f, det(f.index))
    assert read_video(a)[1] == pytest.approx(7) and read_video(b)[1] == pytest.approx(12)
    assert len(read_video(a)[0]) == 3


def test_frames_of_another_size_are_resized_and_raw_mode_draws_nothing(tmp_path, image):
    out = tmp_path / "raw.avi"
    with VideoSink(out, fps=10, annotator=False) as s:
        s.write(Frame("c", 0, 0.0, image), det(0))
        s.write(Frame("c", 1, 0.1, cv2.resize(image, (160, 120))), det(1))
        s.write(Frame("c", 2, 0.2, cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)), det(2))  # gray is accepted
    imgs, _ = read_video(out)
    assert [i.shape for i in imgs] == [(H, W, 3)] * 3
    edge, _ = edge_and_inside_diff(imgs[0], image)
    assert edge < 12  # annotator=False: no box


def test_source_filter_writes_one_camera(tmp_path, image):
    out = tmp_path / "cam1.mp4"
    with make_sink(f"{out}?source=cam1&fps=10") as s:
        for f in frames(image, 4, source="cam0"):
            s.write(f, det(f.index))
        for f in frames(image, 3, source="cam1"):
            s.write(f, det(f.index))
    assert len(read_video(out)[0]) == 3


def test_short_run_and_unmoving_timestamps_still_give_a_video(tmp_path, image):
    out = tmp_path / "short.mp4"
    with VideoSink(out) as s:  # 3 frames, same timestamp: held back, then 30 fps at close
        for i in range(3):
            s.write(Frame("c", i, 5.0, image), det(i))
    imgs, fps = read_video(out)
    assert len(imgs) == 3 and fps == pytest.approx(30)


def test_no_partial_file_on_error(tmp_path, image):
    out = tmp_path / "crash.mp4"
    with pytest.raises(RuntimeError):
        with make_sink(str(out), fps=10) as s:
            for f in frames(image, 5):
                s.write(f, det(f.index))
            raise RuntimeError("pipeline died")
    assert list(tmp_path.iterdir()) == []


def test_no_frames_no_file(tmp_path):
    out = tmp_path / "empty.mp4"
    with VideoSink(out):
        pass
    assert list(tmp_path.iterdir()) == []


def test_video_write_errors(tmp_path, image):
    with VideoSink(tmp_path / "e.mp4", fps=10) as s:
        with pytest.raises(SinkError, match="needs the frame image"):
            s.write(None, det(0))
        with pytest.raises(SinkError, match="uint8"):
            s.write(Frame("c", 0, 0.0, image.astype(np.float32)), det(0))
        with pytest.raises(SinkError, match="HxW, HxWx3 or HxWx4"):
            s.write(Frame("c", 0, 0.0, np.zeros((4, 4, 5), np.uint8)), det(0))
    assert s.stats["errors"] == 3 and list(tmp_path.iterdir()) == []


def test_a_failing_annotator_is_a_sink_error(tmp_path, image):
    class Broken:
        def annotate(self, image, result):
            raise IndexError("label 3 of 2")

    with VideoSink(tmp_path / "e.mp4", fps=10, annotator=Broken()) as s:
        with pytest.raises(SinkError, match="drawing failed: IndexError: label 3 of 2"):
            s.write(Frame("c", 0, 0.0, image), det(0))
    assert s.stats["errors"] == 1 and list(tmp_path.iterdir()) == []


def test_video_open_and_codec_errors(tmp_path, image):
    with pytest.raises(SinkError, match="unknown video suffix"):
        VideoSink(tmp_path / "x.mov")
    with pytest.raises(SinkError, match="fourcc must be 4"):
        VideoSink(tmp_path / "x.mp4", fourcc="h264x")
    with pytest.raises(SinkError, match="fps must be"):
        VideoSink(tmp_path / "x.mp4", fps=0)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(SinkError, match="is a folder"):
        VideoSink(tmp_path / "dir.mp4").open()
    (tmp_path / "file").write_text("x")
    with pytest.raises(SinkError, match="cannot create folder"):
        VideoSink(tmp_path / "file" / "x.mp4").open()
    s = VideoSink(tmp_path / "odd.mp4", fps=10, fourcc="ZZZZ")
    s.open()
    with pytest.raises(SinkError, match="could not open a 'ZZZZ' writer"):
        s.write(Frame("c", 0, 0.0, image), det(0))
    s.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.mp4", "file"]


def test_video_finish_errors(tmp_path, image, monkeypatch):
    import edgesdk.sinks.video as video_mod

    monkeypatch.setattr(video_mod.os, "access", lambda path, mode: False)  # root may write anywhere
    with pytest.raises(SinkError, match="is not writable"):
        VideoSink(tmp_path / "ro.mp4").open()
    monkeypatch.undo()

    gone = VideoSink(tmp_path / "gone.mp4", fps=10)  # the temporary file vanishes mid-run
    gone.open()
    gone.write(Frame("c", 0, 0.0, image), det(0))
    gone._tmp.unlink()
    with pytest.raises(SinkError, match="produced no output"):
        gone.close()

    out = tmp_path / "taken.mp4"
    blocked = VideoSink(out, fps=10)
    blocked.open()
    blocked.write(Frame("c", 0, 0.0, image), det(0))
    out.mkdir()  # something took the final name while recording
    (out / "x").write_text("x")
    with pytest.raises(SinkError, match="cannot move the finished video"):
        blocked.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.mp4"]  # no temporary file left


# ---- window ---------------------------------------------------------------------------------
def test_window_without_display_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(SinkError, match=r"no display.*--sink out\.mp4"):
        make_sink("window").open()


def test_window_with_display_but_no_gui_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99")  # nothing serves it; or this OpenCV is headless
    with pytest.raises(SinkError, match="window sink: (this OpenCV has no GUI|OpenCV cannot open a window)"):
        make_sink("window").open()


def test_window_shows_annotated_frames_per_source(monkeypatch, image):
    """No screen here: OpenCV's GUI calls are replaced by recorders (the only fake in this file)."""
    shown, keys = [], iter([-1, ord("q")])
    monkeypatch.setattr(window_mod, "display_problem", lambda: None)
    monkeypatch.setattr(window_mod.cv2, "namedWindow", lambda *a: None)
    monkeypatch.setattr(window_mod.cv2, "destroyWindow", lambda title: shown.append(("destroy", title)))
    monkeypatch.setattr(window_mod.cv2, "imshow", lambda title, img: shown.append((title, img.copy())))
    monkeypatch.setattr(window_mod.cv2, "waitKey", lambda ms: next(keys))
    with make_sink("window:Door") as s:
        s.write(Frame("cam0", 0, 0.0, image), det(0))
        assert not s.quit_requested
        s.write(Frame("cam1", 1, 0.0, image), det(1))
        assert s.quit_requested  # 'q' pressed
    titles = [t for t, _ in shown if t != "destroy"]
    assert titles == ["Door [cam0]", "Door [cam1]"]
    edge, _ = edge_and_inside_diff(shown[1][1], image)
    assert edge > 40 and not np.shares_memory(shown[1][1], image)
    assert sorted(t for k, t in shown if k == "destroy") == ["Door (starting)", "Door [cam0]", "Door [cam1]"]


def test_window_write_errors(monkeypatch, image):
    def broken(title, img):
        raise cv2.error("The window was destroyed")

    monkeypatch.setattr(window_mod, "display_problem", lambda: None)
    monkeypatch.setattr(window_mod.cv2, "namedWindow", lambda *a: None)
    monkeypatch.setattr(window_mod.cv2, "destroyWindow", lambda title: None)
    monkeypatch.setattr(window_mod.cv2, "imshow", broken)
    with make_sink("window") as s:
        with pytest.raises(SinkError, match="needs the frame image"):
            s.write(None, det(0))
        with pytest.raises(SinkError, match="cannot show the frame"):
            s.write(Frame("cam0", 0, 0.0, image), det(0))
    assert s.stats["errors"] == 2


def test_one_video_file_for_several_sources_is_refused_naming_the_per_source_form(tmp_path):
    """Two cameras into one out.mp4 interleaved their frames (25 fps and 15 fps clips became
    one 15 fps clip of both); the fix is one file per source."""
    from edgesdk.errors import ConfigError
    from edgesdk.streaming import Pipeline
    from edgesdk.streaming.sources import ProducerSource
    from streamfakes import FakeModel, numbered_frames

    out = tmp_path / "all.mp4"
    sources = [ProducerSource(numbered_frames(3), "a"), ProducerSource(numbered_frames(3), "b")]
    with pytest.raises(ConfigError, match=r"interleave the frames of 2 sources.*all_\{source\}\.mp4"):
        Pipeline(FakeModel(), sources, [str(out), str(tmp_path / "r.jsonl")]).run()
    assert list(tmp_path.iterdir()) == []
    report = Pipeline(FakeModel(), [ProducerSource(numbered_frames(3), "a"), ProducerSource(numbered_frames(3), "b")],
                      [str(tmp_path / "v_{source}.mp4")]).run()
    assert report.stats["frames_out"] == 6 and sorted(p.name for p in tmp_path.iterdir()) == ["v_a.mp4", "v_b.mp4"]
