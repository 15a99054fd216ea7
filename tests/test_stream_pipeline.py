"""Pipeline plumbing with a stand-in model (tests/streamfakes.py): buffers, order, batching,
errors, shutdown. The real-model evidence is in tests/test_stream_real.py."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgesdk.errors import ConfigError, SourceError
from edgesdk.results import Frame
from edgesdk.streaming import Pipeline, run
from edgesdk.streaming.buffer import FrameBuffer
from edgesdk.streaming.sources import ProducerSource, Source
from edgesdk.streaming.stats import markdown, status_line
from runtimes.errors import InferenceError
from streamfakes import FakeModel, numbered_frames


def _frame(sid: str, i: int, ts: float) -> Frame:
    return Frame(sid, i, ts, np.zeros((2, 2, 3), np.uint8))


# ---------------------------------------------------------------------------- buffer
def test_live_lane_drops_oldest_and_counts():
    drops = []
    buf = FrameBuffer(on_drop=lambda sid, n: drops.append((sid, n)))
    buf.add_source("cam", 3, drop_oldest=True)
    for i in range(10):
        assert buf.put(_frame("cam", i, float(i)))
    assert buf.sizes() == {"cam": 3} and buf.high_water() == {"cam": 3}
    assert buf.dropped() == {"cam": 7} and sum(n for _, n in drops) == 7
    assert [f.index for f in buf.take(10, 0)] == [7, 8, 9]  # the freshest survive


def test_lossless_lane_blocks_the_producer_until_room():
    buf = FrameBuffer()
    buf.add_source("file", 2, drop_oldest=False)
    buf.put(_frame("file", 0, 0.0))
    buf.put(_frame("file", 1, 1.0))
    assert not buf.put(_frame("file", 2, 2.0), timeout=0.05)  # full: would block
    done = threading.Event()
    threading.Thread(target=lambda: (buf.put(_frame("file", 2, 2.0)), done.set()), daemon=True).start()
    assert not done.wait(0.1)
    assert [f.index for f in buf.take(1, 0)] == [0]
    assert done.wait(2)
    assert buf.dropped() == {"file": 0}


def test_take_merges_sources_oldest_first_and_drop_stale_spares_lossless():
    buf = FrameBuffer()
    buf.add_source("a", 10, drop_oldest=True)
    buf.add_source("b", 10, drop_oldest=False)
    for i, ts in enumerate([1.0, 3.0, 5.0]):
        buf.put(_frame("a", i, ts))
    for i, ts in enumerate([2.0, 4.0]):
        buf.put(_frame("b", i, ts))
    assert buf.queue_times() == ((1.0, 2.0, 3.0, 4.0, 5.0), 2.0)
    stale = buf.drop_stale(4.5)
    assert [(f.source_id, f.index) for f in stale] == [("a", 0), ("a", 1)]  # lossless b is kept
    assert [(f.source_id, f.index) for f in buf.take(10, 0)] == [("b", 0), ("b", 1), ("a", 2)]


def test_take_waits_for_n_until_deadline_or_end():
    buf = FrameBuffer()
    buf.add_source("a", 10, drop_oldest=False)
    buf.put(_frame("a", 0, 0.0))
    t0 = time.time()
    assert len(buf.take(4, time.time() + 0.05)) == 1  # deadline: partial batch
    assert time.time() - t0 >= 0.04
    buf.put(_frame("a", 1, 1.0))
    buf.end("a")
    assert len(buf.take(4, None)) == 1  # the source ended: no waiting for 4
    assert buf.exhausted


# ---------------------------------------------------------------------------- pipeline
def _collect():
    got: dict[str, list] = {}

    def on_result(frame, result):
        got.setdefault(frame.source_id, []).append((frame.index, result.frame_index, result.meta["mean"]))
    return got, on_result


@pytest.mark.parametrize("batching,kw", [("none", {}), ("fixed", {"batch": 4}),
                                         ("fixed", {"batch": 4, "max_wait_ms": 2}),
                                         ("adaptive", {"slo_ms": 50, "batch": 8})])
def test_results_come_back_to_their_source_in_order(batching, kw):
    got, on_result = _collect()
    model = FakeModel(a_ms=1, c_ms=0.5)
    srcs = [ProducerSource(numbered_frames(40), "a"), ProducerSource(numbered_frames(25)[::-1], "b")]
    report = run(model, srcs, batching=batching, on_result=on_result, **kw)
    assert [i for i, _, _ in got["a"]] == list(range(40))
    assert [m for _, _, m in got["a"]] == list(range(40))  # each result belongs to its frame
    assert [m for _, _, m in got["b"]] == list(range(24, -1, -1))
    assert all(i == fi for i, fi, _ in got["a"] + got["b"])
    snap = report.stats
    assert snap["frames_in"] == snap["frames_out"] == 65 and snap["dropped"] == 0
    assert snap["errors"] == {} and report.stop_reason == "sources ended"
    if batching == "fixed" and "max_wait_ms" not in kw:
        assert all(s == 4 for s in model.sizes[:-1])  # full batches, frames from both sources together


def test_fixed_batch_model_is_padded_and_limits_batching():
    model = FakeModel(fixed_batch=4, max_batch=4)
    got, on_result = _collect()
    report = run(model, [ProducerSource(numbered_frames(10), "a")], batching="fixed", batch=8, on_result=on_result)
    assert set(model.sizes) == {4}  # 8 limited to 4; the last 2 frames padded to 4
    assert [m for _, _, m in got["a"]] == list(range(10))
    assert report.policy["max_batch"] == 4


def test_slow_device_with_live_sources_drops_counted_and_bounded():
    """A live producer far faster than the device: the buffer keeps the freshest frames,
    every frame is accounted for (out + dropped), queues never exceed their bounds."""
    model = FakeModel(a_ms=5, c_ms=1)
    n = 400
    src = ProducerSource(numbered_frames(n), "cam", live=True)
    pipe = Pipeline(model, [src], batching="fixed", batch=2, buffer_size=4)
    report = pipe.run()
    snap = report.stats
    assert snap["frames_in"] == n
    assert snap["drops"].get("buffer_full:cam", 0) > 0
    assert snap["frames_out"] + snap["dropped"] == n
    assert report.buffer_high_water["cam"] <= 4


def test_inference_failures_are_counted_then_stop_the_run_with_the_error():
    model = FakeModel(fail_after=2)
    pipe = Pipeline(model, [ProducerSource(numbered_frames(200), "a")], batching="none")
    with pytest.raises(InferenceError, match="fake device failure"):
        pipe.run()
    snap = pipe.report().stats
    assert snap["drops"]["error:infer"] >= 10 and snap["frames_out"] == 2
    assert not pipe.running


def test_a_failing_source_ends_alone_and_its_error_is_raised_after_the_others_finish():
    calls = {"n": 0}

    def broken():
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("sensor unplugged")
        return np.zeros((4, 4, 3), np.uint8)

    got, on_result = _collect()
    pipe = Pipeline(FakeModel(), [ProducerSource(numbered_frames(30), "good"), ProducerSource(broken, "bad")],
                    on_result=on_result)
    with pytest.raises(SourceError, match="sensor unplugged"):
        pipe.run()
    assert len(got["good"]) == 30 and len(got["bad"]) == 5
    assert "sensor unplugged" in pipe.report().source_errors[0]


def _interrupt(pipe: Pipeline, after: int, how, reason: str) -> dict:
    """Start, wait for `after` results, call how(reason), wait for the end: final stats."""
    pipe.start()
    while pipe.stats.frames_out < after:
        time.sleep(0.01)
    how(reason)
    assert pipe.wait(10)
    return pipe.report().stats


def test_stop_finishes_what_is_queued_and_in_flight():
    def endless():
        while True:
            yield np.zeros((4, 4, 3), np.uint8)

    got, on_result = _collect()
    pipe = Pipeline(FakeModel(a_ms=2), [ProducerSource(endless(), "cam")], on_result=on_result, buffer_size=8)
    snap = _interrupt(pipe, after=5, how=pipe.stop, reason="test")
    assert snap["frames_in"] == snap["frames_out"] + snap["dropped"]  # queued frames were finished
    assert snap["drops"].get("aborted", 0) == 0 and pipe.stop_reason == "test"
    idx = [i for i, _, _ in got["cam"]]
    assert idx == sorted(idx)


def test_max_frames_and_duration_stop_the_run():
    def endless():
        i = 0
        while True:
            i += 1
            yield np.full((4, 4, 3), i % 256, np.uint8)

    report = run(FakeModel(), [ProducerSource(endless(), "a")], max_frames=7)
    assert report.stats["frames_out"] == 7
    report = run(FakeModel(a_ms=1), [ProducerSource(endless(), "a", live=True, fps=200)], realtime=True,
                 duration=0.5)
    assert report.stop_reason.startswith("duration") and report.stats["frames_out"] > 0


def test_dynamic_size_models_get_one_call_per_input_size():
    model = FakeModel()
    model.group_key = lambda img: img.shape[:2]
    sizes = []
    orig = model.preprocess

    def preprocess(images):
        sizes.append({img.shape[:2] for img in images})
        return orig(images)

    model.preprocess = preprocess
    small = [np.zeros((8, 8, 3), np.uint8)] * 6
    big = [np.zeros((16, 16, 3), np.uint8)] * 6
    from edgesdk.streaming.model import StreamModel
    sm = StreamModel(model.preprocess, model.submit, model.decode, group_key=model.group_key)
    report = run(sm, [ProducerSource(small, "s"), ProducerSource(big, "b")], batching="fixed", batch=4)
    assert report.stats["frames_out"] == 12
    assert all(len(s) == 1 for s in sizes)  # never two sizes in one call


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="at least one source"):
        Pipeline(FakeModel(), [])
    with pytest.raises(ConfigError, match="--slo-ms"):
        Pipeline(FakeModel(), ["x"], batching="adaptive")
    with pytest.raises(ConfigError, match="max_inflight"):
        Pipeline(FakeModel(), ["x"], max_inflight=0)
    with pytest.raises(ConfigError, match="cannot stream with int"):
        run(42, [ProducerSource(numbered_frames(1), "a")])
    with pytest.raises(SourceError, match="nothere"):
        run(FakeModel(), ["/nothere/clip.mp4"])


def test_status_line_and_markdown_summary():
    report = run(FakeModel(), [ProducerSource(numbered_frames(20), "a"), ProducerSource(numbered_frames(5), "b")],
                 batching="fixed", batch=2)
    line = status_line(report.stats)
    assert "fps" in line and "e2e p50" in line and "\n" not in line
    md = markdown(report.stats)
    assert "| infer |" in md and "| a | 20 | 20 |" in md and "| b | 5 | 5 |" in md
    assert report.stats["batch_sizes"] and report.stats["stages"]["preprocess"]["count"] == 25


def test_a_long_status_line_keeps_its_flags_and_a_source_without_results_shows_no_p99():
    """The line was cut at 160 characters from the end: with a drops breakdown, reconnects and
    source states, the SLO flag (and 'reconnects') fell off it."""
    import copy

    report = run(FakeModel(), [ProducerSource(numbered_frames(6), "a"), ProducerSource(numbered_frames(0), "b")])
    snap = copy.deepcopy(report.stats)
    snap.update(drops={"stale:a": 12345, "superseded:a": 6789, "full:b": 42}, dropped=19176, reconnects=3)
    for sid, state in (("a", "live"), ("b", "reconnecting")):
        snap["sources"][sid]["state"] = state
    snap["slo"] = {"missed": True, "p99_ms": 412.0, "slo_ms": 200.0, "cause_short": "engine busy 99%"}
    line = status_line(snap)
    assert len(line) <= 160 and line.endswith("SLO MISSED p99 412 > 200 ms"), line
    assert "reconnects 3" in line and "1 reconnecting" in line and "dropped 19176" in line
    wide = status_line(snap, width=400)  # the breakdown and the cause go only when they do not fit
    assert "(stale 12345" in wide and wide.endswith("(engine busy 99%)")
    assert "| b | 0 | 0 | - |" in markdown(report.stats)


def test_per_source_sinks_status_line_and_metrics_endpoint(tmp_path, capsys):
    """'{source}' in a sink makes one per source; --metrics-port serves the pipeline's stats."""
    import json
    import socket
    import urllib.request

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    scraped: list[str] = []

    def scrape(frame, result):
        if frame.index == 30 and frame.source_id == "a":  # mid-run, after a stats update or two
            time.sleep(1.2)
            scraped.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())

    srcs = [ProducerSource(numbered_frames(40), "a", live=True, fps=50), ProducerSource(numbered_frames(20), "b")]
    report = run(FakeModel(), srcs, [str(tmp_path / "out_{source}.jsonl")], realtime=True, metrics_port=port,
                 status=True, on_result=scrape)
    for sid, n in (("a", 40), ("b", 20)):
        rows = [json.loads(line) for line in (tmp_path / f"out_{sid}.jsonl").read_text().splitlines()]
        assert [r["frame_index"] for r in rows] == list(range(n)) and {r["source_id"] for r in rows} == {sid}
    assert report.sinks and all(st["written"] in (40, 20) for st in report.sinks.values())
    assert scraped and "edgesdk_pipeline_frames_in" in scraped[0] and "edgesdk_pipeline_fps_out" in scraped[0]
    err = capsys.readouterr().err
    assert "fps" in err and "e2e p50" in err  # the one-line status


def test_profile_batch_limit_applies():
    model = FakeModel()
    run(model, [ProducerSource(numbered_frames(12), "a")], batching="fixed", batch=8, profile={"max_batch": 3})
    assert max(model.sizes) == 3
    from edgesdk.profiles import load_profile
    limit = load_profile("raspberry-pi-4").max_batch
    model = FakeModel()
    run(model, [ProducerSource(numbered_frames(12), "a")], batching="adaptive", slo_ms=1000, batch=16,
        profile="raspberry-pi-4")
    assert max(model.sizes) <= limit


def test_abort_drops_the_queue_counted_and_a_sink_that_cannot_open_stops_nothing(tmp_path):
    pipe = Pipeline(FakeModel(a_ms=20), [ProducerSource(numbered_frames(200), "a")], buffer_size=16)
    snap = _interrupt(pipe, after=2, how=pipe.abort, reason="second Ctrl-C")
    assert snap["drops"].get("aborted", 0) > 0
    assert snap["frames_in"] == snap["frames_out"] + snap["dropped"]  # every frame accounted for
    assert snap["frames_out"] < 200

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    from edgesdk.errors import SinkError
    src = ProducerSource(numbered_frames(5), "a")
    pipe = Pipeline(FakeModel(), [src], [str(blocker / "out.jsonl")])
    with pytest.raises(SinkError, match="out.jsonl"):
        pipe.run()
    assert not pipe.running and not pipe.readers  # nothing was started


def _dead_folder_run(tmp_path, **kw) -> tuple[Pipeline, Path]:
    empty = tmp_path / "no_images"
    empty.mkdir()
    old = tmp_path / "out" / "dead.jsonl"
    old.parent.mkdir()
    old.write_text('{"frame_index": 0}\n')
    pipe = Pipeline(FakeModel(), [ProducerSource(numbered_frames(5), "a"), f"dead={empty}"],
                    [str(tmp_path / "out" / "{source}.jsonl"), str(tmp_path / "all.jsonl")], **kw)
    with pytest.raises(SourceError, match="no images"):
        pipe.run()
    return pipe, old


def test_require_all_sources_stops_the_start_and_leaves_the_sinks_files_untouched(tmp_path):
    """Fail-fast: a rerun with a dead camera must not wipe the previous run's results (JSONL
    files are written in place) nor leave an empty file per source; the report says why."""
    pipe, old = _dead_folder_run(tmp_path, require_all_sources=True)
    assert old.read_text() == '{"frame_index": 0}\n'
    assert sorted(p.name for p in tmp_path.rglob("*.jsonl")) == ["dead.jsonl"]
    assert pipe.report().stop_reason.startswith("could not start:") and "no images" in pipe.report().stop_reason
    assert not pipe.readers


def test_a_source_that_cannot_open_fails_alone_while_the_others_run(tmp_path):
    """The default: the dead source ends as failed with its reason, the other one delivers every
    frame, the failed one's own file keeps what an earlier run wrote, and run() raises at the end."""
    pipe, old = _dead_folder_run(tmp_path)
    rep = pipe.report()
    assert rep.stats["sources"]["a"]["frames_out"] == 5 and rep.stats["sources"]["a"]["state"] == "ended"
    assert rep.failed_sources.keys() == {"dead"} and "no images" in rep.failed_sources["dead"]
    assert old.read_text() == '{"frame_index": 0}\n'
    assert len((tmp_path / "out" / "a.jsonl").read_text().splitlines()) == 5
    assert len((tmp_path / "all.jsonl").read_text().splitlines()) == 5
    import io

    from edgesdk.streaming.observers import StatusLine
    out = io.StringIO()
    StatusLine(out).update(rep.stats)
    assert "FAILED: dead" in out.getvalue()
    from edgesdk.sinks.prometheus import _SnapshotCollector
    collector = _SnapshotCollector("edgesdk_pipeline")
    collector.snapshot = rep.stats
    metrics = {m.name: m for m in collector.collect()}
    assert metrics["edgesdk_pipeline_sources_dead_state_code"].samples[0].value == 4  # failed
    assert metrics["edgesdk_pipeline_sources_a_state_code"].samples[0].value == 3  # ended


def test_no_source_opening_is_a_prompt_error_naming_each(tmp_path):
    (tmp_path / "e1").mkdir()
    (tmp_path / "e2").mkdir()
    url = f"rtsp://127.0.0.1:{_closed_port()}/live"
    pipe = Pipeline(FakeModel(), [f"x={tmp_path / 'e1'}", f"y={tmp_path / 'e2'}", f"door={url}"],
                    [str(tmp_path / "all.jsonl")])
    with pytest.raises(SourceError, match="none of the 3 sources could be opened.*no images.*cannot open stream"):
        pipe.run()


def test_several_failed_sources_are_one_line_naming_each(tmp_path):
    (tmp_path / "e1").mkdir()
    (tmp_path / "e2").mkdir()
    pipe = Pipeline(FakeModel(), [ProducerSource(numbered_frames(3), "a"), f"x={tmp_path / 'e1'}",
                                  f"y={tmp_path / 'e2'}"])
    with pytest.raises(SourceError) as err:
        pipe.run()
    text = str(err.value)
    assert text.startswith("2 of 3 source(s) failed (x, y), the others ran: cannot open images")
    assert text.endswith("; 1 more (reasons in the log and the run report)") and "\n" not in text
    assert text.count("no images") == 1 and isinstance(err.value.__cause__, SourceError)
    assert not (tmp_path / "all.jsonl").exists()


def test_a_short_run_far_over_its_latency_target_is_judged_missed():
    """A 40-frame clip read as fast as possible ran at p50 6.5 s against --slo-ms 50 and the
    report said nothing (the watch waited for 50 frames): a median over the target is a miss."""
    frames = [np.zeros((8, 8, 3), np.uint8)] * 20
    report = run(FakeModel(a_ms=15), [ProducerSource(frames, "clip")], batching="adaptive", slo_ms=5)
    assert report.stats["frames_out"] == 20
    slo = report.stats["slo"]
    assert slo["missed"] and "files read as fast as possible" in slo["cause_short"]
    assert "latency target missed" in report.markdown()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_a_stream_that_never_connects_says_why_while_retrying_and_fails_at_the_end(tmp_path):
    """rtsp:// to a closed port, added to a running pipeline with the default endless backoff:
    it sat in 'connecting' with no reason and ended as 'ended' (exit 0) when the run stopped."""
    from edgesdk.streaming.sources import Backoff

    def endless():
        while True:
            yield np.zeros((4, 4, 3), np.uint8)

    pipe = Pipeline(FakeModel(), [ProducerSource(endless(), "cam", live=True, fps=50)],
                    [str(tmp_path / "{source}.jsonl")], realtime=True, reconnect=Backoff(initial=0.05, maximum=0.1))
    pipe.start()
    try:
        url = f"rtsp://127.0.0.1:{_closed_port()}/live"
        pipe.add_source(f"ghost={url}")
        pipe.add_source(f"gone={url}")
        deadline = time.time() + 10
        while "attempt 3" not in pipe.states["ghost"].reason and time.time() < deadline:
            time.sleep(0.05)
        snap = pipe.snapshot()["sources"]["ghost"]
        assert snap["state"] == "connecting" and "failed: cannot open stream" in snap["reason"]
        pipe.remove_source("gone")  # taken out on purpose: not a failure
        assert not (tmp_path / "gone.jsonl").exists()  # nor an empty file: it never delivered a frame
    finally:
        pipe.stop("test")
        assert pipe.wait(15)
    states = pipe.report().stats["sources"]
    assert states["ghost"]["state"] == "failed" and states["gone"]["state"] == "ended"
    assert states["gone"]["reason"] == "removed"
    assert states["cam"]["state"] == "ended"
    errors = pipe.report().source_errors
    assert len(errors) == 1 and "ghost" in errors[0] and "never connected" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam.jsonl"]


class LateCamera(Source):
    """A camera that boots after the box: its first `down` opens fail, then it serves frames."""

    kind, reconnects = "camera", True

    def __init__(self, down: int) -> None:
        super().__init__("late", "late", live=True)
        self.down, self.opens = down, 0

    def open(self) -> None:
        self.opens += 1
        if self.opens <= self.down:
            raise SourceError("camera 'late': not there yet")

    def read(self):
        time.sleep(0.01)
        return np.zeros((4, 4, 3), np.uint8)


def test_a_camera_down_at_the_start_goes_live_when_it_comes_up_and_nothing_fails():
    """Under systemd the box boots before the camera: its first attempts fail (the start's
    included), it sits in 'connecting' with the reason, then goes live; the run reports no failure."""
    from edgesdk.streaming.sources import Backoff

    def endless():
        while True:
            yield np.zeros((4, 4, 3), np.uint8)

    pipe = Pipeline(FakeModel(), [ProducerSource(endless(), "cam", live=True, fps=50), LateCamera(down=3)],
                    realtime=True, reconnect=Backoff(initial=0.05, maximum=0.1))
    pipe.start()
    try:
        deadline = time.time() + 15
        while pipe.snapshot()["sources"]["late"]["frames_out"] < 5 and time.time() < deadline:
            time.sleep(0.05)
        row = pipe.snapshot()["sources"]["late"]
        assert row["state"] == "live" and row["frames_out"] >= 5 and pipe.sources[1].opens == 4
    finally:
        pipe.stop("test")
        assert pipe.wait(15)
    rep = pipe.report()
    assert rep.failed_sources == {} and rep.source_errors == []
    assert rep.stats["sources"]["late"]["state"] == "ended"


def test_a_failed_source_added_again_under_its_name_is_judged_by_the_new_one(tmp_path):
    """An operator fixes a dead camera's URL (spec file or --control): the run that goes on must not
    exit 9 for the failure that was fixed, and the fixed source's own file holds its results."""
    from edgesdk.streaming.sources import Backoff

    def endless():
        while True:
            yield np.zeros((4, 4, 3), np.uint8)

    url = f"rtsp://127.0.0.1:{_closed_port()}/live"
    pipe = Pipeline(FakeModel(), [ProducerSource(endless(), "cam", live=True, fps=50), f"door={url}"],
                    [str(tmp_path / "{source}.jsonl")], realtime=True,
                    reconnect=Backoff(initial=0.05, maximum=0.05, attempts=1))
    pipe.start()
    try:
        deadline = time.time() + 20
        while pipe.states["door"].state != "failed" and time.time() < deadline:
            time.sleep(0.05)
        assert pipe.states["door"].state == "failed" and len(pipe.source_set.errors) == 1
        pipe.add_source(ProducerSource(numbered_frames(6), "door"))
        while pipe.snapshot()["sources"]["door"]["frames_out"] < 6 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        pipe.stop("test")
        assert pipe.wait(15)
    rep = pipe.report()
    assert rep.source_errors == [] and rep.failed_sources == {}
    assert len((tmp_path / "door.jsonl").read_text().splitlines()) == 6


def test_control_endpoint_refuses_a_name_that_is_a_path_and_unknown_keys(tmp_path):
    """POST {"id": "../../x"} with a `{source}` sink wrote results outside the sink's folder, and
    misspelt keys ({"wieght": 2}) were silently ignored."""
    import json as _json
    import urllib.error
    import urllib.request

    def endless():
        while True:
            yield np.zeros((4, 4, 3), np.uint8)

    out = tmp_path / "out"
    pipe = Pipeline(FakeModel(), [ProducerSource(endless(), "cam", live=True, fps=30)],
                    [str(out / "{source}.jsonl")], realtime=True, control_port=0)
    pipe.start()

    def post(body) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{pipe.control.port}/sources", method="POST",
                                     data=_json.dumps(body).encode())
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, _json.loads(e.read())["error"]

    try:
        uri = str(tmp_path)  # any spec: the name is refused before it is opened
        for bad in ("../../escaped", "a/b", "bad name!", ""):
            code, error = post({"uri": uri, "id": bad})
            assert code == 400 and "is not a name" in error, (bad, error)
        code, error = post({"uri": uri, "id": "ok", "wieght": 2})
        assert code == 400 and "unknown key(s) wieght" in error
    finally:
        pipe.stop("test")
        assert pipe.wait(15)
    assert sorted(p.name for p in tmp_path.rglob("*.jsonl")) == ["cam.jsonl"]
    assert set(pipe.report().stats["sources"]) == {"cam"}
