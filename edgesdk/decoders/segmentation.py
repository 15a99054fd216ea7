"""Segmentation: per-pixel class scores -> a class-id mask in original-image pixels.

Takes [N, C, H, W] (or [N, H, W, C] with ``layout: NHWC``) scores, or [N, 1, H, W] /
[N, H, W] foreground probabilities (thresholded at ``threshold``). The mask is mapped back
through the preprocessing transform (padding removed, resized to the original image) and
stored in ``meta["mask"]`` (uint8 class ids) with the pixel share of each class in
``meta["class_share"]``.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import cv2
import numpy as np

from ..errors import ConfigError, InputMismatchError
from ..preprocess import Transform
from ..results import Result
from .base import Decoder, batch_size, pick_output


class SegmentationDecoder(Decoder):
    kind = "segmentation"

    def __init__(self, labels: Optional[Sequence[str]] = None, threshold: float = 0.5, layout: str = "NCHW",
                 output: Optional[str] = None, **unknown: Any) -> None:
        super().__init__(labels)
        self._check_unknown(unknown)
        if layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"segmentation layout must be NCHW or NHWC, got {layout!r}")
        self.threshold, self.layout, self.output = float(threshold), layout, output

    def _class_map(self, scores: np.ndarray) -> np.ndarray:
        if scores.ndim == 3:
            return (scores > self.threshold).astype(np.uint8)
        if scores.ndim != 4:
            raise InputMismatchError(f"segmentation expects scores [N, C, H, W], got {scores.shape}")
        if self.layout == "NHWC":
            scores = scores.transpose(0, 3, 1, 2)
        if scores.shape[1] == 1:
            return (scores[:, 0] > self.threshold).astype(np.uint8)
        return scores.argmax(axis=1).astype(np.uint8)

    def __call__(self, outputs: Mapping[str, np.ndarray], transforms: Sequence[Transform]) -> list[Result]:
        n = batch_size(outputs, transforms)
        classes = self._class_map(np.asarray(pick_output(outputs, self.output, "class scores"), np.float32))
        results = []
        for i in range(n):
            mask = _to_original(classes[i], transforms[i])
            ids, counts = np.unique(mask, return_counts=True)
            share = {self.label(int(c)): round(float(k) / mask.size, 4) for c, k in zip(ids, counts)}
            results.append(Result(meta={"mask": mask, "class_share": share}))
        return results


def _to_original(mask: np.ndarray, t: Transform) -> np.ndarray:
    """Undo the resize/pad/crop of the preprocessing for a mask in model-input pixels (parts of
    the image a center crop cut off get class 0)."""
    ih, iw = t.input_size if t.input_size[0] else mask.shape
    m = cv2.resize(mask, (iw, ih), interpolation=cv2.INTER_NEAREST) if mask.shape != (ih, iw) else mask
    oh, ow = t.original_size if t.original_size[0] else (ih, iw)
    # the original image in model-input pixels spans [pad, pad + size * ratio)
    sh, sw = max(1, int(round(oh * t.ratio[0]))), max(1, int(round(ow * t.ratio[1])))
    top, left = int(round(t.pad[0])), int(round(t.pad[1]))
    canvas = np.zeros((sh, sw), np.uint8)
    ys, xs = max(0, top), max(0, left)  # model-input window
    ye, xe = min(ih, top + sh), min(iw, left + sw)
    canvas[ys - top:ye - top, xs - left:xe - left] = m[ys:ye, xs:xe]
    return cv2.resize(canvas, (ow, oh), interpolation=cv2.INTER_NEAREST)
