"""Which of a live source's older frames may be superseded by its newer ones without the
source getting fewer frames processed.

Under overload the batcher would rather run each camera's newest frame (lower latency)
than its older ones. Dropping an older frame is free only where the source would lose a
frame anyway: its frames keep coming faster than it gets turns, so one of them would go
stale before its turn; dropping the oldest now moves the others one turn earlier and
saves that one. Where the source's queue runs dry before it loses any (a 30 fps camera
the engine catches up with once a burst of slower cameras is served), its older frames
are what keeps the engine busy meanwhile: superseding them costs frames and leaves the
engine idle.

`free_drops` answers that by simulating the engine's next batches as the batcher predicts
them: the fair order of the buffer (stride scheduling, as `FrameBuffer` serves lanes),
each lane's queued frames plus the frames it is expected to capture at its measured
interval, a frame served if its result is out within `keep_s` of its capture, otherwise
stale. A lane's free drops are the frames it would lose to staleness before its queue
first runs dry.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Optional

#: simulated batches at most (the horizon normally ends first)
MAX_BATCHES = 256


@dataclass(frozen=True)
class Schedule:
    """The engine's next batches as the batcher predicts them (times are time.time())."""

    first_done: float  # when the batch going now is expected out
    batch_s: float  # predicted time of each later batch of `size` frames
    size: int
    keep_s: float  # a frame is in time if its result is out within this of its capture
    horizon_s: float  # expected captures are simulated up to this long after first_done


@dataclass
class LaneState:
    """One lane as the simulation needs it (a snapshot; the simulation changes it)."""

    stamps: deque  # capture times of the queued frames, oldest first
    pass_: float  # its stride-scheduling pass, credit cap applied
    step: float  # pass added per frame served (1 / weight)
    credit: float  # how far below the virtual time its pass may start (1 idle, more if starved)
    stale_credit: float  # the credit of a lane that just lost a frame to staleness
    next_capture: float  # when its next frame is expected (inf: none expected)
    interval: float  # seconds between its frames
    droppable: bool = True  # live (a lossless lane's frames are never stale)
    losses: float = 0.0  # frames lost to staleness lately (ties go to the lane that lost most)


def fair_key(start: float, losses: float, pass_: float, head: float) -> tuple[float, float, float, float]:
    """Where a lane stands in the fair order, lowest first: its credited pass, then (ties) the most
    frames lost to staleness lately, the least served, the oldest head frame. `FrameBuffer` serves
    lanes by it and `free_drops` simulates that, so the two cannot drift apart."""
    return start, -losses, pass_, head


def free_drops(lanes: list[LaneState], schedule: Schedule, vt: float) -> list[int]:
    """For each lane, how many frames it would lose to staleness before its queue first
    runs dry: that many of its oldest queued frames can be dropped now without the lane
    getting fewer frames processed (see the module doc). `vt`: the buffer's virtual time."""
    lost = [0] * len(lanes)
    dry = [not lane.stamps for lane in lanes]
    end = schedule.first_done + schedule.horizon_s
    t_done = schedule.first_done
    for _ in range(MAX_BATCHES):
        t_take = t_done - schedule.batch_s
        if t_take > end:
            break
        for i, lane in enumerate(lanes):
            while lane.next_capture <= t_take:
                lane.stamps.append(lane.next_capture)
                lane.next_capture += lane.interval
            dry[i] = dry[i] or not lane.stamps
        if all(dry):
            break
        vt, served = _fill_batch(lanes, schedule, vt, t_done, lost, dry)
        if served:
            t_done += schedule.batch_s
            continue
        nxt = min(lane.next_capture for lane in lanes)
        if math.isinf(nxt):
            break
        t_done = max(t_done, nxt + schedule.batch_s)  # the engine idles until the next capture
    return lost


def _fill_batch(lanes: list[LaneState], schedule: Schedule, vt: float, t_done: float, lost: list[int],
                dry: list[bool]) -> tuple[float, int]:
    """Serve one simulated batch finishing at `t_done` in the fair order; frames that would
    be out too late are counted in `lost` (while their lane has not run dry). Returns
    (virtual time, frames served)."""
    served = 0
    while served < schedule.size:
        open_ = [i for i, lane in enumerate(lanes) if lane.stamps]
        if not open_:
            break
        i = min(open_, key=lambda k: fair_key(_start(lanes[k], vt), lanes[k].losses, lanes[k].pass_,
                                              lanes[k].stamps[0]))
        lane = lanes[i]
        ts = lane.stamps.popleft()
        if lane.droppable and t_done - ts > schedule.keep_s:
            if not dry[i]:
                lost[i] += 1
            lane.credit = lane.stale_credit
            lane.losses += 1
            continue
        start = _start(lane, vt)
        lane.pass_, lane.credit = start + lane.step, 1.0
        vt = max(vt, start)
        served += 1
    return vt, served


def _start(lane: LaneState, vt: float) -> float:
    return max(lane.pass_, vt - lane.credit)


def expected_next(last: Optional[float], interval: float, live: bool, ended: bool) -> float:
    """When a lane's next frame is expected (inf: not known or none coming)."""
    if not live or ended or last is None or interval <= 0:
        return math.inf
    return last + interval
