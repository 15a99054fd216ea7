#!/usr/bin/env python3
"""Per-frame trace of a camera scenario on a stand-in engine: why a run loses frames.

Runs bench/stream.py's cameras scenario (default 1 x 30 fps + 7 x 5 fps, adaptive
batching, 200 ms SLO, live real-time sources) through the real Pipeline, but with an
engine of a fixed cost per batch (t(b) = a + c*b ms of sleep on one worker thread, a
serial device) and optionally real CPU work per frame in preprocess (--host-ms: what
decode/preprocess take from the engine's cores on a real model). Every frame's fate is
recorded (processed, or dropped: by which rule, when), every plan of the batcher, every
batch; per run it prints processed fps per source against its max-min fair share, drops
by source and reason, engine busy, and the engine's idle time by what the dispatcher was
doing meanwhile. Several runs catch a bad one; --dump prints the worst run's idle gaps
and drops one by one.

    python bench/admission_trace.py --runs 5 --cost-ms 15.4 [--host-ms 3] [--dump]
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from edgesdk.results import Result  # noqa: E402
from edgesdk.streaming import Pipeline  # noqa: E402
from edgesdk.streaming.sources import ProducerSource  # noqa: E402
from stream import water_fill  # noqa: E402


class StandInEngine:
    """t(b) = a + c*b seconds of sleep per batch on one worker (a serial device); preprocess
    burns `host_s` of CPU per frame (numpy work that holds a core, as resizing does)."""

    def __init__(self, a_s: float, c_s: float, host_s: float) -> None:
        self.a, self.c, self.host_s = a_s, c_s, host_s
        self.name = "stand-in"
        self.max_batch = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stand-in-engine")
        self._work = np.random.default_rng(0).random((64, 64), np.float32)

    def preprocess(self, images: Sequence[np.ndarray]):
        end = time.perf_counter() + self.host_s * len(images)
        while time.perf_counter() < end:
            self._work = np.tanh(self._work @ self._work * 1e-3)
        return np.zeros(len(images), np.float32), [None] * len(images)

    def _run(self, x: np.ndarray) -> dict:
        time.sleep(self.a + self.c * len(x))
        return {"n": x}

    def submit(self, feeds) -> "Future[dict]":
        return self._pool.submit(self._run, feeds)

    def decode(self, outputs: dict, transforms: list) -> list[Result]:
        return [Result(scores=[]) for _ in outputs["n"]]

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@dataclass
class Trace:
    """What happened to every frame and every plan of one run (time.time() seconds)."""

    fate: dict[tuple[str, float], tuple[str, float]] = field(default_factory=dict)  # -> (reason|'out', when)
    left: dict[tuple[str, float], float] = field(default_factory=dict)  # when it left the buffer
    plans: list[tuple[float, dict[str, int], Any]] = field(default_factory=list)  # (now, lane sizes, plan)
    takes: list[tuple[float, float, list[tuple[str, float]]]] = field(default_factory=list)  # (asked, got, frames)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mark(self, frames: Sequence[Any], reason: str) -> None:
        """`reason`: queued, taken, out, or the drop reason."""
        now = time.time()
        with self.lock:
            for f in frames:
                key = (f.source_id, f.timestamp)
                if reason != "queued":
                    self.left.setdefault(key, now)
                if reason != "taken":
                    self.fate[key] = (reason, now)


def instrument(pipe: Pipeline, trace: Trace) -> None:
    """Record frame fates, plans and takes by wrapping the pipeline's buffer and policy."""
    buf, policy = pipe.buffer, pipe.policy
    put, drop_stale, supersede, take, plan = buf.put, buf.drop_stale, buf.supersede, buf.take, policy.plan

    def traced_put(frame, timeout=None):
        lane = buf._lanes[frame.source_id]  # a lane at capacity drops its oldest on this put
        if lane.drop_oldest and len(lane.frames) >= lane.capacity:
            trace.mark([lane.frames[0]], "buffer_full")
        trace.mark([frame], "queued")
        return put(frame, timeout)

    def traced_drop(before):
        out = drop_stale(before)
        trace.mark(out, "stale")
        return out

    def traced_supersede(keep, schedule=None):
        out = supersede(keep, schedule)
        trace.mark(out, "superseded")
        return out

    def traced_take(n, deadline=None):
        t0 = time.time()
        out = take(n, deadline)
        trace.mark(out, "taken")
        with trace.lock:
            trace.takes.append((t0, time.time(), [(f.source_id, f.timestamp) for f in out]))
        return out

    def traced_plan(view):
        p = plan(view)
        with trace.lock:
            trace.plans.append((view.now, buf.sizes(), p, getattr(policy, "budget", None),
                                getattr(policy, "keep_within", None)))
        return p

    buf.put, buf.drop_stale, buf.supersede, buf.take, policy.plan = \
        traced_put, traced_drop, traced_supersede, traced_take, traced_plan


def one_run(args: argparse.Namespace, rates: list[float]) -> dict[str, Any]:
    trace = Trace()
    engine = StandInEngine(args.fixed_ms / 1000, args.cost_ms / 1000, args.host_ms / 1000)
    img = [np.zeros((8, 8, 3), np.uint8)]
    srcs = [ProducerSource(img, f"cam{k}", live=True, fps=f) for k, f in enumerate(rates)]
    pipe = Pipeline(engine, srcs, loop=True, realtime=True, duration=args.seconds, batching="adaptive",
                    slo_ms=args.slo_ms, batch=16,
                    on_result=lambda f, r: trace.mark([f], "out"))
    instrument(pipe, trace)
    pipe.run(handle_signals=False)
    lo, hi = pipe.stats.started + args.warmup, pipe.stats.started + args.seconds
    return analyse(trace, pipe.stats.timeline(), rates, lo, hi, args.slo_ms / 1000)


def analyse(trace: Trace, timeline: list[Any], rates: list[float], lo: float, hi: float,
            slo_s: float) -> dict[str, Any]:
    """Per source: processed fps and drops by reason (frames captured in [lo, hi]); engine
    busy and idle by cause over the batches started in [lo, hi]."""
    ids = [f"cam{k}" for k in range(len(rates))]
    out, drops = Counter(), defaultdict(Counter)
    for (sid, ts), (reason, _) in trace.fate.items():
        if lo <= ts <= hi:
            if reason == "out":
                out[sid] += 1
            elif reason != "queued":
                drops[sid][reason] += 1
    span = hi - lo
    fps = {sid: out[sid] / span for sid in ids}
    recs = sorted((r for r in timeline if lo <= r.t_start <= hi), key=lambda r: r.t_start)
    busy = sum(r.t_done - r.t_start for r in recs) / max(recs[-1].t_done - recs[0].t_start, 1e-9) if recs else 0.0
    gaps = idle_gaps(trace, recs)
    idle = Counter()
    for g in gaps:
        idle[g["cause"]] += g["s"]
    agg = sum(fps.values())
    shares = dict(zip(ids, water_fill(rates, min(agg, sum(rates)))))
    lat = [when - ts for (sid, ts), (reason, when) in trace.fate.items() if reason == "out" and lo <= ts <= hi]
    return {"fps": fps, "agg": agg, "share_min": min(fps[s] / max(shares[s], 1e-9) for s in ids),
            "worst": min(ids, key=lambda s: fps[s] / max(shares[s], 1e-9)), "drops": drops, "busy": busy,
            "idle": idle, "gaps": gaps, "sizes": Counter(r.size for r in recs),
            "p99_ms": float(np.percentile(lat, 99)) * 1000 if lat else float("nan"),
            "policy": policy_summary(trace, lo, hi), "wasted": wasted_drops(trace, gaps, lo, hi, slo_s),
            "trace": trace, "lo": lo}


def wasted_drops(trace: Trace, gaps: list[dict[str, Any]], lo: float, hi: float, slo_s: float) -> Counter:
    """Drops (by reason) that cost a frame for nothing: after the frame was dropped, the engine
    stood idle with nothing queued while the frame could still have made 90 % of the SLO."""
    empty = [g["t"] for g in gaps if g["held"] == 0]
    wasted: Counter = Counter()
    for (sid, ts), (reason, when) in trace.fate.items():
        if reason in ("stale", "superseded") and lo <= ts <= hi and \
                any(when <= t <= ts + 0.9 * slo_s for t in empty):
            wasted[reason] += 1
    return wasted


def policy_summary(trace: Trace, lo: float, hi: float) -> str:
    """The batcher's budget and stale margin over the run (min / median, ms)."""
    plans = [p for p in trace.plans if lo <= p[0] <= hi]
    budget = [p[3] * 1000 for p in plans if p[3] is not None]
    keep = [p[4] * 1000 for p in plans if p[4] is not None]
    if not budget:
        return "no plans"
    return (f"budget min/median {min(budget):.0f}/{np.median(budget):.0f} ms, keep-within "
            + (f"{min(keep):.0f}/{np.median(keep):.0f} ms" if keep else "not learned"))


def idle_gaps(trace: Trace, recs: list[Any]) -> list[dict[str, Any]]:
    """Each interval the engine stood idle between two batches, with what the buffer held
    when it freed and what the dispatcher did: waiting to fill a planned batch (take with a
    deadline), just-in-time wait past the engine's end, nothing queued, or preprocess."""
    gaps = []
    takes = trace.takes
    for prev, nxt in zip(recs, recs[1:]):
        gap = nxt.t_start - prev.t_done
        if gap <= 1e-3:
            continue
        held = sum(1 for key in trace.fate if key[1] <= prev.t_done < trace.left.get(key, float("inf")))
        take = next((t for t in takes if t[1] >= nxt.t_take - 1e-4), None)
        if take is not None and take[0] < prev.t_done - 1e-4 and take[1] > prev.t_done + 1e-3:
            cause = "waiting in take to fill the planned batch"
        elif nxt.t_take > prev.t_done:
            cause = "nothing queued" if held == 0 else "batcher waited (just in time / replanning)"
        else:
            cause = "preprocess not done"
        gaps.append({"t": prev.t_done, "s": gap, "held": held, "cause": cause, "size": nxt.size,
                     "asked": _plan_at(trace, nxt.t_take)})
    return gaps


def _plan_at(trace: Trace, t: float) -> Any:
    before = [p for p in trace.plans if p[0] <= t]
    return before[-1] if before else None


def dump(res: dict[str, Any], limit: int) -> None:
    lo = res["lo"]
    print("  idle gaps (t from warm-up end, ms):")
    for g in sorted(res["gaps"], key=lambda g: -g["s"])[:limit]:
        plan = g["asked"]
        what = "" if plan is None else (f" plan size {plan[2].size}, deadline "
                                        f"{'none' if plan[2].deadline is None else f'{(plan[2].deadline - plan[0]) * 1000:+.0f}'}"
                                        f" ms, lanes {plan[1]}")
        print(f"    t {(g['t'] - lo) * 1000:8.0f}: idle {g['s'] * 1000:5.1f} ms, {g['held']} held, {g['cause']}, "
              f"next batch {g['size']}{what}")
    print("  drops (t from warm-up end, ms; age at drop):")
    rows = sorted((when, sid, ts, reason) for (sid, ts), (reason, when) in res["trace"].fate.items()
                  if reason in ("stale", "superseded", "buffer_full") and ts >= lo)
    for when, sid, ts, reason in rows[:limit]:
        print(f"    t {(when - lo) * 1000:8.0f}: {sid} {reason}, captured {(when - ts) * 1000:.0f} ms before")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="30,5,5,5,5,5,5,5", help="fps per source, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--slo-ms", type=float, default=200.0)
    ap.add_argument("--cost-ms", type=float, default=15.4, help="engine ms per frame (c of a + c*b)")
    ap.add_argument("--fixed-ms", type=float, default=0.0, help="engine ms per batch (a of a + c*b)")
    ap.add_argument("--host-ms", type=float, default=0.0, help="CPU burned per frame in preprocess")
    ap.add_argument("--dump", type=int, default=0, help="print the worst run's N longest idle gaps and first N drops")
    args = ap.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    cap = 1000.0 / args.cost_ms
    print(f"stand-in engine {args.fixed_ms:g} + {args.cost_ms:g} ms x b (batch 1: {1000 / (args.fixed_ms + args.cost_ms):.1f}"
          f" fps, large batches -> {cap:.1f} fps), host {args.host_ms:g} ms/frame; {sum(rates):g} fps offered")
    results = []
    for k in range(args.runs):
        res = one_run(args, rates)
        results.append(res)
        drops = {sid: dict(c) for sid, c in sorted(res["drops"].items())}
        idle = ", ".join(f"{c} {s * 1000:.0f} ms" for c, s in res["idle"].most_common()) or "none"
        print(f"run {k + 1}: aggregate {res['agg']:.1f} fps, lowest share {res['worst']} {res['share_min']:.2f}, "
              f"busy {res['busy'] * 100:.0f}%, p99 {res['p99_ms']:.0f} ms, sizes {dict(sorted(res['sizes'].items()))}, "
              f"{res['policy']}\n  fps " + ", ".join(f"{s} {v:.1f}" for s, v in res["fps"].items()) +
              f"\n  drops {drops}; wasted (engine idle with nothing queued before the frame would have gone "
              f"stale) {dict(res['wasted']) or 'none'}\n  idle {idle}", flush=True)
    if args.dump:
        worst = min(results, key=lambda r: r["share_min"] * r["agg"])
        print(f"worst run: aggregate {worst['agg']:.1f}, lowest share {worst['share_min']:.2f}")
        dump(worst, args.dump)
    return 0


if __name__ == "__main__":
    sys.exit(main())
