#!/usr/bin/env python3
"""The main job end to end, as a user runs it from the command line (`make demo`).

1. `edgesdk detect`: which device profile fits this machine.
2. `edgesdk convert`: the real PP-OCRv4 text detector -> a bundle for that profile,
   calibrated on real images, accuracy-checked against fp32, variants measured here.
3. `edgesdk predict`: the bundle finds text on a real photograph.
4. `edgesdk run`: a video made from real photographs streamed through BlazeFace with
   adaptive batching into JSONL + annotated video; faces only where there are faces.

Outputs land in out/demo/. Every step is an `edgesdk` command printed before it runs.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
OUT = ROOT / "out" / "demo"
EDGESDK = [sys.executable, "-m", "edgesdk"]


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def edgesdk(*args: str, capture: bool = False) -> str:
    print("$ edgesdk " + " ".join(shlex.quote(a) for a in args), flush=True)
    proc = subprocess.run(EDGESDK + list(args), cwd=ROOT, text=True,
                          stdout=subprocess.PIPE if capture else None)
    if proc.returncode != 0:
        raise SystemExit(f"demo failed: `edgesdk {' '.join(args)}` exited {proc.returncode}")
    if capture:
        print(proc.stdout, end="")
    return proc.stdout or ""


def write_images(folder: Path, images: dict) -> list[Path]:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, img in images.items():
        p = folder / f"{name}.png"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


def main() -> int:
    import fetch_models
    import sampledata
    import samplevideo

    t0 = time.time()
    OUT.mkdir(parents=True, exist_ok=True)
    models = fetch_models.fetch(quiet=True)

    step("1/4 which device is this?")
    detected = subprocess.run(EDGESDK + ["detect", "--json"], cwd=ROOT, text=True, capture_output=True)
    profile = json.loads(detected.stdout).get("profile") or "generic-x86-64"
    edgesdk("detect")

    step(f"2/4 convert the PP-OCRv4 text detector for {profile}")
    calib = sampledata.calibration_images(OUT / "calib")
    test_images = write_images(OUT / "images", sampledata.text_photos())
    det_bundle = OUT / "ppocrv4_det_bundle"
    edgesdk("convert", str(models["ppocrv4_det.onnx"]), "--profile", profile, "--calib", str(calib),
            "--precision", "auto", "--input-shape", "1,3,640,640", "--max-accuracy-drop", "0.02",
            "-o", str(det_bundle), "--force")
    report = det_bundle / "report.md"
    if report.is_file():
        print(report.read_text())

    step("3/4 find text on real photographs with the bundle")
    edgesdk("predict", str(det_bundle), *map(str, test_images))

    step("4/4 stream a real video through BlazeFace (adaptive batching, 100 ms latency target)")
    from edgesdk.presets import make_bundle

    face_bundle = OUT / "blazeface_bundle"
    if not face_bundle.exists():
        make_bundle(models["blazeface_short.tflite"], face_bundle)
    video = samplevideo.make_video(OUT / "faces.mp4", repeat=2)
    results = OUT / "faces.jsonl"
    edgesdk("run", str(face_bundle), "--source", f"cam={video.path}", "--realtime",
            "--batching", "adaptive", "--slo-ms", "100",
            "--sink", str(results), "--sink", str(OUT / "faces_annotated.mp4"),
            "--report", str(OUT / "run_report.json"))
    lines = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    got = {r["frame_index"]: len(r["detections"]) > 0 for r in lines}
    truth = video.has_face
    right = sum(got.get(i) == truth[i] for i in range(len(truth)))
    print(f"\nframes with a face found where the photo has one: {right}/{len(truth)} frames right "
          f"({sum(truth)} with faces, {len(truth) - sum(truth)} without); "
          f"{len(lines)} results in {results.relative_to(ROOT)}")
    print(f"annotated video: {(OUT / 'faces_annotated.mp4').relative_to(ROOT)}")
    print(f"\ndemo finished in {time.time() - t0:.0f} s; outputs in {OUT.relative_to(ROOT)}/")
    return 0 if right >= 0.9 * len(truth) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
