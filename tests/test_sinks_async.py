"""AsyncSink: a slow or stuck sink never blocks the writer; drops are counted; memory is bounded."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edgesdk.errors import SinkError
from edgesdk.results import Frame, Result
from edgesdk.sinks import AsyncSink, CallbackSink

WRITE_BOUND_S = 0.25  # generous: a blocking write would take as long as the sink is held (forever)


def item(i: int, image: np.ndarray) -> tuple[Frame, Result]:
    return Frame("cam0", i, float(i), image), Result(source_id="cam0", frame_index=i, timestamp=float(i))


class Gate:
    """A sink callback that blocks until released, recording what it got."""

    def __init__(self, delay: float = 0.0) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.got: list[int] = []
        self.delay = delay

    def __call__(self, frame, result) -> None:
        self.entered.set()
        self.release.wait(30)
        if self.delay:
            time.sleep(self.delay)
        self.got.append(result.frame_index)


@pytest.fixture(scope="module")
def image(photos):
    import cv2
    return cv2.resize(photos["astronaut"], (320, 240))


@pytest.mark.parametrize("drop", ["oldest", "newest"])
def test_stuck_sink_never_blocks_the_writer_and_drops_are_counted(image, drop):
    gate = Gate()
    sink = AsyncSink(CallbackSink(gate), maxsize=8, drop=drop)
    sink.open()
    sink.write(*item(0, image))
    assert gate.entered.wait(10)  # the worker holds result 0 inside the stuck sink
    times = []
    for i in range(1, 101):
        t0 = time.perf_counter()
        sink.write(*item(i, image))
        times.append(time.perf_counter() - t0)
    stats = sink.stats
    assert max(times) < WRITE_BOUND_S, f"a write blocked for {max(times):.3f} s"
    assert stats["queued"] == 8 and stats["high_water"] == 8  # bounded: memory is 8 frames
    assert stats["dropped"] == 100 - 8 and stats["written"] == 0
    gate.release.set()
    sink.close()
    expected = list(range(93, 101)) if drop == "oldest" else list(range(1, 9))
    assert gate.got == [0] + expected
    assert sink.stats["written"] == 9 and sink.stats["dropped"] == 92
    print(f"\nAsyncSink drop={drop}: 100 writes into a stuck sink, max write {max(times) * 1e3:.3f} ms, "
          f"mean {np.mean(times) * 1e6:.1f} us")


def test_slow_sink_keeps_the_producer_at_its_pace(image):
    """A producer at ~200/s into a sink that takes 20 ms a write: the producer keeps its pace,
    the sink gets what it can, the rest is dropped and counted."""
    got = []
    sink = AsyncSink(CallbackSink(lambda f, r: (time.sleep(0.02), got.append(r.frame_index))), maxsize=4)
    worst = 0.0
    with sink:
        for i in range(100):
            t0 = time.perf_counter()
            sink.write(*item(i, image))
            worst = max(worst, time.perf_counter() - t0)
            time.sleep(0.005)
            assert sink.stats["queued"] <= 4
    stats = sink.stats
    assert worst < WRITE_BOUND_S
    assert stats["dropped"] > 0 and stats["written"] + stats["dropped"] == 100
    assert got == sorted(got) and got[-1] == 99  # in order, and the freshest got through (drop oldest)


def test_block_policy_applies_back_pressure_and_drops_nothing(image):
    """For offline runs over files: the writer waits for room instead of dropping."""
    got = []
    sink = AsyncSink(CallbackSink(lambda f, r: (time.sleep(0.005), got.append(r.frame_index))), maxsize=3,
                     drop="block")
    with sink:
        for i in range(40):
            sink.write(*item(i, image))
            assert sink.stats["queued"] <= 3
    assert got == list(range(40)) and sink.stats["dropped"] == 0 and sink.stats["high_water"] == 3


def test_block_policy_writer_is_released_by_close(image):
    gate = Gate()
    sink = AsyncSink(CallbackSink(gate), maxsize=1, drop="block", close_timeout=0.2)
    sink.open()
    sink.write(*item(0, image))
    assert gate.entered.wait(10)
    sink.write(*item(1, image))  # fills the queue
    writer = threading.Thread(target=sink.write, args=item(2, image))
    writer.start()
    writer.join(0.2)
    assert writer.is_alive()  # waiting for room
    with pytest.raises(SinkError, match="did not return"):
        sink.close()  # the stuck sink never frees room; close gives up on it
    writer.join(5)
    assert not writer.is_alive() and sink.stats["dropped"] == 2  # the queued one and the blocked one
    gate.release.set()


def test_close_drains_the_queue(image):
    got = []
    sink = AsyncSink(CallbackSink(lambda f, r: (time.sleep(0.002), got.append(r.frame_index))), maxsize=64)
    with sink:
        for i in range(50):
            sink.write(*item(i, image))
    assert got == list(range(50)) and sink.stats["written"] == 50 and sink.stats["queued"] == 0


def test_close_timeout_drops_what_is_left_and_closes_the_sink(image):
    closed = []

    class Slow(CallbackSink):
        def _close_impl(self):
            closed.append(True)

    sink = AsyncSink(Slow(lambda f, r: time.sleep(0.05)), maxsize=100)
    sink.open()
    for i in range(40):
        sink.write(*item(i, image))
    sink.close(timeout=0.2)
    stats = sink.stats
    assert closed == [True]
    assert 0 < stats["written"] < 40 and stats["written"] + stats["dropped"] == 40


def test_close_raises_when_a_write_never_returns(image):
    gate = Gate()
    sink = AsyncSink(CallbackSink(gate), maxsize=4, close_timeout=0.2)
    sink.open()
    for i in range(3):
        sink.write(*item(i, image))
    assert gate.entered.wait(10)
    with pytest.raises(SinkError, match="did not return"):
        sink.close()
    assert sink.stats["dropped"] == 2  # the queued ones
    gate.release.set()


def test_worker_survives_sink_errors(image):
    def flaky(f, r):
        if r.frame_index % 3 == 0:
            raise OSError("disk hiccup")

    sink = AsyncSink(CallbackSink(flaky), maxsize=64)
    with sink:
        for i in range(30):
            sink.write(*item(i, image))
    stats = sink.stats
    assert stats["errors"] == 10 and stats["written"] == 20
    assert isinstance(sink.last_error, SinkError) and "disk hiccup" in str(sink.last_error)


def test_worker_survives_a_buggy_sink(image):
    class Buggy(CallbackSink):
        def _write_impl(self, frame, result):
            if result.frame_index == 1:
                raise KeyError("bug")  # not a SinkError: a programming error in a sink

    sink = AsyncSink(Buggy(print), maxsize=8)
    with sink:
        for i in range(4):
            sink.write(*item(i, image))
    assert sink.stats["errors"] == 1 and sink.stats["written"] == 3
    assert isinstance(sink.last_error, KeyError)


def test_open_errors_reach_the_caller(tmp_path):
    from edgesdk.sinks import JsonlSink

    sink = AsyncSink(JsonlSink(tmp_path))  # a folder: cannot open
    with pytest.raises(SinkError, match="cannot open JSONL"):
        sink.open()


def test_abort_discards_the_queue_and_aborts_the_sink(tmp_path, image):
    from edgesdk.sinks.video import VideoSink

    gate = Gate()

    class SlowVideo(VideoSink):
        def _write_impl(self, frame, result):
            gate(frame, result)
            super()._write_impl(frame, result)

    out = tmp_path / "v.mp4"
    sink = AsyncSink(SlowVideo(out, fps=10), maxsize=16)
    sink.open()
    for i in range(10):
        sink.write(*item(i, image))
    assert gate.entered.wait(10)
    gate.release.set()
    sink.abort()
    assert sink.stats["dropped"] >= 1
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no partial file
