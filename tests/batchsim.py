"""A discrete-event simulation of the pipeline's dispatcher around a batching policy.

Sources emit frames at fixed rates into per-source drop-oldest lanes (or unbounded
lossless ones); a serial "device" takes t(b) seconds per batch of b; up to
`max_inflight` batches are submitted at once; the policy plans each batch exactly as in
`edgesdk.streaming.pipeline` and gets the same feedback. Time is simulated, so tests
of the policies are deterministic and fast (no sleeping, no machine noise).
"""
from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from edgesdk.streaming.batching import BatchPolicy, QueueView


@dataclass
class SimResult:
    latencies: np.ndarray  # seconds, frames that arrived after warm-up
    throughput: float  # frames delivered per second after warm-up
    batches: Counter
    drops: Counter
    fps_in: float
    sizes_over_time: list[tuple[float, int]] = field(default_factory=list)

    @property
    def p99(self) -> float:
        return float(np.percentile(self.latencies, 99)) if len(self.latencies) else math.inf

    @property
    def p50(self) -> float:
        return float(np.percentile(self.latencies, 50)) if len(self.latencies) else math.inf

    @property
    def mean_batch(self) -> float:
        n = sum(self.batches.values())
        return sum(b * c for b, c in self.batches.items()) / n if n else 0.0


def linear_device(a_ms: float, c_ms: float) -> Callable[[int, float], float]:
    """t(b) = a + c*b milliseconds (what batching a CNN on a CPU roughly looks like)."""
    return lambda b, _t: (a_ms + c_ms * b) / 1000.0


def simulate(policy: BatchPolicy, device: Callable[[int, float], float], *, sources: int = 2, fps: float = 30.0,
             seconds: float = 20.0, warmup: float = 3.0, capacity: Optional[int] = 8, live: bool = True,
             max_inflight: int = 2, host_ms_per_frame: float = 0.3, rate_window: int = 64) -> SimResult:
    """Run `policy` against `device(b, start_time) -> seconds` for `seconds` of simulated time."""
    arrivals = sorted((s / (sources * fps) + i / fps, s) for s in range(sources)
                      for i in range(int(seconds * fps)))
    lanes: list[deque] = [deque() for _ in range(sources)]
    drops: Counter = Counter()
    recent: deque = deque(maxlen=rate_window)
    inflight: list = []  # heap of (done, seq, size, device_s, host_s, [arrival times], planned done)
    latencies: list[float] = []
    done_times: list[float] = []
    batches: Counter = Counter()
    sizes_over_time: list[tuple[float, int]] = []
    ai, now, device_free, prev_done, seq = 0, 0.0, 0.0, 0.0, 0

    def queued() -> int:
        return sum(len(q) for q in lanes)

    def advance(to: float) -> None:
        nonlocal ai, now
        while True:  # completions and arrivals up to `to`, in time order
            t_done = inflight[0][0] if inflight else math.inf
            t_arr = arrivals[ai][0] if ai < len(arrivals) else math.inf
            if min(t_done, t_arr) > to or (t_done == math.inf and t_arr == math.inf):
                break
            if t_done <= t_arr:
                done, _, size, dev, host, arr, expect = heapq.heappop(inflight)
                lat = [done - a for a in arr]
                for a, x in zip(arr, lat):
                    if a >= warmup:
                        latencies.append(x)
                done_times.extend([done] * len(arr))
                policy.observe(size, dev, host, lat, done, late_s=None if expect is None else done - expect)
            else:
                t, s = arrivals[ai]
                ai += 1
                recent.append(t)
                lane = lanes[s]
                if capacity is not None and len(lane) >= capacity:
                    if live:
                        lane.popleft()
                        drops["buffer_full"] += 1
                lane.append(t)
        now = max(now, to)

    def rate() -> float:
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def oldest() -> Optional[float]:
        heads = [q[0] for q in lanes if q]
        return min(heads) if heads else None

    while True:
        if len(inflight) >= max_inflight:
            advance(inflight[0][0])  # wait for a slot
            continue
        if not queued():
            if ai >= len(arrivals):
                break
            advance(arrivals[ai][0])
            continue
        stamps = tuple(sorted(t for q in lanes for t in q))
        view = QueueView(now, queued(), oldest(), rate(), max(device_free, now), len(inflight), stamps,
                         None if live else oldest(), lanes=sum(1 for q in lanes if q))
        plan = policy.plan(view)
        if plan.not_before is not None and plan.not_before > now:
            advance(plan.not_before)
            continue
        if plan.stale_before is not None and live:
            for q in lanes:
                while q and q[0] < plan.stale_before:
                    q.popleft()
                    drops["stale"] += 1
        if plan.keep_per_lane is not None and live:
            for q in lanes:
                while len(q) > plan.keep_per_lane:
                    q.popleft()
                    drops["superseded"] += 1
            if not queued():
                continue
        while queued() < plan.size:
            t_next = arrivals[ai][0] if ai < len(arrivals) else math.inf
            limit = plan.deadline if plan.deadline is not None else math.inf
            if t_next <= limit and t_next < math.inf:
                advance(t_next)
            else:
                if limit < math.inf:
                    advance(max(now, limit))
                break
        taken: list[float] = []
        while len(taken) < plan.size and queued():
            i = min((k for k in range(sources) if lanes[k]), key=lambda k: lanes[k][0])
            taken.append(lanes[i].popleft())
        b = len(taken)
        host = host_ms_per_frame * b / 1000.0
        submit = now + host / 2
        start = max(submit, device_free)
        dev = device(b, start)
        device_free = start + dev
        device_s = device_free - max(submit, prev_done)
        prev_done = device_free
        seq += 1
        heapq.heappush(inflight, (device_free + host / 2, seq, b, device_s, host, taken, plan.expect_done))
        batches[b] += 1
        sizes_over_time.append((now, b))
        now = submit
    advance(math.inf)
    span = seconds - warmup
    delivered = sum(1 for t in done_times if warmup <= t < seconds)
    return SimResult(np.asarray(latencies), delivered / span, batches, drops, sources * fps, sizes_over_time)
