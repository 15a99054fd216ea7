"""Bounded frame buffers between the source threads and the batcher.

One lane per source, all behind one lock and condition, so the batcher can wait for
"N frames from any source". When everything queued fits in the batch it is taken oldest
first; when it does not (overload), lanes are served by weighted fair queueing (stride
scheduling): each lane has a pass value that grows by 1/weight per frame served, and the
lane with the lowest pass goes next (ties: the oldest frame). A camera that offers
little is served whenever it has a frame, the others share the rest in proportion to
their weights (max-min fairness), however the capture phases line up with the batcher
(oldest-first would always favour the same cameras, and a global "newest N" cut always
starves the same ones). An idle lane's credit is capped at one frame, so a source that
comes back cannot take a burst; a lane that was not idle but had its frames dropped as too
old for the latency target (the batcher's `drop_stale`) keeps up to STALE_CREDIT frames of
credit, so it goes first the next time it has a fresh frame (otherwise the sources that lose
frames to staleness, e.g. slow cameras whose frames arrive together, would lose their turn
too, and the ones served most would take the engine). Among lanes with equal credit the
least served goes first, then the oldest frame. A live lane
(camera, stream) drops its oldest frame when full, so a slow consumer never makes a
camera fall behind real time; each drop is counted. A lossless lane (file, folder)
blocks its producer instead. Memory is bounded by the sum of the lane capacities.
"""
from __future__ import annotations

import heapq
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..results import Frame
from .admission import LaneState, Schedule, expected_next, fair_key, free_drops

#: frames of credit a lane keeps while its frames are dropped as stale (an idle lane keeps 1)
STALE_CREDIT = 4.0
#: seconds over which a lane's frames lost to staleness fade from the tie-break (e-folding time)
LOSS_MEMORY_S = 20.0


@dataclass
class _Lane:
    source_id: str
    capacity: int
    drop_oldest: bool
    frames: deque = field(default_factory=deque)
    ended: bool = False
    dropped: int = 0
    received: int = 0
    high_water: int = 0
    #: share under overload (fair queueing); 1.0 for every lane is an even split
    weight: float = 1.0
    #: stride scheduling: grows by 1/weight per frame served; the lowest goes next
    pass_: float = 0.0
    #: frames were dropped as stale since it was last served (it keeps more credit)
    starved: bool = False
    #: capture time of its latest frame and the seconds between its frames (EWMA)
    last_capture: Optional[float] = None
    interval: float = 0.0
    #: frames lost to staleness, fading over LOSS_MEMORY_S, as of `lost_at` (the tie-break)
    lost: float = 0.0
    lost_at: float = 0.0

    def recent_losses(self, now: float) -> float:
        return self.lost * math.exp(-(now - self.lost_at) / LOSS_MEMORY_S) if self.lost else 0.0


class FrameBuffer:
    """Per-source bounded queues of `Frame`s.

    Args:
        on_drop: called as ``on_drop(source_id, n)`` (outside no lock: keep it cheap) when a
            live lane drops frames.
        rate_window: how many recent arrivals the arrival-rate estimate looks at.
    """

    def __init__(self, on_drop: Optional[Callable[[str, int], None]] = None, rate_window: int = 64) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._lanes: dict[str, _Lane] = {}
        self._count = 0
        self._closed = False
        self._on_drop = on_drop
        self._arrivals: deque[float] = deque(maxlen=rate_window)
        self._vt = 0.0  # virtual time: the pass value of the last frame served

    # ------------------------------------------------------------------ producers
    def add_source(self, source_id: str, capacity: int, drop_oldest: bool, weight: float = 1.0) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity for {source_id!r} must be >= 1, got {capacity}")
        if not weight > 0 or weight == float("inf"):
            raise ValueError(f"weight of source {source_id!r} must be a finite number > 0, got {weight}")
        with self._cond:
            if source_id in self._lanes:
                raise ValueError(f"source id {source_id!r} is used twice; give each source its own name")
            self._lanes[source_id] = _Lane(source_id, capacity, drop_oldest, weight=float(weight))
            self._cond.notify_all()

    def remove_source(self, source_id: str) -> list[Frame]:
        """Forget a source's lane (it was removed from a running pipeline); returns the
        frames it still held so the caller can count them."""
        with self._cond:
            lane = self._lanes.pop(source_id, None)
            if lane is None:
                return []
            self._count -= len(lane.frames)
            self._cond.notify_all()
            return list(lane.frames)

    def put(self, frame: Frame, timeout: Optional[float] = None) -> bool:
        """Add a frame. Live lanes never block; lossless lanes wait for room.

        Returns False when the buffer was closed (or `timeout` passed) before the frame
        could be added: the producer should stop.
        """
        dropped = 0
        with self._cond:
            lane = self._lanes[frame.source_id]
            self._arrivals.append(time.time())
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._closed and len(lane.frames) >= lane.capacity:
                if lane.drop_oldest:
                    lane.frames.popleft()
                    lane.dropped += 1
                    self._count -= 1
                    dropped += 1
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            if self._closed:
                return False
            lane.frames.append(frame)
            lane.received += 1
            self._note_capture(lane, frame.timestamp)
            lane.high_water = max(lane.high_water, len(lane.frames))
            self._count += 1
            self._cond.notify_all()
        if dropped and self._on_drop is not None:
            self._on_drop(frame.source_id, dropped)
        return True

    @staticmethod
    def _note_capture(lane: _Lane, ts: float) -> None:
        """Track the lane's capture interval (lock held): where its next frame is expected."""
        if lane.last_capture is not None and ts > lane.last_capture:
            dt = ts - lane.last_capture
            lane.interval = dt if lane.interval <= 0 else lane.interval + 0.2 * (dt - lane.interval)
        lane.last_capture = ts

    def end(self, source_id: str) -> None:
        """The source has no more frames (EOF, or it was stopped)."""
        with self._cond:
            self._lanes[source_id].ended = True
            self._cond.notify_all()

    def close(self) -> None:
        """Wake everyone: producers stop, `take` returns what is left without waiting."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ consumer
    def _exhausted(self) -> bool:
        return self._count == 0 and (self._closed or all(l.ended for l in self._lanes.values()))

    def wait_any(self, timeout: Optional[float] = None) -> bool:
        """Wait until a frame is queued; False on timeout or when nothing more will come."""
        with self._cond:
            if self._count == 0 and not self._exhausted():
                self._cond.wait_for(lambda: self._count > 0 or self._exhausted(), timeout)
            return self._count > 0

    def take(self, n: int, deadline: Optional[float] = None) -> list[Frame]:
        """Wait until `n` frames are queued or until `deadline` (time.time()), then take
        up to `n`, oldest capture first across sources.

        Returns early when every source has ended or the buffer is closed. `deadline`
        None waits for `n` frames (or the end).
        """
        with self._cond:
            while self._count < n and not self._closed and not all(l.ended for l in self._lanes.values()):
                if deadline is None:
                    self._cond.wait(0.5)
                    continue
                remaining = deadline - time.time()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken = self._take_all() if self._count <= n else self._take_fair(n)
            self._count -= len(taken)
            if taken:
                self._cond.notify_all()  # room for blocked producers
            return taken

    def _start(self, lane: _Lane) -> float:
        """The lane's pass as the scheduler sees it: its credit capped (lock held)."""
        return _credited(lane.pass_, lane.starved, self._vt)

    def _serve(self, lane: _Lane) -> Frame:
        """Pop the lane's oldest frame and advance its pass (lock held)."""
        start = self._start(lane)
        lane.pass_ = start + 1.0 / lane.weight
        lane.starved = False
        self._vt = max(self._vt, start)
        return lane.frames.popleft()

    def _next_lane(self) -> Optional[_Lane]:
        """The backlogged lane with the lowest pass (ties: the most frames lost to staleness
        lately, the least served, then the oldest head frame; lock held)."""
        backlogged = [lane for lane in self._lanes.values() if lane.frames]
        if not backlogged:
            return None
        now = time.time()
        return min(backlogged,
                   key=lambda l: fair_key(self._start(l), l.recent_losses(now), l.pass_, l.frames[0].timestamp))

    def _take_all(self) -> list[Frame]:
        """Everything queued, oldest capture first across sources (lock held)."""
        taken: list[Frame] = []
        heads = [(lane.frames[0].timestamp, i, lane) for i, lane in enumerate(self._lanes.values()) if lane.frames]
        heapq.heapify(heads)
        while heads:
            _, i, lane = heapq.heappop(heads)
            taken.append(self._serve(lane))
            if lane.frames:
                heapq.heappush(heads, (lane.frames[0].timestamp, i, lane))
        return taken

    def _take_fair(self, n: int) -> list[Frame]:
        """`n` of more queued frames, the lowest pass first (lock held; see module doc)."""
        taken: list[Frame] = []
        while len(taken) < n:
            lane = self._next_lane()
            if lane is None:
                break
            taken.append(self._serve(lane))
        taken.sort(key=lambda f: f.timestamp)
        return taken

    def drop_stale(self, before: Optional[float]) -> list[Frame]:
        """Remove frames of live lanes captured before `before` (they would miss the latency
        target anyway); lossless lanes keep every frame. Returns the removed frames."""
        stale: list[Frame] = []
        with self._cond:
            now = time.time()
            for lane in self._lanes.values():
                lost = 0
                while lane.drop_oldest and lane.frames and before is not None and lane.frames[0].timestamp < before:
                    stale.append(lane.frames.popleft())
                    lost += 1
                if lost:
                    lane.starved = True
                    lane.lost, lane.lost_at = lane.recent_losses(now) + lost, now
            self._remove_counted(len(stale))
        return stale

    def supersede(self, keep_newest: int, schedule: Optional[Schedule] = None) -> list[Frame]:
        """Overload: cut each live lane to its newest `keep_newest` frames (an older frame is
        superseded by a newer one of the same camera); lossless lanes keep every frame. With
        `schedule` (the engine's predicted next batches) a lane is cut only as far as that
        costs it no frame: by the frames it would lose to staleness anyway before its queue
        runs dry (`admission`); the others keep their older frames to fill the engine's idle
        time. Returns the removed frames."""
        cut: list[Frame] = []
        with self._cond:
            counts = self._supersede_counts(schedule) if schedule is not None else {}
            for lane in self._lanes.values():
                excess = len(lane.frames) - max(1, keep_newest)
                n = min(excess, counts.get(lane.source_id, excess)) if lane.drop_oldest else 0
                for _ in range(max(0, n)):
                    cut.append(lane.frames.popleft())
            self._remove_counted(len(cut))
        return cut

    def _remove_counted(self, n: int) -> None:
        """`n` frames were taken out of the lanes other than by `take` (lock held)."""
        self._count -= n
        if n:
            self._cond.notify_all()

    def _supersede_counts(self, schedule: Schedule) -> dict[str, int]:
        """Per lane, how many of its oldest frames may be superseded for free (lock held)."""
        ids, now = list(self._lanes), time.time()
        states = [LaneState(deque(f.timestamp for f in lane.frames), self._start(lane), 1.0 / lane.weight,
                            STALE_CREDIT if lane.starved else 1.0, STALE_CREDIT,
                            expected_next(lane.last_capture, lane.interval, lane.drop_oldest, lane.ended),
                            lane.interval, lane.drop_oldest, lane.recent_losses(now))
                  for lane in self._lanes.values()]
        return dict(zip(ids, free_drops(states, schedule, self._vt)))

    # ------------------------------------------------------------------ state
    @property
    def queued(self) -> int:
        return self._count

    @property
    def exhausted(self) -> bool:
        """Nothing queued and nothing more will come."""
        with self._cond:
            return self._exhausted()

    def oldest_timestamp(self) -> Optional[float]:
        with self._cond:
            heads = [l.frames[0].timestamp for l in self._lanes.values() if l.frames]
            return min(heads) if heads else None

    def queue_times(self) -> tuple[tuple[float, ...], Optional[float]]:
        """(capture times of all queued frames, oldest first; oldest of the lossless lanes)."""
        with self._cond:
            stamps = sorted(f.timestamp for l in self._lanes.values() for f in l.frames)
            lossless = [l.frames[0].timestamp for l in self._lanes.values() if l.frames and not l.drop_oldest]
            return tuple(stamps), (min(lossless) if lossless else None)

    def arrival_rate(self, now: Optional[float] = None) -> float:
        """Frames per second arriving from all sources (recent window, drops included)."""
        with self._cond:
            if len(self._arrivals) < 2:
                return 0.0
            now = time.time() if now is None else now
            first, last = self._arrivals[0], self._arrivals[-1]
            # a stalled source lowers the rate as time passes without arrivals
            span = max(last - first, 1e-6) + max(0.0, now - last - (last - first) / (len(self._arrivals) - 1))
            return (len(self._arrivals) - 1) / span

    def fair_preview(self, n: int) -> tuple[tuple[float, bool], ...]:
        """The first `n` queued frames in the order an overloaded `take` serves them: (capture
        time, owed) each, `owed` when its lane's credit puts it before the virtual time (served
        less than its share lately: a camera back after idling or after losing frames to
        staleness). Nothing is taken."""
        with self._cond:
            vt, now = self._vt, time.time()
            turns = [[lane, 0, lane.pass_, lane.starved] for lane in self._lanes.values() if lane.frames]
            out: list[tuple[float, bool]] = []
            while len(out) < n:
                open_ = [t for t in turns if t[1] < len(t[0].frames)]
                if not open_:
                    break
                turn = min(open_, key=lambda t: fair_key(_credited(t[2], t[3], vt), t[0].recent_losses(now), t[2],
                                                         t[0].frames[t[1]].timestamp))
                lane, i, pass_, starved = turn
                start = _credited(pass_, starved, vt)
                out.append((lane.frames[i].timestamp, start < vt))
                turn[1:] = [i + 1, start + 1.0 / lane.weight, False]
                vt = max(vt, start)
            return tuple(out)

    def next_fair_newest(self) -> Optional[float]:
        """Capture time of the newest frame of the lane that is served next (lowest pass)."""
        with self._cond:
            lane = self._next_lane()
            return lane.frames[-1].timestamp if lane is not None else None

    def active_lanes(self) -> int:
        """Lanes holding at least one frame (the overload split is over these)."""
        with self._cond:
            return sum(1 for lane in self._lanes.values() if lane.frames)

    def sizes(self) -> dict[str, int]:
        with self._cond:
            return {sid: len(l.frames) for sid, l in self._lanes.items()}

    def high_water(self) -> dict[str, int]:
        """Most frames each lane ever held (memory bound evidence)."""
        with self._cond:
            return {sid: l.high_water for sid, l in self._lanes.items()}

    def capacities(self) -> dict[str, int]:
        with self._cond:
            return {sid: l.capacity for sid, l in self._lanes.items()}

    def dropped(self) -> dict[str, int]:
        with self._cond:
            return {sid: l.dropped for sid, l in self._lanes.items()}


def _credited(pass_: float, starved: bool, vt: float) -> float:
    """A lane's pass with its credit capped: one frame below the virtual time `vt` for a lane
    back from idle, STALE_CREDIT for one that lost frames to staleness."""
    return max(pass_, vt - (STALE_CREDIT if starved else 1.0))
