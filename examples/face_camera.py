#!/usr/bin/env python3
"""Face detection on a camera: BlazeFace (short range) streamed with adaptive batching into an
annotated video and a JSONL file.

    python examples/face_camera.py                  # camera 0, or a demo video when there is none
    python examples/face_camera.py --source clip.mp4 --duration 20
    python examples/face_camera.py --source rtsp://10.0.0.5/live --slo-ms 50

Without a camera it plays a video made from real photographs (faces and no faces) in real
time, so the drops, latency and status line behave as with a camera. Ctrl-C stops it
cleanly (the outputs are completed).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def camera_available(index: int = 0) -> bool:
    if not os.path.exists(f"/dev/video{index}"):
        return False
    import cv2
    cap = cv2.VideoCapture(index)
    ok = cap.isOpened() and cap.read()[0]
    cap.release()
    return bool(ok)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default=None, help="camera index, file, URL (default: camera 0 or a demo video)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "examples" / "faces")
    ap.add_argument("--slo-ms", type=float, default=50.0)
    ap.add_argument("--duration", type=float, default=None, help="seconds (default: until the source ends)")
    args = ap.parse_args()

    import fetch_models
    from edgesdk.presets import make_bundle
    from edgesdk.streaming import run

    args.out.mkdir(parents=True, exist_ok=True)
    bundle = args.out / "blazeface_bundle"
    if not bundle.exists():
        make_bundle(fetch_models.fetch(quiet=True)["blazeface_short.tflite"], bundle)
    realtime, source = False, args.source
    if source is None and camera_available():
        source = "cam=0"
    elif source is None:
        from samplevideo import make_video
        source = f"demo={make_video(args.out / 'demo_faces.mp4', repeat=3).path}"
        realtime = True  # play it like a camera
        print(f"no camera found: playing {source.split('=', 1)[1]} in real time", file=sys.stderr)

    faces = {"frames": 0, "with_face": 0}

    def count(frame, result):
        faces["frames"] += 1
        faces["with_face"] += int(len(result) > 0)

    report = run(bundle, [source], [str(args.out / "faces.jsonl"), str(args.out / "faces.mp4"), count],
                 batching="adaptive", slo_ms=args.slo_ms, realtime=realtime, duration=args.duration,
                 status=sys.stderr.isatty())
    print(report.markdown())
    print(f"frames with a face: {faces['with_face']} of {faces['frames']}; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
