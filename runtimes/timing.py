"""Latency measurement over the `Runtime` API: what the bench CLI and converters use.

    stats = measure(rt, feeds, warmup=5, iterations=50)
    print(stats.p50, stats.throughput)

Each sample is one `infer` call (checks included, as an application sees it), timed with
`time.perf_counter`. Feeds are checked once before timing, so a bad input fails fast.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .base import Feeds, Runtime

#: progress(done, total): total is None when the run is bounded by time, not iterations
Progress = Callable[[int, Optional[int]], None]


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one feed (one batch) on one runtime, in milliseconds."""

    samples_ms: np.ndarray = field(repr=False, compare=False)
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    #: items (batch elements) per second at the mean latency, one call in flight
    throughput: float
    batch: int

    @property
    def count(self) -> int:
        return int(self.samples_ms.size)

    @classmethod
    def from_samples(cls, samples_ms: np.ndarray, batch: int) -> "LatencyStats":
        s = np.asarray(samples_ms, dtype=np.float64)
        if s.size == 0:
            raise ValueError("LatencyStats needs at least one sample")
        p50, p90, p99 = np.percentile(s, [50, 90, 99])
        mean = float(s.mean())
        return cls(samples_ms=s, p50=float(p50), p90=float(p90), p99=float(p99), mean=mean,
                   min=float(s.min()), throughput=batch * 1000.0 / mean if mean > 0 else float("inf"),
                   batch=int(batch))

    def to_dict(self) -> dict:
        """Plain numbers (no samples) for JSON reports."""
        return {"p50_ms": self.p50, "p90_ms": self.p90, "p99_ms": self.p99, "mean_ms": self.mean,
                "min_ms": self.min, "throughput": self.throughput, "batch": self.batch, "count": self.count}

    def __str__(self) -> str:
        return (f"p50 {self.p50:.3f} ms  p90 {self.p90:.3f}  p99 {self.p99:.3f}  mean {self.mean:.3f}  "
                f"min {self.min:.3f}  {self.throughput:.1f} items/s  (batch {self.batch}, n={self.count})")


def measure(runtime: Runtime, feeds: Feeds, warmup: int = 5, iterations: int = 50,
            seconds: Optional[float] = None, progress: Optional[Progress] = None) -> LatencyStats:
    """Time `runtime.infer(feeds)`.

    Args:
        warmup: untimed calls first (engines allocate and tune on the first calls).
        iterations: timed calls; with ``seconds`` it is the minimum number of calls.
        seconds: keep going until this much time has been spent timing (and at least
            ``iterations`` calls, so a short budget still gives percentiles).
        progress: called as ``progress(done, total)`` about 20 times a run
            (total is None when the run is bounded by ``seconds``).
    """
    if warmup < 0 or iterations < 1:
        raise ValueError(f"need warmup >= 0 and iterations >= 1, got {warmup} and {iterations}")
    if seconds is not None and seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    checked = runtime.check_feeds(feeds)  # fail on a bad feed before any timing
    first = next(iter(checked.values()), None)
    batch = int(first.shape[0]) if first is not None and first.ndim else 1
    infer = runtime.infer
    for _ in range(warmup):
        infer(checked)
    total = None if seconds is not None else iterations
    every = max(1, iterations // 20)
    samples: list[float] = []
    clock = time.perf_counter
    deadline = clock() + seconds if seconds is not None else None
    while True:
        t0 = clock()
        infer(checked)
        t1 = clock()
        samples.append((t1 - t0) * 1000.0)
        done = len(samples)
        if progress is not None and done % every == 0:
            progress(done, total)
        if done >= iterations and (deadline is None or t1 >= deadline):
            break
    if progress is not None and len(samples) % every:
        progress(len(samples), total)
    return LatencyStats.from_samples(np.array(samples), batch)
