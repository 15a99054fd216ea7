#!/usr/bin/env python3
"""Simulated clock for the mixed many-camera scenario (issue 13): the real `FrameBuffer` and
`AdaptiveBatching` driven by synthetic arrivals and a modelled engine, so a scheduling change
can be judged deterministically before it meets the noisy 2-core bench (bench/stream.py
--part cameras). Prints per-source processed fps, p99 latency and drops per source/reason.

    python tools/mixed_sim.py [ENGINE_MS_PER_FRAME]   # default 24; a quiet box is about 18

Model: 1 source at 30 fps + 7 at 5 fps (the slow ones capture together), two batches in
flight, engine time fixed_ms (2) + (ENGINE_MS - fixed_ms) per frame with +-10% jitter, host time 5
ms a batch (fixed_ms=0, host_ms=1: no batching gain, as PP-OCRv4 det on this 2-core box).
"""
import heapq
import math
import random
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import edgesdk.streaming.buffer as bufmod  # noqa: E402
from edgesdk.results import Frame  # noqa: E402
from edgesdk.streaming.batching import AdaptiveBatching, QueueView  # noqa: E402
from edgesdk.streaming.buffer import FrameBuffer  # noqa: E402

NOW = [0.0]
SIM_CLOCK = types.SimpleNamespace(time=lambda: NOW[0], monotonic=lambda: NOW[0])


def run(*args, **kwargs):
    """`_run` with the buffer's clock simulated (restored after: tests import this module)."""
    real, bufmod.time = bufmod.time, SIM_CLOCK
    try:
        return _run(*args, **kwargs)
    finally:
        bufmod.time = real


def _run(per_ms=24.0, host_ms=5.0, secs=10.0, warm=2.0, seed=0, rates=None, jit=0.1, quiet=False, fixed_ms=2.0):
    rng = random.Random(seed); NOW[0] = 0.0
    rates = rates or [30.0] + [5.0] * 7
    buf = FrameBuffer()
    arr = []
    for k, r in enumerate(rates):
        buf.add_source(f"cam{k}", 8, True)
        off = 0.0 if r == 5.0 else 0.013
        arr += [(off + i / r + rng.uniform(0, 0.002), k, i) for i in range(int(secs * r))]
    arr.sort()
    pol = AdaptiveBatching(0.2, max_batch=16)
    inflight = []  # (done, seq, size, frames, expect, dev)
    ai, seq, engine_free, busy_until = 0, 0, 0.0, 0.0
    got, lat, drops = Counter(), [], Counter()
    def advance(to):
        nonlocal ai, busy_until
        while True:
            td = inflight[0][0] if inflight else math.inf
            ta = arr[ai][0] if ai < len(arr) else math.inf
            if min(td, ta) > to or min(td, ta) == math.inf: break
            if td <= ta:
                done, _, size, frames, expect, dev = heapq.heappop(inflight)
                NOW[0] = done
                l = [done - f.timestamp for f in frames]
                for f, x in zip(frames, l):
                    if warm <= f.timestamp <= secs: got[f.source_id] += 1; lat.append(x)
                pol.observe(size, dev, host_ms / 1000, l, done, late_s=None if expect is None else done - expect)
                if not inflight: busy_until = done
            else:
                t, k, i = arr[ai]; ai += 1; NOW[0] = t
                buf.put(Frame(image=None, source_id=f"cam{k}", index=i, timestamp=t))
        NOW[0] = max(NOW[0], to)
    while NOW[0] < secs + 0.5:
        if len(inflight) >= 2:
            advance(inflight[0][0]); continue
        if buf.queued == 0:
            advance(arr[ai][0] if ai < len(arr) else math.inf); 
            if ai >= len(arr) and buf.queued == 0: break
            continue
        now = NOW[0]
        stamps, ll = buf.queue_times()
        view = QueueView(now=now, queued=len(stamps), oldest=stamps[0], arrival_rate=buf.arrival_rate(now),
                         busy_until=max(busy_until, now), inflight=len(inflight), timestamps=stamps,
                         oldest_lossless=ll, lanes=buf.active_lanes(), next_fair=buf.next_fair_newest(),
                         fair_order=lambda: buf.fair_preview(2 * pol.max_batch))
        plan = pol.plan(view)
        if plan.not_before is not None:
            nb = plan.not_before
            if nb > now:
                advance(min(nb, inflight[0][0] if inflight else nb)); 
            continue
        if plan.stale_before is not None:
            for f in buf.drop_stale(plan.stale_before): drops[(f.source_id, 'stale')] += 1
        if plan.keep_per_lane is not None:
            for f in buf.supersede(plan.keep_per_lane, plan.schedule): drops[(f.source_id, 'sup')] += 1
        if plan.deadline is not None:
            while buf.queued < plan.size and NOW[0] < plan.deadline:
                ta = arr[ai][0] if ai < len(arr) else math.inf
                advance(min(ta, plan.deadline))
        frames = buf.take(plan.size, NOW[0] - 1)
        if not frames: continue
        b = len(frames)
        t_submit = NOW[0] + host_ms / 1000 * (0.6 + 0.4 * b)
        start = max(t_submit, engine_free)
        dev = (fixed_ms + (per_ms - fixed_ms) * b) / 1000 * (1 + rng.uniform(-jit, jit))
        engine_free = start + dev
        pred = pol.predict_device(b) or 0.0
        busy_until = max(busy_until, t_submit) + pred
        seq += 1
        heapq.heappush(inflight, (engine_free + 0.001, seq, b, frames, plan.expect_done, engine_free - max(t_submit, start)))
        advance(t_submit)
    span = secs - warm
    fps = {k: round(v / span, 1) for k, v in sorted(got.items())}
    if not quiet:
        print(sorted(drops.items()))
    return fps, round(float(np.percentile(lat, 99)) * 1000), pol.describe()

if __name__ == '__main__':
    per = float(sys.argv[1]) if len(sys.argv) > 1 else 24.0
    for seed in range(3):
        fps, p99, d = run(per_ms=per, seed=seed)
        print(per, seed, fps, 'p99', p99, 'keep', d['keep_within_ms'], d.get('keep_target'), d['keep_quantile'])
