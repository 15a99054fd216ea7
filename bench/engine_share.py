#!/usr/bin/env python3
"""Where the CPU goes in a camera run: is the engine slower in the stream than alone because
our own decode/preprocess take its cores, or because of other processes?

The real model of bench/stream.py's cameras part (PP-OCRv4 det at 320x320, one engine
thread) runs in four configurations, interleaved for --rounds:
 - engine alone: the runtime's infer in a loop on one preprocessed frame (nothing else of ours);
 - capacity alone: the pipeline, fixed batch 1, two lossless sources as fast as possible;
 - 8 x 15 fps and 1 x 30 + 7 x 5 fps: live real-time sources, adaptive batching, 200 ms SLO.
For each: the engine's wall time per call and the CPU time its thread got meanwhile
(`time.thread_time` inside the call: wall - CPU is time the engine thread was ready but had
no core), the CPU our preprocess and decode took per processed frame, the process's CPU in
all (`getrusage`), the rest of our threads (sources, batcher, sinks), and what the whole box
used (/proc/stat: what other processes took). Prints one row per run and the medians.

    python bench/engine_share.py [--rounds 3] [--seconds 6]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "bench"))

import fetch_models  # noqa: E402
from edgesdk.predictor import Predictor  # noqa: E402
from edgesdk.presets import make_bundle  # noqa: E402
from edgesdk.streaming import Pipeline  # noqa: E402
from edgesdk.streaming.sources import ProducerSource  # noqa: E402
from samplevideo import frames as real_frames  # noqa: E402
from stream import PATTERN  # noqa: E402

SCENARIOS = {"8 x 15 fps": [15.0] * 8, "1 x 30 + 7 x 5 fps": [30.0] + [5.0] * 7}


class Meter:
    """Wall and thread-CPU seconds of every call of the wrapped functions, by role."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, role: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **kw: Any) -> Any:
            w, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                dw, dc = time.perf_counter() - w, time.thread_time() - c
                with self.lock:
                    self.wall[role] = self.wall.get(role, 0.0) + dw
                    self.cpu[role] = self.cpu.get(role, 0.0) + dc
                    self.calls[role] = self.calls.get(role, 0) + 1
        return timed


def box_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat (steal counted busy)."""
    with open("/proc/stat") as f:
        vals = [float(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)
    return sum(vals) - idle, sum(vals)


def measured(run: Callable[[Meter], int], pred: Predictor) -> dict[str, float]:
    """Run `run(meter)` (returns frames processed) with the predictor's preprocess, decode and
    engine call metered; what each role took per frame, and the process's and box's cores."""
    meter = Meter()
    rt = pred.runtime
    saved = (pred.preprocess, pred.decode, rt._infer_impl)
    pred.preprocess = meter.wrap("preprocess", saved[0])  # type: ignore[method-assign]
    pred.decode = meter.wrap("decode", saved[1])  # type: ignore[method-assign]
    rt._infer_impl = meter.wrap("engine", saved[2])  # type: ignore[method-assign]
    load0 = os.getloadavg()[0]
    ru0, box0, t0 = resource.getrusage(resource.RUSAGE_SELF), box_cpu(), time.perf_counter()
    try:
        frames = run(meter)
    finally:
        pred.preprocess, pred.decode, rt._infer_impl = saved  # type: ignore[method-assign]
    span = time.perf_counter() - t0
    ru1, box1 = resource.getrusage(resource.RUSAGE_SELF), box_cpu()
    ours = (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) / span
    box = (box1[0] - box0[0]) / max(box1[1] - box0[1], 1e-9) * (os.cpu_count() or 1)
    n = max(frames, 1)
    calls = max(meter.calls.get("engine", 0), 1)
    roles = {f"{r}_cpu_ms": meter.cpu.get(r, 0.0) / n * 1000 for r in ("preprocess", "decode")}
    metered = sum(meter.cpu.values()) / span
    return {"fps": frames / span, "engine_wall_ms": meter.wall.get("engine", 0.0) / calls * 1000,
            "engine_cpu_ms": meter.cpu.get("engine", 0.0) / calls * 1000, **roles,
            "engine_cores": meter.cpu.get("engine", 0.0) / span, "batch": n / calls, "ours_cores": ours, "rest_cores": max(0.0, ours - metered), "others_cores": max(0.0, box - ours),
            "load": load0}


def engine_alone(pred: Predictor, frame: np.ndarray, seconds: float) -> Callable[[Meter], int]:
    feeds = pred.feeds(pred.preprocess([frame])[0])

    def run(_meter: Meter) -> int:
        n, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            pred.runtime.submit(feeds).result()  # the engine's worker thread, as in the stream
            n += 1
        return n
    return run


def pipeline_run(pred: Predictor, frames: list[np.ndarray], rates: Optional[list[float]],
                 seconds: float) -> Callable[[Meter], int]:
    """Live sources at `rates` (adaptive, SLO 200 ms), or None: 2 lossless sources, fixed 1."""
    def run(_meter: Meter) -> int:
        if rates is None:
            srcs = [ProducerSource(frames[k * 3:] + frames[:k * 3], f"src{k}") for k in range(2)]
            kw: dict[str, Any] = {"batching": "fixed", "batch": 1}
        else:
            srcs = [ProducerSource(frames[k * 3:] + frames[:k * 3], f"cam{k}", live=True, fps=f)
                    for k, f in enumerate(rates)]
            kw = {"batching": "adaptive", "slo_ms": 200.0, "batch": 16}
        pipe = Pipeline(pred, srcs, loop=True, realtime=rates is not None, duration=seconds, **kw)
        report = pipe.run(handle_signals=False)
        return int(report.stats["frames_out"])
    return run


def row(name: str, m: dict[str, float]) -> str:
    return (f"| {name} | {m['load']:.1f} | {m['fps']:.1f} | {m['engine_wall_ms']:.1f} | {m['engine_cpu_ms']:.1f} | "
            f"{m['engine_wall_ms'] / max(m['engine_cpu_ms'], 1e-9):.2f} | {m['preprocess_cpu_ms']:.1f} | "
            f"{m['decode_cpu_ms']:.1f} | {m['rest_cores']:.2f} | {m['ours_cores']:.2f} | {m['others_cores']:.2f} |")


HEADER = ("| run | load 1 min | frames/s | engine wall ms/call | engine CPU ms/call | wall/CPU | "
          "preprocess CPU ms/frame | decode CPU ms/frame | rest of ours (cores) | ours (cores) | "
          "other processes (cores) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--size", type=int, default=320, help="det input side (bench/stream.py's cameras size)")
    args = ap.parse_args(argv)
    models = fetch_models.fetch(quiet=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"engine_share_{os.getpid()}"
    bundle = make_bundle(models["ppocrv4_det.onnx"], work, size=(args.size, args.size)).path
    pred = Predictor(bundle, threads=1)
    pred.runtime.activate()
    frames, _ = real_frames(PATTERN, size=(256, 256))
    configs = {"engine alone": engine_alone(pred, frames[0], args.seconds),
               "capacity alone (pipeline, fixed 1)": pipeline_run(pred, frames, None, args.seconds)}
    configs.update({name: pipeline_run(pred, frames, rates, args.seconds) for name, rates in SCENARIOS.items()})
    results: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    print(f"PP-OCRv4 det {args.size}x{args.size}, {pred.runtime.backend}, 1 engine thread, {os.cpu_count()} cores; "
          f"{args.rounds} rounds of {args.seconds:g} s, interleaved\n\n{HEADER}", flush=True)
    names = list(configs)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            m = measured(configs[name], pred)
            results[name].append(m)
            print(row(f"{name} (round {r + 1})", m), flush=True)
    print("\nMedians:\n\n" + HEADER)
    med = {name: {k: float(np.median([m[k] for m in ms])) for k in ms[0]} for name, ms in results.items()}
    for name, m in med.items():
        print(row(name, m))
    alone = med["engine alone"]["engine_wall_ms"]
    for name in names[1:]:
        m = med[name]
        print(f"\n{name}: engine {m['engine_wall_ms'] / alone:.2f}x its time alone per call (wall), its thread "
              f"got a core {m['engine_cpu_ms'] / max(m['engine_wall_ms'], 1e-9) * 100:.0f}% of that time; "
              f"(mean batch {m['batch']:.2f}); our other work {m['ours_cores'] - m['engine_cores']:.2f} cores, other processes "
              f"{m['others_cores']:.2f} cores of {os.cpu_count()}")
    pred.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
