"""free_drops: which of a live source's older frames may be superseded at no cost to it."""
from collections import deque

from edgesdk.streaming.admission import LaneState, Schedule, expected_next, free_drops


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
