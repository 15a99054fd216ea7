"""Sink base, callback and JSONL sinks, make_sink's spec forms."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from edgesdk.errors import SinkError
from edgesdk.results import Frame, Result
from edgesdk.sinks import AsyncSink, CallbackSink, JsonlSink, Sink, encode_result, make_sink


def result(i: int = 0, **kw) -> Result:
    kw.setdefault("boxes", [[10, 20, 110, 220]])
    kw.setdefault("scores", [0.875])
    kw.setdefault("class_ids", [1])
    kw.setdefault("labels", ["face"])
    return Result(source_id="cam0", frame_index=i, timestamp=1700000000.0 + i, **kw)


def frame(i: int = 0, image=None) -> Frame:
    return Frame("cam0", i, 1700000000.0 + i, np.zeros((48, 64, 3), np.uint8) if image is None else image)


# ---- base lifecycle -------------------------------------------------------------------------
def test_write_before_open_and_after_close_are_errors():
    sink = CallbackSink(lambda f, r: None)
    with pytest.raises(SinkError, match="not open"):
        sink.write(None, result())
    sink.open()
    sink.write(None, result())
    sink.close()
    sink.close()  # idempotent
    with pytest.raises(SinkError, match="closed"):
        sink.write(None, result())
    with pytest.raises(SinkError, match="cannot reopen"):
        sink.open()
    assert sink.stats == {"written": 1, "dropped": 0, "errors": 0}


def test_context_manager_aborts_on_exception():
    events = []

    class Probe(Sink):
        def _write_impl(self, frame, result):
            pass

        def _close_impl(self):
            events.append("close")

        def _abort_impl(self):
            events.append("abort")

    with Probe("p"):
        pass
    with pytest.raises(RuntimeError):
        with Probe("p"):
            raise RuntimeError("pipeline failed")
    assert events == ["close", "abort"]


# ---- callback -------------------------------------------------------------------------------
def test_callback_gets_frame_and_result():
    got = []
    with make_sink(lambda f, r: got.append((f.index, r.frame_index))) as sink:
        for i in range(3):
            sink.write(frame(i), result(i))
    assert got == [(0, 0), (1, 1), (2, 2)] and sink.stats["written"] == 3


def test_callback_exception_becomes_sink_error_and_is_counted():
    def bad(f, r):
        raise ValueError("no room")

    with make_sink(bad) as sink:
        with pytest.raises(SinkError, match=r"callback.*bad.*ValueError: no room") as ei:
            sink.write(None, result())
    assert isinstance(ei.value.__cause__, ValueError)
    assert sink.stats == {"written": 0, "dropped": 0, "errors": 1}


def test_callback_sink_needs_a_callable():
    with pytest.raises(SinkError, match="callable"):
        CallbackSink("not callable")  # type: ignore[arg-type]


# ---- JSONL ----------------------------------------------------------------------------------
def test_jsonl_lines_parse_and_are_live(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"  # missing folders are created
    sent = [result(i) for i in range(5)]
    with make_sink(str(path)) as sink:
        for k, r in enumerate(sent):
            sink.write(None, r)
            lines = path.read_text().splitlines()  # readable while the sink is open (tail -f)
            assert len(lines) == k + 1
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [r.to_dict() for r in sent]
    assert rows[2]["detections"][0] == {"box": [10.0, 20.0, 110.0, 220.0], "score": 0.875, "class_id": 1,
                                         "label": "face"}
    assert sink.stats["written"] == 5


def test_jsonl_truncates_by_default_and_appends_when_asked(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"old": 1}\n')
    with JsonlSink(path) as sink:
        sink.write(None, result(0))
    assert len(path.read_text().splitlines()) == 1
    with JsonlSink(path, append=True, fsync=True) as sink:
        sink.write(None, result(1))
    assert [json.loads(x)["frame_index"] for x in path.read_text().splitlines()] == [0, 1]


def test_jsonl_nan_becomes_null_not_invalid_json(tmp_path):
    path = tmp_path / "nan.jsonl"
    with JsonlSink(path) as sink:
        sink.write(None, result(0, scores=[float("nan")], meta={"infer_ms": math.inf}))
    row = json.loads(path.read_text())  # strict parsers would choke on NaN
    assert row["detections"][0]["score"] is None and row["meta"]["infer_ms"] is None
    assert "NaN" not in encode_result(result(0, scores=[float("nan")]))


def test_jsonl_open_errors(tmp_path):
    with pytest.raises(SinkError, match="cannot open JSONL output.*writable file path"):
        JsonlSink(tmp_path).open()  # a folder
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SinkError, match="cannot open JSONL output"):
        JsonlSink(blocker / "out.jsonl").open()  # parent is a file


def test_jsonl_aborted_before_any_result_leaves_the_old_file_and_creates_none(tmp_path):
    old = tmp_path / "out.jsonl"
    old.write_text('{"old": 1}\n')
    for path in (old, tmp_path / "new" / "out.jsonl"):
        sink = JsonlSink(path)
        sink.open()
        sink.abort()  # the run failed before its first result (say, a camera that never opened)
    assert old.read_text() == '{"old": 1}\n' and not (tmp_path / "new").exists()
    with JsonlSink(old):
        pass  # a finished run with no results: an empty file, not the previous run's
    assert old.read_text() == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_jsonl_write_error_is_reported_and_counted():
    with JsonlSink("/dev/full") as sink:  # every write fails with ENOSPC
        with pytest.raises(SinkError, match="cannot write to JSONL output.*No space"):
            sink.write(None, result())
    assert sink.stats["errors"] == 1 and sink.stats["written"] == 0


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_jsonl_fsync_error_is_reported():
    sink = JsonlSink("/dev/null", fsync=True)  # a device cannot be fsync'ed (EINVAL)
    sink.open()
    sink.write(None, result())
    with pytest.raises(SinkError, match="cannot sync JSONL output"):
        sink.close()
    assert sink._fd is None  # the descriptor is closed anyway


# ---- make_sink ------------------------------------------------------------------------------
def test_make_sink_forms(tmp_path):
    from edgesdk.sinks import MqttSink, PrometheusSink, VideoSink, WindowSink

    assert isinstance(make_sink(str(tmp_path / "a.jsonl")), JsonlSink)
    assert isinstance(make_sink(tmp_path / "a.ndjson"), JsonlSink)  # PathLike too
    v = make_sink(str(tmp_path / "a.mp4") + "?fps=12.5&source=cam1")
    assert isinstance(v, VideoSink) and (v.fps, v.source, v.fourcc) == (12.5, "cam1", "mp4v")
    assert make_sink(str(tmp_path / "a.AVI"), fps=5).fourcc == "MJPG"  # kwargs reach the sink
    m = make_sink("mqtt://10.0.0.2:1884/edge/out")
    assert isinstance(m, MqttSink) and (m.host, m.port, m.topic, m.qos) == ("10.0.0.2", 1884, "edge/out", 1)
    w = make_sink("window:Front door")
    assert isinstance(w, WindowSink) and w.title == "Front door"
    assert make_sink("window").title == "EdgeSDK"
    p = make_sink("metrics:9100")
    assert isinstance(p, PrometheusSink) and (p.host, p.port) == ("127.0.0.1", 9100)  # loopback unless told
    assert make_sink("prometheus://0.0.0.0:9100").host == "0.0.0.0"
    p = make_sink("prometheus://127.0.0.1:9200")
    assert (p.host, p.port) == ("127.0.0.1", 9200)
    existing = JsonlSink(tmp_path / "x.jsonl")
    assert make_sink(existing) is existing
    assert isinstance(make_sink(print), CallbackSink)


@pytest.mark.parametrize("spec, match", [
    ("out.txt", "unknown sink 'out.txt'.*accepted forms: out.jsonl, out.mp4"),
    ("", "empty"),
    ("metrics:abc", "not a number"),
    ("metrics:70000", "outside 0-65535"),
    ("prometheus://127.0.0.1", "prometheus://HOST:PORT"),
    ("prometheus://127.0.0.1:abc", "bad port"),
    ("prometheus://127.0.0.1:9100/path", "prometheus://HOST:PORT"),
    ("out.mp4?speed=2", "unknown option 'speed'"),
    ("out.mp4?fps=fast", "fps='fast' is not valid"),
    ("out.mkv", "unknown sink"),
])
def test_make_sink_refuses_unknown_forms(spec, match):
    with pytest.raises(SinkError, match=match):
        make_sink(spec)


def test_make_sink_refuses_other_types():
    with pytest.raises(SinkError, match="neither a string nor a callable"):
        make_sink(42)  # type: ignore[arg-type]


def test_async_sink_needs_a_sink_and_valid_settings():
    with pytest.raises(SinkError, match="wraps a Sink"):
        AsyncSink(print)  # type: ignore[arg-type]
    with pytest.raises(SinkError, match="maxsize"):
        AsyncSink(CallbackSink(print), maxsize=0)
    with pytest.raises(SinkError, match="drop="):
        AsyncSink(CallbackSink(print), drop="random")


@pytest.mark.parametrize("spec, relative", [
    ("out/{source}.jsonl", True), ("o.mp4?fps=5", True), ("/var/o.jsonl", False), ("window", False),
    ("window:cam", False), ("mqtt://broker/t", False), ("metrics:9100", False), ("prometheus://h:9100", False),
    ("ws://h/x", False)])
def test_is_relative_file_reads_the_sink_table(spec, relative):
    from edgesdk.sinks import is_relative_file
    assert is_relative_file(spec) is relative
