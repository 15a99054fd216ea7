#!/usr/bin/env python3
"""Several cameras through one model: frames of all sources are batched together and
shared fairly under overload (--weight NAME=W gives one more), each source's results
come back to it in order (one annotated video per camera), face landmarks run on the
detected faces (--landmarks: a cascade), and the pipeline's statistics are served for
Prometheus. With the demo videos, a fourth camera joins after 3 s and leaves after 6 s
(add_source / remove_source on the running pipeline); each camera's state is reported.

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
    ap.add_argument("--weight", action="append", default=[], help="NAME=W: share under overload (default 1)")
    ap.add_argument("--landmarks", action="store_true", help="cascade: 468 face-mesh landmarks per detected face")
    ap.add_argument("--gate", action="store_true", help="skip inference on frames that barely changed")
    args = ap.parse_args()

    import fetch_models
    from edgesdk.presets import make_bundle
    from edgesdk.streaming import Pipeline

    args.out.mkdir(parents=True, exist_ok=True)
    bundle = args.out / "blazeface_bundle"
    models = fetch_models.fetch(quiet=True)
    if not bundle.exists():
        make_bundle(models["blazeface_short.tflite"], bundle)
    then = []
    if args.landmarks:
        then.append(args.out / "landmark_bundle")
        if not then[0].exists():
            make_bundle(models["face_landmark.tflite"], then[0])
    sources, realtime, loop = list(args.source), False, False
    if not sources:
        from samplevideo import make_video
        for name, pattern in PATTERNS.items():
            sources.append(f"{name}={make_video(args.out / f'demo_{name}.mp4', pattern, fps=15).path}")
        realtime, loop = True, True  # like cameras: real time, never ending
    sinks = [str(args.out / "results.jsonl"), str(args.out / "out_{source}.mp4")]
    if args.mqtt:
        sinks.append(args.mqtt)
    weights = {name: float(w) for name, _, w in (x.partition("=") for x in args.weight)}
    pipe = Pipeline(bundle, sources, sinks, batching="adaptive", slo_ms=args.slo_ms, realtime=realtime, loop=loop,
                    duration=args.duration, metrics_port=args.metrics_port, status=sys.stderr.isatty(),
                    weights=weights, then=[str(t) for t in then], gate="change" if args.gate else None)
    if not args.source:
        import threading
        import time
        from samplevideo import make_video

        late = make_video(args.out / "demo_porch.mp4", (("camera", 10), ("coffee", 10)), fps=15).path

        def come_and_go() -> None:
            time.sleep(3)
            if pipe.running:
                pipe.add_source(f"porch={late}")
            time.sleep(3)
            if pipe.running:
                pipe.remove_source("porch")

        pipe.start()
        threading.Thread(target=come_and_go, daemon=True).start()
    report = pipe.run()
    print(report.markdown())
    for sid, row in report.stats["sources"].items():
        print(f"{sid}: {row.get('state')} ({row.get('reason', '')}), {row['frames_out']} results, "
              f"{row['cached']} from the gate's cache, dropped {row['drops'] or 0}")
    print(f"outputs in {args.out} (one video per source: out_<name>.mp4)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
