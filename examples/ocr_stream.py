#!/usr/bin/env python3
"""Text detection on a stream: the PP-OCRv4 detector finds text regions (polygons) in each
frame; results go to JSONL and to a video with the polygons drawn.

    python examples/ocr_stream.py                        # a demo video of real photographs
    python examples/ocr_stream.py --source 0             # a camera pointed at documents
    python examples/ocr_stream.py --source 'scans/*.png' # a folder of images

The detector takes any input size (a multiple of 32); frames are kept at their size up to
--max-side pixels, and frames of different sizes are never mixed in one engine call.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

DEMO = (("page", 8), ("coffee", 4), ("page", 8), ("horse", 4))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default=None, help="camera index, file, folder/glob, URL (default: demo video)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "examples" / "ocr")
    ap.add_argument("--max-side", type=int, default=480, help="shrink frames whose longer side exceeds this")
    ap.add_argument("--batching", default="fixed", choices=["none", "fixed", "adaptive"])
    ap.add_argument("--duration", type=float, default=None)
    args = ap.parse_args()

    import fetch_models
    from edgesdk.presets import make_bundle
    from edgesdk.streaming import run

    args.out.mkdir(parents=True, exist_ok=True)
    bundle = args.out / f"ppocr_det_{args.max_side}"
    if not bundle.exists():
        make_bundle(fetch_models.fetch(quiet=True)["ppocrv4_det.onnx"], bundle,
                    limit_side_len=args.max_side, limit_type="max")
    source = args.source
    if source is None:
        from samplevideo import make_video
        source = f"demo={make_video(args.out / 'demo_text.mp4', DEMO, size=(480, 360)).path}"
    lines = {"frames": 0, "regions": 0}

    def count(frame, result):
        lines["frames"] += 1
        lines["regions"] += len(result)

    policy = {"fixed": {"batch": 4, "max_wait_ms": 50}, "adaptive": {"slo_ms": 500}, "none": {}}[args.batching]
    report = run(bundle, [source], [str(args.out / "text.jsonl"), str(args.out / "text.mp4"), count],
                 batching=args.batching, duration=args.duration, status=sys.stderr.isatty(), **policy)
    print(report.markdown())
    print(f"{lines['regions']} text regions in {lines['frames']} frames; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
