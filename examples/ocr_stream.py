#!/usr/bin/env python3
"""OCR on a stream: the PP-OCRv4 detector finds text lines in each frame, then a cascade
(`--then`) runs on the crops of those lines, all crops of a batch in one call: the
direction classifier turns upside-down lines, the recognizer reads them (CTC decoder).
Each JSONL line carries the text of every box (``detections[i].then.ppocrv4_rec.meta.text``);
a video shows the boxes.

    python examples/ocr_stream.py                        # a demo video: real photos with words drawn
    python examples/ocr_stream.py --source 0             # a camera pointed at documents
    python examples/ocr_stream.py --source 'scans/*.png' # a folder of images

The same from the CLI:

    edgesdk run det/ --then cls/ --then rec/ --source clip.mp4 --sink text.jsonl

The detector takes any input size (a multiple of 32); frames are kept at their size up to
--max-side pixels, and frames of different sizes are never mixed in one engine call.
On the demo video the words drawn are known, so it prints how many were read exactly.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def bundles(out: Path, max_side: int) -> tuple[Path, Path, Path]:
    """The detector, direction classifier and recognizer bundles (built once into `out`)."""
    import fetch_models
    from edgesdk.presets import make_bundle

    models = fetch_models.fetch(quiet=True)
    det, cls, rec = out / f"ppocr_det_{max_side}", out / "ppocr_cls", out / "ppocr_rec"
    if not det.exists():
        make_bundle(models["ppocrv4_det.onnx"], det, limit_side_len=max_side, limit_type="max")
    if not cls.exists():
        make_bundle(models["ppocr_cls.onnx"], cls)
    if not rec.exists():
        make_bundle(models["ppocrv4_rec.onnx"], rec)
    return det, cls, rec


def texts(result) -> list[str]:
    """The recognized text of each box of a frame's result (cascade stage ppocrv4_rec)."""
    return [(x.meta.get("text", "") if x is not None else "") for x in result.then.get("ppocrv4_rec", [])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default=None, help="camera index, file, folder/glob, URL (default: demo video)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "examples" / "ocr")
    ap.add_argument("--max-side", type=int, default=480, help="shrink frames whose longer side exceeds this")
    ap.add_argument("--batching", default="fixed", choices=["none", "fixed", "adaptive"])
    ap.add_argument("--duration", type=float, default=None)
    args = ap.parse_args()

    from edgesdk.streaming import run

    args.out.mkdir(parents=True, exist_ok=True)
    det, cls, rec = bundles(args.out, args.max_side)
    source, truth = args.source, None
    if source is None:
        from samplevideo import make_text_video
        info, truth = make_text_video(args.out / "demo_text.mp4")
        source = f"demo={info.path}"
    tally = {"frames": 0, "boxes": 0, "read": 0, "drawn": 0}

    def count(frame, result):
        tally["frames"] += 1
        tally["boxes"] += len(result)
        if truth is not None and frame.index < len(truth):
            words = {w for t in texts(result) for w in t.split()}
            tally["drawn"] += len(truth[frame.index])
            tally["read"] += sum(w in words for w in truth[frame.index])

    policy = {"fixed": {"batch": 4, "max_wait_ms": 50}, "adaptive": {"slo_ms": 500}, "none": {}}[args.batching]
    report = run(det, [source], [str(args.out / "text.jsonl"), str(args.out / "text.mp4"), count],
                 then=[cls, rec], batching=args.batching, duration=args.duration, status=sys.stderr.isatty(),
                 **policy)
    print(report.markdown())
    print(f"{tally['boxes']} text lines in {tally['frames']} frames; outputs in {args.out}")
    if tally["drawn"]:
        print(f"words drawn and read exactly: {tally['read']}/{tally['drawn']} = {tally['read'] / tally['drawn']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
