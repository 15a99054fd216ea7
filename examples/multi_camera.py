#!/usr/bin/env python3
"""Several cameras through one model: frames of all sources are batched together, each
source's results come back to it in order (one annotated video per camera), and the
pipeline's statistics are served for Prometheus.

    python examples/multi_camera.py                                  # 3 demo "cameras" (videos)
    python examples/multi_camera.py --source door=rtsp://10.0.0.5/live --source desk=0 \\
        --mqtt mqtt://127.0.0.1:1883/faces --metrics-port 9100 --slo-ms 80

Without sources it plays three videos made from real photographs in real time, like three
cameras at 15 fps. Stop with Ctrl-C (outputs are completed) or --duration.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

PATTERNS = {
    "door": (("astronaut", 10), ("coffee", 10), ("camera", 10)),
    "desk": (("page", 10), ("camera", 10), ("rocket", 10)),
    "yard": (("horse", 10), ("astronaut", 10), ("coins", 10)),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", action="append", default=[], help="NAME=SRC, repeatable (default: 3 demo videos)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "examples" / "multi")
    ap.add_argument("--slo-ms", type=float, default=80.0)
    ap.add_argument("--mqtt", default=None, help="also publish results, e.g. mqtt://127.0.0.1:1883/faces")
    ap.add_argument("--metrics-port", type=int, default=None)
    ap.add_argument("--duration", type=float, default=10.0)
    args = ap.parse_args()

    import fetch_models
    from edgesdk.presets import make_bundle
    from edgesdk.streaming import run

    args.out.mkdir(parents=True, exist_ok=True)
    bundle = args.out / "blazeface_bundle"
    if not bundle.exists():
        make_bundle(fetch_models.fetch(quiet=True)["blazeface_short.tflite"], bundle)
    sources, realtime, loop = list(args.source), False, False
    if not sources:
        from samplevideo import make_video
        for name, pattern in PATTERNS.items():
            sources.append(f"{name}={make_video(args.out / f'demo_{name}.mp4', pattern, fps=15).path}")
        realtime, loop = True, True  # like cameras: real time, never ending
    sinks = [str(args.out / "results.jsonl"), str(args.out / "out_{source}.mp4")]
    if args.mqtt:
        sinks.append(args.mqtt)
    report = run(bundle, sources, sinks, batching="adaptive", slo_ms=args.slo_ms, realtime=realtime, loop=loop,
                 duration=args.duration, metrics_port=args.metrics_port, status=sys.stderr.isatty())
    print(report.markdown())
    print(f"outputs in {args.out} (one video per source: out_<name>.mp4)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
