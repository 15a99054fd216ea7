"""free_drops: which of a live source's older frames may be superseded at no cost to it."""
from collections import Counter, deque

import numpy as np

from edgesdk.results import Frame
from edgesdk.streaming.admission import LaneState, Schedule, expected_next, free_drops
from edgesdk.streaming.buffer import FrameBuffer


def _lane(stamps, interval, droppable=True):
    return LaneState(stamps=deque(stamps), pass_=0.0, step=1.0, credit=1.0, stale_credit=4.0,
                     next_capture=stamps[-1] + interval, interval=interval, droppable=droppable)


def test_a_lane_the_engine_catches_up_with_keeps_its_older_frames():
    # 30 fps camera, engine at 100 frames/s: its queue runs dry before any frame is late
    lane = _lane([0.0, 1 / 30, 2 / 30], 1 / 30)
    plan = Schedule(first_done=0.10, batch_s=0.01, size=1, keep_s=0.2, horizon_s=1.0)
    assert free_drops([lane], plan, vt=0.0) == [0]


def test_lanes_offering_more_than_their_turns_may_drop_what_would_go_stale():
    # two 30 fps cameras sharing an engine of 10 frames/s: each gets 5 turns a second
    lanes = [_lane([0.0, 1 / 30, 2 / 30], 1 / 30), _lane([0.01, 0.04, 0.07], 1 / 30)]
    plan = Schedule(first_done=0.10, batch_s=0.1, size=1, keep_s=0.2, horizon_s=1.0)
    drops = free_drops(lanes, plan, vt=0.0)
    assert all(d > 0 for d in drops), drops


def test_a_lossless_lane_never_counts_frames_as_stale():
    lanes = [_lane([0.0, 1 / 30, 2 / 30], 1 / 30, droppable=False)]
    plan = Schedule(first_done=0.10, batch_s=0.5, size=1, keep_s=0.05, horizon_s=1.0)
    assert free_drops(lanes, plan, vt=0.0) == [0]


def test_no_next_frame_is_expected_from_an_ended_or_unmeasured_source():
    assert expected_next(1.0, 0.1, live=True, ended=True) == float("inf")
    assert expected_next(None, 0.1, live=True, ended=False) == float("inf")
    assert expected_next(1.0, 0.1, live=True, ended=False) == 1.1


# ---------------------------------------------------------------------------- through the buffer
def _buffer_with(lanes, now):
    """A FrameBuffer whose lanes captured at `interval` up to `now`: {sid: (interval, queued, weight)}."""
    buf = FrameBuffer()
    for sid, (interval, queued, weight) in lanes.items():
        buf.add_source(sid, 64, drop_oldest=True, weight=weight)
        for i in range(queued):
            buf.put(Frame(sid, i, now - (queued - 1 - i) * interval, np.zeros((2, 2, 3), np.uint8)))
    return buf


def _cuts(buf, plan):
    return Counter(f.source_id for f in buf.supersede(1, plan))


def test_the_buffer_cuts_only_the_source_over_its_share():
    # engine of 25 fps in batches of 1; a 30 fps camera and a 5 fps one: the light one gets all
    # it offers (its queue runs dry, so it keeps its older frame), the heavy one the rest (20 of
    # its 30 fps): it would lose frames to staleness, so it is cut
    now = 100.0
    buf = _buffer_with({"heavy": (1 / 30, 6, 1.0), "light": (1 / 5, 2, 1.0)}, now)
    plan = Schedule(first_done=now + 0.04, batch_s=0.04, size=1, keep_s=0.3, horizon_s=2.0)
    cuts = _cuts(buf, plan)
    assert cuts["light"] == 0 and cuts["heavy"] > 0, cuts
    assert buf.sizes()["light"] == 2 and buf.sizes()["heavy"] == 6 - cuts["heavy"]


def test_nothing_is_cut_when_the_engine_keeps_up():
    now = 100.0
    buf = _buffer_with({"a": (1 / 30, 4, 1.0), "b": (1 / 30, 4, 1.0)}, now)
    plan = Schedule(first_done=now + 0.01, batch_s=0.01, size=1, keep_s=0.15, horizon_s=2.0)
    assert sum(_cuts(buf, plan).values()) == 0 and buf.queued == 8


def test_a_weight_of_two_moves_the_cut_to_the_other_source():
    # two 30 fps cameras into an engine of 50 fps: equal weights split it 25/25, both lose
    # frames to staleness and both are cut; with a weight of 2 one gets 33 > 30, i.e. all it
    # offers (kept whole), and the other gets 20 (cut deeper than with equal weights)
    now = 100.0
    plan = Schedule(first_done=now + 0.02, batch_s=0.02, size=1, keep_s=0.3, horizon_s=2.0)
    equal = _cuts(_buffer_with({"a": (1 / 30, 4, 1.0), "b": (1 / 30, 4, 1.0)}, now), plan)
    weighted = _cuts(_buffer_with({"a": (1 / 30, 4, 2.0), "b": (1 / 30, 4, 1.0)}, now), plan)
    assert equal["a"] > 0 and equal["b"] > 0, equal
    assert weighted["a"] == 0 and weighted["b"] >= equal["b"], (equal, weighted)
