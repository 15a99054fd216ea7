"""Batching policies: how many queued frames go into the next inference call, and how
long to wait for them.

- ``none``: every frame alone, at once.
- ``fixed``: N frames; with ``max_wait`` a partial batch leaves when its oldest frame
  has waited that long (Triton's max_queue_delay, nvstreammux's batched-push-timeout),
  without it the batcher waits for N (or the end of the sources).
- ``adaptive``: keeps end-to-end latency within an SLO by itself. It learns online how
  long a batch of b frames takes on this device and model (`LatencyCurve`: per-size
  EWMA, interpolated between sizes it has seen, extrapolated pessimistically beyond them
  so it only grows the batch when even "no batching gain" would still fit), and picks the
  largest batch whose queueing (frames still to arrive, the device's backlog) plus
  processing keeps the oldest frame within the budget. Observed violations shrink the
  budget (multiplicative back-off) and compliant batches grow it back slowly (AIMD).
  Frames of live sources that can no longer make the SLO are dropped as ``stale``
  (counted) rather than making every later frame late too.

Policies see the clock only through `QueueView.now`, so they can be tested against a
simulated device deterministically.
"""
from __future__ import annotations

import abc
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..errors import ConfigError

log = logging.getLogger("edgesdk.streaming")

POLICIES = ("none", "fixed", "adaptive")
DEFAULT_ADAPTIVE_MAX = 16


@dataclass(frozen=True)
class QueueView:
    """What the batcher knows when it plans a batch (times are time.time() seconds)."""

    now: float
    queued: int
    oldest: Optional[float]  # capture time of the oldest queued frame
    arrival_rate: float  # frames/s from all sources
    busy_until: float  # when the device is predicted to be free
    inflight: int = 0


@dataclass(frozen=True)
class Plan:
    size: int  # target batch size
    deadline: Optional[float]  # dispatch by then with what is queued (None: wait for `size`)


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

    def stale_before(self, view: QueueView) -> Optional[float]:
        """Live frames captured before this time are dropped; None keeps all."""
        return None

    def observe(self, size: int, device_s: float, host_s: float, latencies_s: Sequence[float],
                now: float) -> None:
        """Feedback after a batch: device time, host time (preprocess + decode), e2e latencies."""

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
    interpolated linearly; beyond the largest seen size the time is extrapolated with no
    batching gain (t(b) = t(b_max) * b / b_max), which makes growing the batch safe.
    """

    def __init__(self, alpha: float = 0.25, memory: int = 256) -> None:
        self.alpha = alpha
        self.memory = memory
        self._ewma: dict[int, float] = {}
        self._seen: dict[int, int] = {}
        self._count: dict[int, int] = {}
        self._seq = 0

    def observe(self, size: int, seconds: float) -> None:
        self._seq += 1
        if size in self._ewma and self._seq - self._seen[size] <= self.memory:
            self._ewma[size] += self.alpha * (seconds - self._ewma[size])
            self._count[size] += 1
        else:
            self._ewma[size] = seconds
            self._count[size] = 1
        self._seen[size] = self._seq

    def points(self) -> dict[int, float]:
        """The live (recently seen) sizes and their times."""
        return {b: t for b, t in sorted(self._ewma.items()) if self._seq - self._seen[b] <= self.memory}

    def predict(self, size: int) -> Optional[float]:
        pts = self.points()
        if not pts:
            return None
        if size in pts:
            return pts[size]
        sizes = list(pts)
        if size > sizes[-1]:
            return pts[sizes[-1]] * size / sizes[-1]
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
        recover: budget fraction regained per compliant batch.
    """

    name = "adaptive"

    def __init__(self, slo_s: float, max_batch: int = DEFAULT_ADAPTIVE_MAX, margin: float = 0.8,
                 backoff: float = 0.85, recover: float = 0.01, min_scale: float = 0.3) -> None:
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
        self.target = 1
        self.violations = 0
        self._recent: deque[bool] = deque(maxlen=200)

    @property
    def budget(self) -> float:
        return self.slo_s * self.scale

    def _cost(self, size: int) -> Optional[float]:
        t = self.device.predict(size)
        if t is None:
            return None
        return t + (self.host.predict(size) or 0.0)

    def predict_device(self, size: int) -> Optional[float]:
        return self.device.predict(size)

    def stale_before(self, view: QueueView) -> Optional[float]:
        cost = self._cost(1)
        if cost is None:
            return None
        start = max(view.now, view.busy_until)
        return start + cost - self.budget

    def plan(self, view: QueueView) -> Plan:
        if self._cost(1) is None:
            return Plan(1, view.now)  # nothing learned yet: measure batch 1 first
        oldest = view.oldest if view.oldest is not None else view.now
        rate = view.arrival_rate
        best, best_cost = 1, self._cost(1) or 0.0
        for b in range(1, self.max_batch + 1):
            cost = self._cost(b)
            assert cost is not None
            missing = max(0, b - view.queued)
            if missing and rate <= 0:
                break
            ready = view.now + (missing / rate if missing else 0.0)  # when the b-th frame is here
            start = max(ready, view.busy_until)
            if start - oldest + cost <= self.budget:
                best, best_cost = b, cost
        self.target = best
        # latest start that keeps the oldest frame within budget; wait for frames until then
        deadline = max(view.now, oldest + self.budget - best_cost)
        return Plan(best, deadline)

    def observe(self, size: int, device_s: float, host_s: float, latencies_s: Sequence[float],
                now: float) -> None:
        self.device.observe(size, device_s)
        self.host.observe(size, host_s)
        late = bool(latencies_s) and max(latencies_s) > self.slo_s
        self._recent.append(late)
        if late:
            self.violations += 1
            self.scale = max(self.min_scale, self.scale * self.backoff)
        else:
            self.scale = min(self.margin, self.scale + self.recover * self.margin)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(slo_ms=self.slo_s * 1000, target=self.target, budget_ms=round(self.budget * 1000, 2),
                 late_batches_recent=sum(self._recent),
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
