"""Batching policies: how many queued frames go into the next inference call, and how
long to wait for them.

- ``none``: every frame alone, at once.
- ``fixed``: N frames; with ``max_wait`` a partial batch leaves when its oldest frame
  has waited that long (Triton's max_queue_delay, nvstreammux's batched-push-timeout),
  without it the batcher waits for N (or the end of the sources).
- ``adaptive``: keeps end-to-end latency within an SLO by itself. It learns online how
  long a batch of b frames takes on this device and model (`LatencyCurve`: per-size
  EWMA, interpolated between measured sizes, a fitted line t(b) = a + c*b beyond them,
  and a probe one size up now and then so the curve is measured, not assumed). For each
  batch it picks the largest size whose queueing (frames still to arrive at the measured
  rate, the device's backlog) plus processing keeps the oldest frame within the budget,
  unless a smaller size gives more frames per second (overloaded: the smallest that
  gives about as many, within 2 %: a bigger batch would only add latency). It batches just in time: while the
  device is busy it waits and plans again shortly before the device frees up, with the
  freshest frames. Frames of live sources that can no longer make the SLO are dropped as
  ``stale`` (counted) rather than making every later frame late too; a backlog of
  lossless frames (a file) is drained at the best throughput. Observed violations shrink
  the budget (multiplicative back-off) and compliant batches grow it back slowly (AIMD);
  and it plans with the device time of its p99 (the 99th percentile of actual / predicted
  over the recent batches), so a device shared with other work gets smaller, safer batches
  and the frames it keeps make the SLO at the p99, not only on average. Which frames are
  too old to keep is learned too: each batch that goes now has an expected finish, the
  pipeline reports when its results actually came out, and frames are kept only if their
  expected latency plus a high quantile of that error (over the recent batches) stays
  within 90 % of the SLO. The quantile starts at the p99 and is tuned by what comes out:
  down (to the p90 at least) while fewer than 0.5 % of the recent frames miss the SLO, back
  up (to the p99 at most) when more do, so no more frames are thrown away than the p99
  target needs. Under
  overload a source whose newest frame is already too old sits the batch out (its turn is
  kept: it goes first when its next frame arrives) rather than making the batch late.

Policies see the clock only through `QueueView.now`, so they can be tested against a
simulated device deterministically.
"""
from __future__ import annotations

import abc
import functools
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..errors import ConfigError
from .admission import Schedule

log = logging.getLogger("edgesdk.streaming")

POLICIES = ("none", "fixed", "adaptive")
DEFAULT_ADAPTIVE_MAX = 16
#: batches whose actual / predicted device time the jitter (its p99) is taken over
RATIO_WINDOW = 200
#: batches seen before the p99 of that ratio is trusted (mean + 2 std before)
MIN_RATIOS = 30
#: the most the plan allows for a batch taking longer than predicted
MAX_JITTER = 4.0
#: share of the SLO the kept frames' planned latency plus the p99 of the plans' error may use
#: (the rest is the safety margin that makes the SLO hold at the p99 with room, not by luck)
SLO_TARGET = 0.9
#: the learned margin never keeps frames only younger than this share of the SLO (a stall of
#: the whole box must not make every frame look stale)
MIN_KEEP = 0.5
#: how much of the running batch's predicted engine time before its end the next one goes
JIT_LEAD = 0.25
#: share of delivered frames allowed past the SLO (half the 1 % a p99 target allows): the
#: quantile of the plans' error that the margin covers is tuned online to keep to it
LATE_GOAL = 0.005
#: recent delivered frames that share is measured over
LATE_WINDOW = 600
#: the quantile range of the plans' error the margin may cover: at most its p99, the p99
#: target per frame; where more frames still miss, the tail is the engine's or the box's, not
#: the frames' age, and dropping older frames would cost their sources' shares for nothing
KEEP_Q = (0.9, 0.99)


@dataclass(frozen=True)
class QueueView:
    """What the batcher knows when it plans a batch (times are time.time() seconds)."""

    now: float
    queued: int
    oldest: Optional[float]  # capture time of the oldest queued frame
    arrival_rate: float  # frames/s from all sources
    busy_until: float  # when the device is predicted to be free
    inflight: int = 0
    #: capture times of every queued frame, oldest first
    timestamps: tuple[float, ...] = ()
    #: capture time of the oldest queued frame of a lossless source (never dropped)
    oldest_lossless: Optional[float] = None
    #: sources with at least one queued frame (an overloaded batch is split over these)
    lanes: int = 1
    #: capture time of the newest frame of the source the buffer serves next (fairness)
    next_fair: Optional[float] = None
    #: the next queued frames in the buffer's fair order, (capture time, its source is owed turns),
    #: when asked for (`fair`: most plans wait for the engine and never need it)
    fair_order: Optional[Callable[[], tuple[tuple[float, bool], ...]]] = None

    @functools.cached_property
    def fair(self) -> tuple[tuple[float, bool], ...]:
        return self.fair_order() if self.fair_order is not None else ()


@dataclass(frozen=True)
class Plan:
    size: int  # target batch size
    deadline: Optional[float]  # dispatch by then with what is queued (None: wait for `size`)
    #: drop frames of live sources captured before this (they would miss the SLO anyway)
    stale_before: Optional[float] = None
    #: take nothing before this time, then plan again (just-in-time batching)
    not_before: Optional[float] = None
    #: overload: keep only each live source's newest this many frames (the rest are superseded)
    keep_per_lane: Optional[int] = None
    #: with keep_per_lane: the engine's predicted next batches; a source's older frames are
    #: superseded only as far as it would lose frames to staleness anyway (buffer.supersede)
    schedule: Optional[Schedule] = None
    #: when the batch's results are expected out (time.time()), as planned; None: not planned
    #: (the pipeline reports back how much later they came: `observe(..., late_s=)`)
    expect_done: Optional[float] = None


class BatchPolicy(abc.ABC):
    name = ""

    def __init__(self, max_batch: int = 1) -> None:
        self.max_batch = max(1, int(max_batch))

    def limit(self, max_batch: Optional[int]) -> None:
        """Apply the model's / profile's batch limit."""
        if max_batch is not None and max_batch < self.max_batch:
            self.max_batch = max(1, int(max_batch))

    @abc.abstractmethod
    def plan(self, view: QueueView) -> Plan: ...

    def observe(self, size: int, device_s: float, host_s: float, latencies_s: Sequence[float],
                now: float, late_s: Optional[float] = None) -> None:
        """Feedback after a batch: device time, host time (preprocess + decode), e2e latencies,
        and how much later than its plan's `expect_done` its results came out (None: unplanned)."""

    def predict_device(self, size: int) -> Optional[float]:
        """Predicted device time of a batch (None: not known yet)."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"policy": self.name, "max_batch": self.max_batch}


class NoBatching(BatchPolicy):
    name = "none"

    def __init__(self) -> None:
        super().__init__(1)

    def limit(self, max_batch: Optional[int]) -> None:
        pass

    def plan(self, view: QueueView) -> Plan:
        return Plan(1, view.now)


class FixedBatching(BatchPolicy):
    name = "fixed"

    def __init__(self, size: int, max_wait_s: Optional[float] = None) -> None:
        if size < 1:
            raise ConfigError(f"--batch must be >= 1 for fixed batching, got {size}")
        if max_wait_s is not None and max_wait_s < 0:
            raise ConfigError(f"--max-wait-ms must be >= 0, got {max_wait_s * 1000:g}")
        super().__init__(size)
        self.max_wait_s = max_wait_s

    def limit(self, max_batch: Optional[int]) -> None:
        if max_batch is not None and max_batch < self.max_batch:
            log.warning("fixed batch %d is larger than the limit %d of this model/profile; using %d",
                        self.max_batch, max_batch, max_batch)
        super().limit(max_batch)

    def plan(self, view: QueueView) -> Plan:
        if self.max_wait_s is None:
            return Plan(self.max_batch, None)
        start = view.oldest if view.oldest is not None else view.now
        return Plan(self.max_batch, start + self.max_wait_s)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(batch=self.max_batch, max_wait_ms=None if self.max_wait_s is None else self.max_wait_s * 1000)
        return d


class LatencyCurve:
    """Time of a batch as a function of its size, learned online.

    Per-size EWMA of observed times; sizes not seen in the last `memory` observations
    are forgotten (the device may have changed). Unseen sizes between two seen ones are
    interpolated linearly. Beyond the largest seen size: with one size seen, no batching
    gain is assumed (t(b) = t(b0) * b / b0); with two or more, the least-squares line
    t(b) = a + c*b through them (never below the largest seen time).
    """

    def __init__(self, alpha: float = 0.25, memory: int = 256) -> None:
        self.alpha = alpha
        self.memory = memory
        self._ewma: dict[int, float] = {}
        self._seen: dict[int, int] = {}
        self._count: dict[int, int] = {}
        self._seq = 0
        # the batcher asks for many sizes per batch: answers are cached until the next observation
        self._points: Optional[dict[int, float]] = None
        self._fit: Optional[tuple[float, float]] = None
        self._predicted: dict[int, Optional[float]] = {}

    def observe(self, size: int, seconds: float) -> None:
        self._points, self._fit, self._predicted = None, None, {}
        self._seq += 1
        if size in self._ewma and self._seq - self._seen[size] <= self.memory:
            self._ewma[size] += self.alpha * (seconds - self._ewma[size])
            self._count[size] += 1
        else:
            self._ewma[size] = seconds
            self._count[size] = 1
        self._seen[size] = self._seq

    def count(self, size: int) -> int:
        """How many times `size` was observed (recently)."""
        if size not in self._count or self._seq - self._seen[size] > self.memory:
            return 0
        return self._count[size]

    def points(self) -> dict[int, float]:
        """The live (recently seen) sizes and their times, made non-decreasing in size (a
        bigger batch never takes less time; a stale fast point of a size no longer used
        must not look attractive after the device slowed down)."""
        if self._points is not None:
            return self._points
        out: dict[int, float] = {}
        top = 0.0
        for b, t in sorted(self._ewma.items()):
            if self._seq - self._seen[b] <= self.memory:
                top = max(top, t)
                out[b] = top
        self._points = out
        return out

    def fit(self) -> tuple[float, float]:
        """(a, c) of the least-squares line t = a + c*b through the live points (c >= 0)."""
        if self._fit is None:
            self._fit = self._line()
        return self._fit

    def _line(self) -> tuple[float, float]:
        pts = self.points()
        b = np.array(list(pts), np.float64)
        t = np.array(list(pts.values()), np.float64)
        if len(b) < 2:
            return (0.0, float(t[0] / b[0])) if len(b) else (0.0, 0.0)
        c, a = np.polyfit(b, t, 1)
        c = max(float(c), 0.0)
        return float(t.mean() - c * b.mean()), c

    def predict(self, size: int) -> Optional[float]:
        if size not in self._predicted:
            self._predicted[size] = self._predict(size)
        return self._predicted[size]

    def _predict(self, size: int) -> Optional[float]:
        pts = self.points()
        if not pts:
            return None
        if size in pts:
            return pts[size]
        sizes = list(pts)
        if size > sizes[-1]:
            if len(sizes) == 1:
                return pts[sizes[0]] * size / sizes[0]
            a, c = self.fit()
            return max(a + c * size, pts[sizes[-1]])
        if size < sizes[0]:
            return pts[sizes[0]] * size / sizes[0] if sizes[0] > 0 else pts[sizes[0]]
        lo = max(b for b in sizes if b < size)
        hi = min(b for b in sizes if b > size)
        return pts[lo] + (pts[hi] - pts[lo]) * (size - lo) / (hi - lo)


class AdaptiveBatching(BatchPolicy):
    """Largest batch that keeps end-to-end latency within `slo_s` (see module doc).

    Args:
        slo_s: the end-to-end latency target (capture to result), seconds.
        max_batch: upper bound (the model's / profile's limits apply on top).
        margin: fraction of the SLO planned for (the rest absorbs jitter).
        backoff: budget multiplier after a batch that violated the SLO.
        recover: budget (fraction of the SLO) regained per compliant batch; small, so that
            late batches stay rare (about recover / ((1 - backoff) * margin) of them).
        probe_every: every this many batches run a neighbouring size (one up, one down, in
            turn) so the curve around the chosen size stays measured, not assumed.
    """

    name = "adaptive"

    def __init__(self, slo_s: float, max_batch: int = DEFAULT_ADAPTIVE_MAX, margin: float = 0.8,
                 backoff: float = 0.75, recover: float = 0.0015, min_scale: float = 0.3,
                 probe_every: int = 20) -> None:
        if not slo_s or slo_s <= 0:
            raise ConfigError("adaptive batching needs a positive latency target: --slo-ms X (e.g. 50)")
        super().__init__(max_batch)
        self.slo_s = float(slo_s)
        self.margin = margin
        self.backoff = backoff
        self.recover = recover
        self.min_scale = min_scale
        self.scale = margin
        self.device = LatencyCurve()
        self.host = LatencyCurve()
        self.probe_every = probe_every
        self.warmup_batches = 3
        self._ratio_mean, self._ratio_var = 1.0, 0.0
        self._ratios: deque[float] = deque(maxlen=RATIO_WINDOW)
        self._jitter_cache: Optional[float] = None
        self._dispatches = 0
        self._next_probe = probe_every
        self.probes = 0
        self.target = 1
        self.violations = 0
        self._recent: deque[bool] = deque(maxlen=200)
        #: seconds the results of recent batches came out later than planned (negative: earlier)
        self._late: deque[float] = deque(maxlen=RATIO_WINDOW)
        self._keep_cache: Optional[float] = None
        self.keep_q = 0.99  # the quantile of that lateness the kept frames' margin covers
        self._frames_late: deque[bool] = deque(maxlen=LATE_WINDOW)

    @property
    def budget(self) -> float:
        return self.slo_s * self.scale

    @property
    def jitter(self) -> float:
        """How much longer than predicted a batch may take: the p99 of the ratio observed /
        predicted over the recent batches (1.0 on a quiet device; more where other work
        shares it). The SLO is a p99 target, so the plan covers the p99 of engine time;
        mean + 2 std (about a p97.5 for a normal spread) until enough batches were seen."""
        if self._jitter_cache is None:  # asked for every size of every plan: once per observation
            if len(self._ratios) >= MIN_RATIOS:
                tail = float(np.quantile(np.fromiter(self._ratios, np.float64), 0.99))
            else:
                tail = self._ratio_mean + 2.0 * self._ratio_var ** 0.5
            self._jitter_cache = min(MAX_JITTER, max(1.0, tail))
        return self._jitter_cache

    @property
    def keep_within(self) -> Optional[float]:
        """Seconds of expected latency a kept frame may have: the SLO target less the p99 of
        how much later than expected the recent batches' results came out (engine jitter,
        the batch ahead overrunning, GC, sinks: whatever it was), at least MIN_KEEP of the
        SLO. None until enough batches were seen."""
        if self._keep_cache is None and len(self._late) >= MIN_RATIOS:
            late = float(np.quantile(np.fromiter(self._late, np.float64), self.keep_q))
            self._keep_cache = max(MIN_KEEP * self.slo_s, SLO_TARGET * self.slo_s - late)
        return self._keep_cache

    def _cost(self, size: int) -> Optional[float]:
        t = self.device.predict(size)
        if t is None:
            return None
        # host work (preprocess, decode) shares the CPU with whatever slows the device
        return (t + (self.host.predict(size) or 0.0)) * self.jitter

    def predict_device(self, size: int) -> Optional[float]:
        return self.device.predict(size)

    def _start_if_feasible(self, b: int, view: QueueView, ts_desc: list[float],
                           budget: Optional[float] = None) -> Optional[float]:
        """When a batch of b can start and still meet the budget, or None if it cannot.

        It starts once the device is free and b frames exist (queued ones plus arrivals
        expected at the measured rate). Its frames are the b newest at that time (older
        live frames are dropped as stale), so the oldest of them bounds the latency.
        """
        cost = self._cost(b)
        assert cost is not None
        rate = view.arrival_rate
        start = max(view.now, view.busy_until)
        if len(ts_desc) < b:
            if rate <= 0:
                return None
            start = max(start, view.now + (b - len(ts_desc)) / rate)
        arriving = int(rate * (start - view.now) + 1e-9) if rate > 0 else 0
        if arriving >= b:
            oldest = start - (b - 1) / rate
        else:
            k = b - arriving  # the k-th newest queued frame is the batch's oldest
            oldest = ts_desc[min(k, len(ts_desc)) - 1] if ts_desc else view.now
        return start if start - oldest + cost <= (self.budget if budget is None else budget) else None

    def plan(self, view: QueueView) -> Plan:
        if self.device.count(1) < self.warmup_batches:
            return Plan(1, view.now)  # measure batch 1 first (a few times: the first runs are cold)
        ts = list(view.timestamps) or ([view.oldest] if view.oldest is not None else [])
        ts_desc = sorted(ts, reverse=True)
        device_free = max(view.now, view.busy_until)
        if view.oldest_lossless is not None and \
                device_free - view.oldest_lossless + (self._cost(1) or 0.0) > self.budget:
            # Behind on frames that may not be dropped (a file read faster than the model
            # runs): their latency is lost anyway, so drain at the best throughput.
            grow = max(self.device.points(), default=1) + 1
            self.target = self._best_throughput(max(1, min(view.queued, self.max_batch, grow)))
            return Plan(self.target, view.now)
        # grow at most one size beyond what was measured: the curve is learned step by step
        largest = min(self.max_batch, max(self.device.points(), default=1) + 1)
        feasible = [b for b in range(1, largest + 1) if self._start_if_feasible(b, view, ts_desc) is not None]
        # overloaded: more frames arrive than even the largest batch allowed would run, by a
        # curve measured at two sizes at least (with one, "no gain from batching" is assumed)
        overloaded = len(self.device.points()) >= 2 and view.arrival_rate > self._capacity(self.max_batch)
        best = self._efficient(feasible, overloaded) if feasible else 0
        best = max(best, self._keeping_up(view, ts_desc, largest))
        size = best = max(best, 1)  # 0: not even one frame makes it: drop the late ones, send the freshest
        probe = self._dispatches + 1 >= self._next_probe
        if probe:
            # Learning: now and then run a neighbouring size, so the curve around the chosen
            # size stays measured (a cold start or a busy moment must not decide forever).
            # One size up only if it still meets the SLO itself.
            up = best + 1 <= self.max_batch and len(ts_desc) > best and \
                self._start_if_feasible(best + 1, view, ts_desc, self.slo_s) is not None
            down = best > 1
            if up and (self.probes % 2 == 0 or not down):
                size = best + 1
            elif down:
                size = best - 1
        cost = self._cost(size) or 0.0
        # submit a little before the device frees up: the engine's thread needs waking and a
        # batch waiting a moment beats an idle device (and a CPU given away meanwhile). Not
        # earlier: its frames would wait behind the batch ahead (going at half the engine time
        # before instead of a quarter cost the 5 fps cameras of the mixed bench 10 % of their
        # frames, with no less idle engine time)
        lead = (self.host.predict(size) or 0.0) + JIT_LEAD * (self.device.predict(size) or 0.0)
        if device_free - lead > view.now + 1e-3:
            # Just in time: the device is busy; batch when it is about to be free, with the
            # freshest frames then (and maybe more of them). The dispatcher plans again.
            return Plan(size, None, not_before=device_free - lead)
        self._dispatches += 1
        if probe:
            self._next_probe = self._dispatches + self.probe_every
            self.probes += int(size != best)
        self.target = best = size
        return self._now_plan(view, ts, ts_desc, device_free, best, cost, largest)

    def _now_plan(self, view: QueueView, ts: list[float], ts_desc: list[float], device_free: float, best: int,
                  cost: float, largest: int) -> Plan:
        """The plan of a batch of `best` that goes now: which live frames are stale, and
        under overload how many each source keeps."""
        # Stale: frames that would miss the SLO itself (with the planning margin). The
        # shrinking budget decides batch sizes only; dropping by it would throw frames away
        # while the engine still had room for them. The batch in the engine may overrun its
        # prediction as much as this one may (the p99 of engine time): kept frames wait for that too.
        # when its results should be out (expected values; what they turn out to be is learned)
        keep_within = self.keep_within
        if keep_within is not None:
            best = self._rescue(view.fair, best, device_free, keep_within, largest)
            self.target = best = self._shrink_for_owed(view.fair, best, device_free, keep_within)
            cost = self._cost(best) or 0.0
        expect_done = self._done_at(device_free, best)
        if keep_within is not None:
            cutoff = expect_done - keep_within
        else:  # not learned yet: the p99 of engine time for this batch and the one ahead of it
            overrun = (self.jitter - 1.0) * (self.device.predict(best) or 0.0) if view.inflight else 0.0
            cutoff = device_free + overrun + cost - self.slo_s * self.margin
        keep, schedule = None, None
        if len(ts_desc) > 2 * best and view.arrival_rate > self._capacity(largest):
            # Overloaded (frames arrive faster than batches of this size are done, and more
            # than two batches wait): some frames will be dropped anyway, so each live
            # source keeps only its newest share of the batch. Same throughput, far lower
            # latency, and every source still gets its turn (the buffer serves the lanes
            # round-robin; a global "newest N" cut would starve the same cameras forever).
            # Only as far as that costs a source no frame (the schedule): where a source's
            # queue would run dry first, its older frames fill what would be engine idle time.
            keep = max(1, math.ceil(best / max(1, view.lanes)))
            schedule = Schedule(expect_done, (self.device.predict(best) or 0.0) + (self.host.predict(best) or 0.0),
                                best, expect_done - cutoff, self.slo_s)
        if ts_desc and ts_desc[0] < cutoff:
            best, cutoff, expect_done = self._all_stale(view, ts_desc[0], device_free, best, cutoff, expect_done)
            if best == 0:  # every queued frame is late, a fresh one would not be: run none of them
                return Plan(1, view.now, stale_before=cutoff)
        fresh = [t for t in ts if t >= cutoff]
        if len(fresh) >= best or keep is not None:
            return Plan(best, view.now, stale_before=cutoff, keep_per_lane=keep, schedule=schedule,
                        expect_done=expect_done)
        # wait for the rest, but not beyond the latest start that keeps the oldest within budget,
        # nor longer than the engine can stand idle per batch and still keep up with the arrivals
        oldest = min(fresh) if fresh else view.now
        wait_until = min(oldest + self.budget - cost, view.now + self._idle_allowance(best, cost, view.arrival_rate))
        return Plan(best, max(view.now, wait_until), stale_before=cutoff)

    def _all_stale(self, view: QueueView, newest: float, device_free: float, best: int, cutoff: float,
                   expect_done: float) -> tuple[int, float, float]:
        """Not even the newest queued frame makes a batch of `best` in time: (size, cutoff, expected
        done) of what to run instead, size 0 for nothing.

        The newest alone in time: a batch of 1. Otherwise, where a frame captured now would still
        be in time, every queued one is dropped as stale and nothing runs (the tail of a burst the
        engine cannot finish in time: 12 x 5 fps cameras capturing together ran their last two
        frames knowingly late, p99 226-245 ms of a 200 ms SLO). Where not even a fresh frame would
        make it (the device is too slow for the SLO) a frame still runs, late, so the curve keeps
        being measured and results keep coming: the newest of the source whose turn it is (the
        newest overall would always be the camera whose capture phase comes last)."""
        window = expect_done - cutoff
        alone = self._done_at(device_free, 1)
        if alone - newest <= window:
            return 1, alone - window, alone
        if alone - view.now <= window:
            return 0, view.now + 1.0, expect_done
        return best, min(cutoff, view.next_fair if view.next_fair is not None else newest), expect_done

    def _done_at(self, device_free: float, size: int) -> float:
        """When the results of a batch of `size` going now are expected out."""
        return device_free + (self.device.predict(size) or 0.0) + (self.host.predict(size) or 0.0)

    def _rescue(self, fair: Sequence[tuple[float, bool]], best: int, device_free: float, keep_within: float,
                largest: int) -> int:
        """`best` grown by the frames of owed sources (`QueueView.fair`) that are next in line and
        would be too old by the end of the batch after this one, as long as the grown batch keeps
        all its frames in time. Cameras that capture together send a burst; cut into the most
        efficient batches, its last frames miss the one after and are lost to staleness, always
        the same sources' (1 x 30 + 7 x 5 fps at 18 ms a frame: the slow ones got 4.2-4.9 fps of
        5), while a batch one or two larger runs them all in time. All or nothing: where the
        burst does not fit whole, growing only moves the losses to later frames and adds the
        larger batch's jitter (1 x 30 + 15 x 5 fps: aggregate -10%, p99 at the SLO). A frame of a
        source that is not owed (served its share) never grows a batch: it would only take the
        engine from others."""
        cutoff = self._done_at(device_free, best) - keep_within
        line = [(t, owed) for t, owed in fair if t >= cutoff]  # the older ones are stale anyway
        next_batch = self._done_at(0.0, best)  # its duration
        size = best
        while size < len(line) and line[size][1]:
            if self._done_at(device_free, size) + next_batch - line[size][0] <= keep_within:
                break  # it makes the next batch
            if size == largest or \
                    self._done_at(device_free, size + 1) - min(t for t, _ in line[:size + 1]) > keep_within:
                return best  # the burst does not fit whole: growing would only move the losses
            size += 1
        return size

    def _shrink_for_owed(self, fair: Sequence[tuple[float, bool]], best: int, device_free: float,
                         keep_within: float) -> int:
        """`best`, or the largest smaller size that keeps the next frame in the fair order in time
        when it is an owed source's and `best` would make it stale. All frames of a batch finish
        when its last does: on an engine without batching gain (PP-OCRv4 det on this box) a batch
        of 2 cost a 5 fps camera of a burst the frame a batch of 1 ran in time (1 x 30 + 7 x 5
        fps at 27 ms a frame, simulated: the slow cameras got 0.6 of their share)."""
        if not fair or not fair[0][1]:
            return best
        head = fair[0][0]
        for size in range(best, 0, -1):
            if self._done_at(device_free, size) - head <= keep_within:
                return size
        return best

    @staticmethod
    def _idle_allowance(size: int, cost: float, rate: float) -> float:
        """Seconds the engine may wait for a batch of `size` (taking `cost`) to fill and still do
        the frames arriving at `rate` meanwhile: the time `size` frames take to arrive less the
        batch's cost. Near capacity that is about nothing: holding a partial batch while the engine
        idles loses frames there (1 x 30 + 7 x 5 fps into an engine of ~66 fps: batches of 3 waited
        for their third frame 15 % of the time, the cameras lost 20 % of their frames to staleness)."""
        return size / rate - cost if rate > 0 else math.inf

    def _capacity(self, largest: int) -> float:
        """Frames/s the engine does at its most efficient size up to `largest` (as planned)."""
        return max(b / max(self._cost(b) or 1e-9, 1e-9) for b in range(1, largest + 1))

    def _keeping_up(self, view: QueueView, ts_desc: list[float], largest: int) -> int:
        """The smallest size whose throughput matches the arrival rate, if it still meets
        the SLO itself (0 if none): under a shrunk budget, small batches that fall behind
        would drop frames the engine could have run."""
        for b in range(1, largest + 1):
            if b / max(self._cost(b) or 1e-9, 1e-9) >= view.arrival_rate:
                return b if self._start_if_feasible(b, view, ts_desc, self.slo_s * self.margin) is not None else 0
        return 0

    def _efficient(self, sizes: list[int], overloaded: bool) -> int:
        """Of `sizes`, one whose frames per second is within a tolerance of the best of them
        (never a size that costs throughput: on some CPUs a model runs slower per frame in
        large batches). Normally the largest within 5 %: headroom when the load rises.
        Overloaded, the smallest within 2 %: frames are dropped anyway and the throughput
        is the engine's, so a bigger batch would only add latency (all frames of a batch
        finish when its last does: where a batch of 4 takes 4 x one frame, 4 frames run one
        by one are out 3, 2 and 1 frame times earlier, and a burst of frames of sources that
        capture together is not late at its end)."""
        rates = {b: b / max(self._cost(b) or 1e-9, 1e-9) for b in sizes}
        top = max(rates.values())
        if overloaded:
            return min(b for b, r in rates.items() if r >= 0.98 * top)
        return max(b for b, r in rates.items() if r >= 0.95 * top)

    def _best_throughput(self, available: int) -> int:
        """The batch size up to `available` with the lowest time per frame (larger on ties)."""
        best, best_per = 1, float("inf")
        for b in range(1, available + 1):
            cost = self._cost(b)
            assert cost is not None
            per = cost / b
            if per <= best_per * 1.001:
                best, best_per = b, min(per, best_per)
        return best

    def observe(self, size: int, device_s: float, host_s: float, latencies_s: Sequence[float],
                now: float, late_s: Optional[float] = None) -> None:
        if late_s is not None:
            self._late.append(late_s)
            self._keep_cache = None
        self._tune_keep(latencies_s)
        predicted = self.device.predict(size)
        if predicted and self.device.count(size) >= 2:
            r = min(MAX_JITTER, max(0.5, device_s / predicted))  # a level shift is the curve's to learn
            self._ratios.append(r)
            self._jitter_cache = None
            a = 0.05
            d = r - self._ratio_mean
            self._ratio_mean += a * d
            self._ratio_var = (1 - a) * (self._ratio_var + a * d * d)
        self.device.observe(size, device_s)
        self.host.observe(size, host_s)
        late = bool(latencies_s) and max(latencies_s) > self.slo_s
        self._recent.append(late)
        if late:
            self.violations += 1
            self.scale = max(self.min_scale, self.scale * self.backoff)
        else:
            self.scale = min(self.margin, self.scale + self.recover)

    def _tune_keep(self, latencies_s: Sequence[float]) -> None:
        """Move the margin's quantile towards LATE_GOAL of the delivered frames missing the SLO."""
        self._frames_late.extend(lat > self.slo_s for lat in latencies_s)
        if len(self._frames_late) < LATE_WINDOW // 4:
            return
        share = sum(self._frames_late) / len(self._frames_late)
        step = 0.005 if share > 1.2 * LATE_GOAL else (-0.001 if share < 0.6 * LATE_GOAL else 0.0)
        q = min(KEEP_Q[1], max(KEEP_Q[0], self.keep_q + step))
        if q != self.keep_q:
            self.keep_q, self._keep_cache = q, None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(slo_ms=self.slo_s * 1000, target=self.target, budget_ms=round(self.budget * 1000, 2),
                 jitter=round(self.jitter, 3),
                 keep_within_ms=None if self.keep_within is None else round(self.keep_within * 1000, 1),
                 keep_quantile=round(self.keep_q, 3),
                 late_batches_recent=sum(self._recent), probes=self.probes,
                 device_ms={b: round(t * 1000, 3) for b, t in self.device.points().items()})
        return d


def make_policy(name: str = "none", batch: Optional[int] = None, max_wait_ms: Optional[float] = None,
                slo_ms: Optional[float] = None) -> BatchPolicy:
    """A policy from CLI-style settings. For ``adaptive``, `batch` is the upper bound."""
    key = (name or "none").lower()
    if key == "none":
        if batch not in (None, 1):
            raise ConfigError(f"--batch {batch} needs --batching fixed or adaptive (got --batching none)")
        return NoBatching()
    if key == "fixed":
        if batch is None:
            raise ConfigError("--batching fixed needs --batch N")
        return FixedBatching(int(batch), None if max_wait_ms is None else max_wait_ms / 1000.0)
    if key == "adaptive":
        if slo_ms is None:
            raise ConfigError("--batching adaptive needs a latency target: --slo-ms X (e.g. 50)")
        if max_wait_ms is not None:
            log.info("adaptive batching derives its waits from --slo-ms; --max-wait-ms is ignored")
        return AdaptiveBatching(slo_ms / 1000.0, max_batch=int(batch) if batch else DEFAULT_ADAPTIVE_MAX)
    raise ConfigError(f"--batching must be one of {', '.join(POLICIES)}, got {name!r}")


def batch_limit(*limits: Optional[int]) -> Optional[int]:
    """The tightest of several optional limits."""
    real = [int(x) for x in limits if x is not None and not (isinstance(x, float) and math.isinf(x))]
    return min(real) if real else None
