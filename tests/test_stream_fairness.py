"""Many cameras on one box: fair shares under overload (deficit round-robin, weights),
source states, sources added and removed while running, the SLO watch, honest sinks,
`Pipeline.from_spec`. Stand-in model (tests/streamfakes.py); real-model numbers are in
bench/stream.py's "cameras" section."""
from __future__ import annotations

import logging
import time
from collections import Counter

import cv2
import numpy as np
import pytest

from edgesdk.errors import ConfigError, SinkError, SourceError
from edgesdk.results import Frame
from edgesdk.streaming import Pipeline, run
from edgesdk.streaming.buffer import FrameBuffer
from edgesdk.streaming.sources import Backoff, ProducerSource, VideoFileSource
from edgesdk.streaming.sources.base import Source
from edgesdk.streaming.sources.state import IllegalTransition, SourceState
from edgesdk.streaming.stats import markdown, status_line
from streamdata import make_video
from streamfakes import FakeModel


def _frame(sid: str, i: int, ts: float) -> Frame:
    return Frame(sid, i, ts, np.zeros((2, 2, 3), np.uint8))


def _endless(value: int = 0):
    img = np.full((4, 4, 3), value, np.uint8)
    while True:
        yield img


# ---------------------------------------------------------------------------- buffer: DRR
def test_overloaded_take_serves_every_lane_in_turn_across_batches():
    """Eight lanes, batches of three: oldest-first would serve the earliest-phase lanes
    every time; round-robin carries its position over, so each lane gets its turn."""
    buf = FrameBuffer()
    for k in range(8):
        buf.add_source(f"c{k}", 4, drop_oldest=True)
    served: Counter = Counter()
    for rnd in range(12):
        for k in range(8):  # c0 always captures first (the phase that used to win)
            buf.put(_frame(f"c{k}", rnd, rnd + k * 0.001))
        for _ in range(2):
            served.update(f.source_id for f in buf.take(3, 0))
        buf.supersede(1)  # overload: only each lane's newest survives
    assert set(served) == {f"c{k}" for k in range(8)}
    assert max(served.values()) - min(served.values()) <= 1


@pytest.mark.parametrize("capacity, batch", [(50, 1), (50, 4), (50, 8), (45, 3)])
def test_light_sources_get_their_whole_offer_when_their_fair_share_exceeds_it(capacity, batch):
    """1 camera at 30 fps + 7 at 5 fps, equal weights, an engine taking `capacity` fps in
    batches of `batch` (simulated clock, random capture phases): max-min fairness gives each
    light camera all it offers (5 fps) and the heavy one the rest, never an even split."""
    rng = np.random.default_rng(0)
    rates, secs = [30.0] + [5.0] * 7, 20
    buf = FrameBuffer()
    events = []
    for k, rate in enumerate(rates):
        buf.add_source(f"c{k}", 8, drop_oldest=True)
        off = rng.uniform(0, 1 / rate)
        events += [(off + i / rate, 0, k, i) for i in range(int(secs * rate))]
    events += [(j * batch / capacity, 1, -1, j) for j in range(int(secs * capacity / batch))]
    got: Counter = Counter()
    for t, kind, k, i in sorted(events):
        if kind == 0:
            buf.put(_frame(f"c{k}", i, t))
        else:
            got.update(f.source_id for f in buf.take(batch, 0))
    fps = {sid: n / secs for sid, n in got.items()}
    assert all(fps[f"c{k}"] >= 0.98 * 5.0 for k in range(1, 8)), fps
    assert fps["c0"] >= 0.97 * (capacity - 35.0), fps  # the heavy camera gets what the light ones leave


def test_weights_split_an_overloaded_engine_proportionally():
    buf = FrameBuffer()
    buf.add_source("a", 100, drop_oldest=False)
    buf.add_source("b", 100, drop_oldest=False, weight=2.0)
    buf.add_source("c", 100, drop_oldest=False, weight=0.5)
    for i in range(60):
        for sid in "abc":
            buf.put(_frame(sid, i, float(i)))
    got = Counter(f.source_id for _ in range(14) for f in buf.take(5, 0))
    assert got["b"] == 2 * got["a"] and got["a"] == 2 * got["c"]


def _served_after_a_wait(stale: bool) -> int:
    """Two busy cameras are served 12 frames while a third waits; `stale`: its frames came
    and were dropped as too old meanwhile (not idle). Then it gets 3 frames at once: how
    many of the next 3 taken are its?"""
    buf = FrameBuffer()
    for sid in ("busy1", "busy2", "waiting"):
        buf.add_source(sid, 8, drop_oldest=True)
    t, i = 100.0, 0
    for _ in range(6):
        for sid in ("busy1", "busy2"):
            buf.put(_frame(sid, i, t))
        if stale:
            buf.put(_frame("waiting", i, t - 1.0))
            assert [f.source_id for f in buf.drop_stale(t - 0.5)] == ["waiting"]
        assert sorted(f.source_id for f in buf.take(2, deadline=0)) == ["busy1", "busy2"]
        t, i = t + 0.1, i + 1
    for k in range(3):
        buf.put(_frame("waiting", i + k, t))
        for sid in ("busy1", "busy2"):
            buf.put(_frame(sid, i + k, t))
    return sum(f.source_id == "waiting" for f in buf.take(3, deadline=0))


def test_a_source_whose_frames_were_dropped_as_stale_keeps_its_turns():
    """An idle source coming back gets about one frame of credit (no burst); one whose frames were
    thrown away as too old was not idle: it keeps several turns, so when its fresh frames come
    (slow cameras capturing together, of which only the first few make the SLO) it catches up."""
    idle, stale = _served_after_a_wait(stale=False), _served_after_a_wait(stale=True)
    assert idle <= 2 and stale == 3


def test_the_frame_lost_at_the_tail_of_each_burst_is_not_always_the_same_cameras():
    """Seven slow cameras capture together in the same order every time (their threads start in
    turn) and the engine runs six of each burst in time: the seventh in the fair order goes
    stale. A fixed tie order (oldest capture) made the last-capturing camera that seventh burst
    after burst (cam7 10 stale frames, cam2 none, in the mixed bench); losses now move a lane up
    among equals, so they spread over the cameras."""
    buf = FrameBuffer()
    slow = [f"s{k}" for k in range(7)]
    for sid in ["fast"] + slow:
        buf.add_source(sid, 8, drop_oldest=True)
    lost: Counter = Counter()
    t, i = 100.0, 0
    for _ in range(42):
        for k, sid in enumerate(slow):
            buf.put(_frame(sid, i, t + k * 0.001))
        for _ in range(6):
            assert len(buf.take(1, deadline=0)) == 1
        lost.update(f.source_id for f in buf.drop_stale(t + 1.0))
        for j in range(3):  # the fast camera has the engine between bursts
            buf.put(_frame("fast", i * 3 + j, t + 0.05 + j * 0.033))
            buf.take(1, deadline=0)
        t, i = t + 0.2, i + 1
    assert sum(lost.values()) == 42
    assert max(lost[sid] for sid in slow) - min(lost[sid] for sid in slow) <= 1, lost


def test_fair_preview_names_the_frames_an_overloaded_take_serves_and_which_sources_are_owed():
    buf = FrameBuffer()
    for sid in ("busy", "back"):
        buf.add_source(sid, 8, drop_oldest=True)
    for i in range(6):
        buf.put(_frame("busy", i, i * 0.01))
    buf.take(3, deadline=0)  # only "busy" was there: it was served, "back" was idle
    buf.put(_frame("back", 0, 0.06))
    buf.put(_frame("back", 1, 0.07))
    preview = buf.fair_preview(4)
    owed = {ts: o for ts, o in preview}
    assert owed[0.06] and not owed[0.03], "the source back from idle is owed, the one just served is not"
    assert sorted(ts for ts, _ in preview) == sorted(f.timestamp for f in buf.take(4, deadline=0))


def test_a_burst_of_slow_cameras_gets_every_frame_while_the_fast_one_takes_the_rest():
    """1 x 30 + 7 x 5 fps into an engine of about 60 fps (simulated clock, tools/mixed_sim.py): the
    slow cameras capture together and each is owed its whole 5 fps. Cut into the most efficient
    batches the end of each burst went stale (4.2-4.9 fps each); the batcher grows a batch by
    the owed frames that would miss the next one, so they get >= 4.75 while the aggregate holds."""
    import mixed_sim

    for seed in range(3):
        fps, p99_ms, _ = mixed_sim.run(per_ms=18.0, seed=seed, quiet=True)
        slow = [v for sid, v in fps.items() if sid != "cam0"]
        assert min(slow) >= 4.75, (seed, fps)
        assert sum(fps.values()) >= 58.0 and p99_ms <= 200, (seed, fps, p99_ms)


def _water_fill(rates: list[float], capacity: float) -> list[float]:
    """Max-min fair shares of `capacity` among sources offering `rates` fps."""
    shares, left, open_ = [0.0] * len(rates), capacity, sorted(range(len(rates)), key=lambda i: rates[i])
    while open_ and rates[open_[0]] <= left / len(open_):
        i = open_.pop(0)
        shares[i], left = rates[i], left - rates[i]
    for i in open_:
        shares[i] = left / len(open_)
    return shares


def test_sixteen_cameras_at_three_rates_each_get_their_share_on_an_engine_without_batching_gain():
    """2 x 30 + 6 x 10 + 8 x 5 fps (160 offered) into about 50 fps of an engine whose batches cost
    the sum of their frames (PP-OCRv4 det on this box), simulated. A batch of two finishes both
    frames when the second does: where that made the next owed camera's frame stale, a batch of one
    runs it in time, so the slow cameras no longer lose their turn (worst share 0.66-0.97 before)."""
    import mixed_sim

    rates = [30.0] * 2 + [10.0] * 6 + [5.0] * 8
    for seed in range(3):
        fps, p99_ms, _ = mixed_sim.run(per_ms=20.0, seed=seed, rates=rates, host_ms=1.0, fixed_ms=0.0, quiet=True)
        got = [fps.get(f"cam{k}", 0.0) for k in range(len(rates))]
        shares = _water_fill(rates, sum(got))
        assert min(g / s for g, s in zip(got, shares)) >= 0.9 and sum(got) >= 49.0, (seed, fps)
        assert p99_ms <= 200


def test_the_tail_of_a_burst_the_engine_cannot_finish_in_time_is_dropped_not_run_late():
    """12 x 5 fps cameras capturing together into an engine of about 60 fps (simulated): the last
    frames of each burst cannot make the 200 ms SLO. Running them anyway put p99 at 226-245 ms;
    dropped as stale (counted), p99 holds and every camera still gets the same share."""
    import mixed_sim

    for seed in range(2):
        fps, p99_ms, _ = mixed_sim.run(per_ms=18.0, seed=seed, rates=[5.0] * 12, quiet=True)
        assert p99_ms <= 200 and min(fps.values()) >= 0.95 * max(fps.values()), (seed, fps, p99_ms)


def test_take_within_capacity_keeps_every_frame_oldest_first():
    buf = FrameBuffer()
    buf.add_source("a", 10, drop_oldest=True)
    buf.add_source("b", 10, drop_oldest=True)
    buf.put(_frame("b", 0, 2.0))
    buf.put(_frame("a", 0, 1.0))
    assert [f.source_id for f in buf.take(5, 0)] == ["a", "b"]


@pytest.mark.parametrize("weight", [0, -1, float("nan"), float("inf")])
def test_weight_must_be_finite_and_positive(weight):
    with pytest.raises(ValueError, match="finite number > 0"):
        FrameBuffer().add_source("a", 4, drop_oldest=True, weight=weight)
    with pytest.raises(ConfigError, match="weight of source 'cam'.*finite number > 0"):
        Pipeline(FakeModel(), ["x"], weights={"cam": weight})


def test_weight_for_an_unknown_source_is_refused():
    with pytest.raises(ConfigError, match="unknown source.*nope"):
        run(FakeModel(), [ProducerSource([np.zeros((2, 2, 3), np.uint8)], "a")], weights={"nope": 2})


# ---------------------------------------------------------------------------- pipeline fairness
def test_eight_overloaded_cameras_each_get_their_share_and_every_drop_is_counted():
    """8 x 15 fps into a device that runs about 80 fps: every camera is served (the old
    global newest-N cut starved the same ones), each drop is counted per source."""
    srcs = [ProducerSource(_endless(k), f"cam{k}", live=True, fps=15) for k in range(8)]
    report = run(FakeModel(a_ms=4, c_ms=12), srcs, batching="adaptive", slo_ms=200, realtime=True, duration=4)
    per = report.stats["sources"]
    out = [per[f"cam{k}"]["frames_out"] for k in range(8)]
    # bench/stream.py holds the 1.1 target; here only starvation is checked, robust to a box
    # shared with other work (the old oldest-first + newest-N cut gave 1.8 on this fake, 0 frames in the issue)
    assert min(out) > 0 and max(out) / min(out) <= 1.5, out
    for sid, row in per.items():
        queued = report.stats["gauges"]["queued"].get(sid, 0)
        assert row["frames_in"] == row["frames_out"] + sum(row["drops"].values()) + queued, (sid, row)
        assert set(row["drops"]) <= {"stale", "superseded", "buffer_full", "aborted"}


def test_superseded_frames_are_counted_apart_from_stale_ones_and_every_drop_adds_up():
    """Two 60 fps cameras into an engine of about 25 fps: each loses frames it cannot get turns
    for; the admission rule supersedes them (newest kept) and counts them as 'superseded', the
    latency rule as 'stale'; per source in = out + drops + still queued, the run's table by
    reason is the sum of the sources', and the status line names the reason."""
    srcs = [ProducerSource(_endless(k), f"cam{k}", live=True, fps=60) for k in range(2)]
    report = run(FakeModel(a_ms=0, c_ms=40), srcs, batching="adaptive", slo_ms=300, realtime=True, duration=3)
    snap = report.stats
    per = snap["sources"]
    total: Counter = Counter()
    for sid, row in per.items():
        queued = snap["gauges"]["queued"].get(sid, 0)
        assert row["frames_in"] == row["frames_out"] + sum(row["drops"].values()) + queued, (sid, row)
        assert row["drops"].get("superseded", 0) > 0, (sid, row["drops"])
        total.update({f"{reason}:{sid}": n for reason, n in row["drops"].items()})
    assert {k: v for k, v in snap["drops"].items() if ":" in k} == dict(total)
    assert "superseded" in status_line(snap)


# ---------------------------------------------------------------------------- source states
class NeverConnects(Source):
    kind = "stream"
    reconnects = True

    def __init__(self) -> None:
        super().__init__("ghost", "rtsp://ghost/live", live=True)
        self.attempts = 0

    def open(self) -> None:
        self.attempts += 1
        raise SourceError("ghost: connection refused")

    def read(self):
        return None


def test_state_table_refuses_transitions_it_does_not_allow():
    st = SourceState("a")
    st.to("live")
    st.to("reconnecting")
    st.to("live")
    st.to("ended")
    with pytest.raises(IllegalTransition):
        st.to("live")


def test_a_source_added_while_running_that_never_connects_fails_visibly_not_as_a_zombie():
    ghost = NeverConnects()
    pipe = Pipeline(FakeModel(), [ProducerSource(_endless(), "cam", live=True, fps=50)], realtime=True,
                    reconnect=Backoff(initial=0.01, maximum=0.02, attempts=3))
    pipe.start()
    try:
        assert pipe.add_source(ghost) == "ghost"
        deadline = time.time() + 5
        while pipe.states["ghost"].state != "failed" and time.time() < deadline:
            time.sleep(0.02)
        snap = pipe.snapshot()
        assert snap["sources"]["ghost"]["state"] == "failed" and snap["sources"]["cam"]["state"] == "live"
        assert "never connected after 3 reconnect attempts" in snap["sources"]["ghost"]["reason"] or \
            ghost.attempts == 4
        assert "1 failed" in status_line(snap)
    finally:
        pipe.stop("test")
        assert pipe.wait(10)
    assert any("never connected" in e for e in pipe.report().source_errors)


def test_add_and_remove_a_source_on_a_running_pipeline_keeps_its_stats():
    got: Counter = Counter()
    pipe = Pipeline(FakeModel(), [ProducerSource(_endless(), "cam", live=True, fps=100)], realtime=True,
                    on_result=lambda f, r: got.update([f.source_id]))
    pipe.start()
    try:
        with pytest.raises(ConfigError, match="already in the pipeline"):
            pipe.add_source(ProducerSource(_endless(), "cam", live=True, fps=100))
        pipe.add_source(ProducerSource(_endless(9), "door", live=True, fps=100), weight=2)
        deadline = time.time() + 5
        while got["door"] < 10 and time.time() < deadline:
            time.sleep(0.02)
        pipe.remove_source("door")
        with pytest.raises(ConfigError, match="no running source named 'door'"):
            pipe.remove_source("door")
        time.sleep(0.2)  # what was in flight is delivered
        n, cam = got["door"], got["cam"]
        time.sleep(0.3)
        assert got["door"] == n and got["cam"] > cam and pipe.running  # door is gone, cam goes on
    finally:
        pipe.stop("test")
        pipe.wait(10)
    row = pipe.report().stats["sources"]["door"]
    assert row["frames_out"] >= 10 and row["state"] == "ended" and row["weight"] == 2.0
    with pytest.raises(ConfigError, match="running pipeline"):
        pipe.add_source(ProducerSource(_endless(), "late"))


# ---------------------------------------------------------------------------- honest streams
def test_missed_slo_is_said_with_its_cause_once(caplog):
    frames = [np.zeros((4, 4, 3), np.uint8)] * 150
    with caplog.at_level(logging.WARNING, logger="edgesdk.streaming"):
        report = run(FakeModel(a_ms=3, c_ms=1), [ProducerSource(frames, "clip")], batching="adaptive", slo_ms=5)
    slo = report.stats["slo"]
    assert slo["missed"] and slo["p99_ms"] > 5 and "files read as fast as possible" == slo["cause_short"]
    assert "latency target missed" in markdown(report.stats)
    assert sum("latency target missed" in r.message for r in caplog.records) == 1


def test_slo_met_is_not_reported_as_missed():
    srcs = [ProducerSource(_endless(), "cam", live=True, fps=30)]
    # a generous target: this checks the verdict, not the machine (shared, noisy)
    report = run(FakeModel(a_ms=1, c_ms=1), srcs, batching="adaptive", slo_ms=2000, realtime=True, duration=2.5)
    assert report.stats["slo"]["missed"] is False
    assert "SLO MISSED" not in status_line(report.stats)


def test_video_source_frames_carry_fps_and_position_and_the_video_sink_keeps_the_source_rate(tmp_path):
    clip = make_video(tmp_path / "clip.mp4", fps=15.0)
    positions = []
    out = tmp_path / "annotated.avi"
    report = run(FakeModel(a_ms=0.1, c_ms=0.1), [VideoFileSource(clip.path, "clip")], [str(out)],
                 on_result=lambda f, r: positions.append((f.meta["fps"], r.meta["position_s"])))
    assert report.stats["frames_out"] == len(clip)
    assert positions[0] == (15.0, 0.0) and positions[-1][1] == pytest.approx((len(clip) - 1) / 15.0, abs=1e-3)
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15.0, abs=0.01)  # not the processing rate
    cap.release()


def test_a_video_writer_that_cannot_open_fails_the_run_and_leaves_no_file(tmp_path):
    out = tmp_path / "out.mp4"
    frames = [np.zeros((32, 32, 3), np.uint8)] * 5
    with pytest.raises(SinkError, match="could not open a 'ZZZZ' writer"):
        run(FakeModel(), [ProducerSource(frames, "a")], [f"{out}?fourcc=ZZZZ&fps=10"])
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- from_spec
def test_from_spec_builds_sources_weights_and_batching():
    frames = [np.zeros((4, 4, 3), np.uint8)] * 3
    spec = {"model": FakeModel(), "sources": [{"id": "door", "uri": "x", "weight": 3}], "batching": "fixed",
            "batch": 2}
    pipe = Pipeline.from_spec(spec)
    assert pipe.weights == {"door": 3.0} and pipe.policy.max_batch == 2
    pipe = Pipeline.from_spec({"model": FakeModel(), "sources": [ProducerSource(frames, "a")]})
    assert pipe.run().stats["frames_out"] == 3


@pytest.mark.parametrize("spec, match", [
    ({"sources": ["0"]}, "'model'"),
    ({"model": "m", "sources": []}, "non-empty list"),
    ({"model": "m", "sources": [{"url": "x"}]}, "needs 'uri'"),
    ({"model": "m", "sources": [{"uri": "x", "weight": 2}]}, "no id"),
    ({"model": "m", "sources": [3.5]}, "string or a table"),
])
def test_from_spec_refuses_bad_descriptions(spec, match):
    with pytest.raises(ConfigError, match=match):
        Pipeline.from_spec(spec)


# ---------------------------------------------------------------------------- replicas
def test_replicas_above_the_cores_or_without_a_path_are_refused():
    from edgesdk.streaming.replicas import check_replicas, threads_per_replica
    with pytest.raises(ConfigError, match="--replicas 3 is more than the 2 CPU cores"):
        check_replicas(3, cores=2)
    with pytest.raises(ConfigError, match="more than the"):
        Pipeline(FakeModel(), ["x"], replicas=10_000)
    with pytest.raises(ConfigError, match="bundle directory or model file"):
        Pipeline(FakeModel(), ["x"], replicas=2) if __import__("os").cpu_count() >= 2 else check_replicas(0)
    assert threads_per_replica(2, None, cores=8) == 4 and threads_per_replica(2, 1, cores=8) == 1


def test_replicated_submit_spreads_batches_over_the_engines():
    """Two replicas run at once: each engine waits at a barrier for the other, which only
    passes if both batches are on their engines together (no timing assumptions)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from edgesdk.streaming.model import StreamModel
    from edgesdk.streaming.replicas import Replicated
    barrier = threading.Barrier(2, timeout=5)
    pools = [ThreadPoolExecutor(1) for _ in range(2)]
    used: list = []

    def engine(k):
        def submit(feeds):
            used.append(k)
            return pools[k].submit(lambda: barrier.wait() is not None and {"k": k})
        return StreamModel(lambda imgs: (imgs, []), submit, lambda o, t: [])

    rep = Replicated([engine(0), engine(1)])
    futs = [rep.submit(None) for _ in range(4)]
    assert [f.result(timeout=10)["k"] for f in futs] and sorted(used) == [0, 0, 1, 1]
    for p in pools:
        p.shutdown()


def test_a_video_added_to_a_realtime_pipeline_plays_at_its_own_rate(tmp_path):
    clip = make_video(tmp_path / "late.mp4", (("astronaut", 40),), fps=15.0)
    pipe = Pipeline(FakeModel(a_ms=0.5, c_ms=0.1), [ProducerSource(_endless(), "cam", live=True, fps=20)],
                    realtime=True, loop=True)
    pipe.start()
    try:
        pipe.add_source(f"late={clip.path}")
        time.sleep(1.5)
        got = pipe.snapshot()["sources"]["late"]["frames_in"]
    finally:
        pipe.stop("test")
        pipe.wait(10)
    assert 10 <= got <= 26  # ~1.5 s at 15 fps (its rate is known only once opened), not as fast as it decodes


def test_control_endpoint_adds_lists_and_removes_sources(tmp_path):
    import json as _json
    import urllib.error
    import urllib.request

    clip = make_video(tmp_path / "door.mp4", (("astronaut", 20),), fps=15.0)
    pipe = Pipeline(FakeModel(), [ProducerSource(_endless(), "cam", live=True, fps=30)], realtime=True,
                    control_port=0)
    pipe.start()
    base = f"http://127.0.0.1:{pipe.control.port}/sources"

    def call(method: str, url: str, body=None):
        req = urllib.request.Request(url, method=method, data=None if body is None else _json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, _json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, _json.loads(e.read())

    try:
        assert call("POST", base, {"uri": str(clip.path), "id": "door", "weight": 2}) == (201, {"id": "door"})
        assert call("POST", base, {"uri": str(clip.path), "id": "door"})[0] == 400  # name taken
        assert "finite number > 0" in call("POST", base, {"uri": str(clip.path), "id": "x", "weight": 0})[1]["error"]
        assert call("POST", base, {"nope": 1})[0] == 400
        time.sleep(0.5)
        status, states = call("GET", base)
        assert status == 200 and states["door"]["state"] in ("live", "ended") and states["cam"]["state"] == "live"
        assert call("DELETE", base + "/door")[0] in (200, 404)  # 404 if its 20 frames already ended
        assert call("DELETE", base + "/ghost")[0] == 404
    finally:
        pipe.stop("test")
        pipe.wait(10)
    assert pipe.report().stats["sources"]["door"]["frames_in"] > 0


def test_states_slo_and_cache_counts_become_prometheus_metrics():
    from edgesdk.sinks.prometheus import _SnapshotCollector
    frames = [np.zeros((4, 4, 3), np.uint8)] * 80
    report = run(FakeModel(a_ms=3), [ProducerSource(frames, "a")], batching="adaptive", slo_ms=5)
    collector = _SnapshotCollector("edgesdk_pipeline")
    collector.snapshot = report.stats
    metrics = {m.name: m for m in collector.collect()}
    assert metrics["edgesdk_pipeline_sources_a_state_code"].samples[0].value == 3  # ended
    assert metrics["edgesdk_pipeline_slo_missed"].samples[0].value == 1
    assert "edgesdk_pipeline_sources_a_cached" in metrics


def test_openvino_replicas_run_as_streams_of_one_engine_and_say_so(tmp_path, det_model):
    """--replicas 2 on OpenVINO: one compiled model with NUM_STREAMS 2 (auto), the same
    results as one engine on a real model and real photos, and the stats say how it ran."""
    pytest.importorskip("openvino")
    from edgesdk.presets import make_bundle
    from streamdata import frames as real_frames

    bundle = make_bundle(det_model, tmp_path / "det", size=(96, 96)).path
    imgs, _ = real_frames((("page", 3), ("coffee", 3)), size=(128, 128))
    out: dict = {}
    for label, kw in (("one", {}), ("streams", {"replicas": 2})):
        got: dict = {}
        pipe = Pipeline(str(bundle), [ProducerSource(list(imgs), "a"), ProducerSource(list(imgs), "b")],
                        batching="fixed", batch=2, backend="openvino", threads=1,
                        on_result=lambda f, r, g=got: g.setdefault((f.source_id, f.index), len(r)), **kw)
        rep = pipe.run(handle_signals=False)
        out[label] = (got, rep.stats["gauges"].get("engine"))
    engine = out["streams"][1]
    assert engine["mode"] == "streams" and engine["num_streams"] == 2 and engine["threads_total"] == 2
    assert engine["requests"] == 2  # two batches in the engine at once
    assert out["streams"][0] == out["one"][0] and len(out["one"][0]) == 12  # same boxes per frame
    with pytest.raises(ConfigError, match="replica-mode streams needs a backend"):
        Pipeline(str(bundle), ["x"], replicas=2, replica_mode="streams", backend="onnxruntime")
