"""Where a camera run's time went, from the pipeline's per-batch timeline
(`PipelineStats.timeline()`): when the engine idled and why, the batch sizes chosen, and
what the slowest batches (the e2e p99) spent their time on. Used by bench/stream.py."""
from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np


class GcPauses:
    """Collector pauses while it is installed (gc.callbacks): (count, total s, max s) per generation."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {}
        self._t0 = 0.0

    def __enter__(self) -> "GcPauses":
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: Any) -> None:
        gc.callbacks.remove(self._cb)

    def _cb(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.setdefault(info["generation"], []).append(time.perf_counter() - self._t0)

    def text(self) -> str:
        if not self.pauses:
            return "no collections"
        return ", ".join(f"gen{g} {len(v)} x (max {max(v) * 1000:.1f} ms, total {sum(v) * 1000:.0f} ms)"
                         for g, v in sorted(self.pauses.items()))


def analyse(records: list[Any], lo: float, hi: float) -> dict[str, Any]:
    """Engine idle time by cause and the p99 batches' latency split, over batches started in [lo, hi]."""
    recs = sorted((r for r in records if lo <= r.t_start <= hi), key=lambda r: r.t_start)
    if len(recs) < 2:
        return {}
    idle = {"taken after the engine freed": 0.0, "preprocess not done when it freed": 0.0}
    prev = recs[0]
    for r in recs[1:]:
        gap = r.t_start - prev.t_done
        if gap > 0:
            idle["taken after the engine freed" if r.t_take >= prev.t_done else
                 "preprocess not done when it freed"] += gap
        prev = r
    span = recs[-1].t_done - recs[0].t_start
    e2e = np.array([r.t_out - r.oldest_capture for r in recs])
    cut = np.percentile(e2e, 99)
    worst = [r for r, e in zip(recs, e2e) if e >= cut] or recs
    parts = {"queue": lambda r: r.t_take - r.oldest_capture, "preprocess": lambda r: r.t_submit - r.t_take,
             "engine_wait": lambda r: r.t_start - r.t_submit, "engine": lambda r: r.t_done - r.t_start,
             "decode+sink": lambda r: r.t_out - r.t_done}
    ratio = np.array([(r.t_done - r.t_start) / r.predicted_s for r in recs if r.predicted_s > 0])
    sizes: dict[int, int] = {}
    for r in recs:
        sizes[r.size] = sizes.get(r.size, 0) + 1
    return {"idle_share": {k: v / span for k, v in idle.items()},
            "worst": {k: float(np.mean([f(r) for r in worst])) * 1000 for k, f in parts.items()},
            "worst_sizes": sorted({r.size for r in worst}), "worst_n": len(worst),
            "engine_ratio_p50_p99": (float(np.percentile(ratio, 50)), float(np.percentile(ratio, 99)))
            if len(ratio) else None, "sizes": dict(sorted(sizes.items()))}


def text(a: dict[str, Any], gc_text: str) -> str:
    if not a:
        return "Timeline: too few batches."
    idle = ", ".join(f"{k} {v * 100:.1f}%" for k, v in a["idle_share"].items())
    worst = ", ".join(f"{k} {v:.0f}" for k, v in a["worst"].items())
    ratio = a["engine_ratio_p50_p99"]
    rtxt = f"engine time / predicted p50 {ratio[0]:.2f}, p99 {ratio[1]:.2f}" if ratio else "no predictions"
    return (f"Timeline: engine idle {idle} of the span; batch sizes {a['sizes']}; the {a['worst_n']} slowest "
            f"batches (e2e >= p99; sizes {a['worst_sizes']}) spent on average (ms) {worst}; {rtxt}; "
            f"GC during the run: {gc_text}.")
