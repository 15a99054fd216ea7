"""Segmentation: per-pixel class scores -> a class-id mask in original-image pixels.

Takes [N, C, H, W] or [N, H, W, C] scores (``layout``: ``auto`` reads the channel axis from the
shape: the one smaller than both spatial dims), or [N, 1, H, W] / [N, H, W, 1] / [N, H, W]
foreground probabilities (MediaPipe's selfie segmenter), optionally after an ``activation``
(``none``, ``sigmoid``, ``softmax``; MediaPipe's TensorsToSegmentation options). A
foreground probability is resized to the original image (bilinear, as MediaPipe does) and
then thresholded at ``threshold``; class scores are argmax-ed and resized nearest. The mask is
mapped back through the preprocessing transform (padding removed) and stored in
``meta["mask"]`` (uint8 class ids) with the pixel share of each class in
``meta["class_share"]`` (by label) and the channel layout read in ``meta["layout"]``.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import cv2
import numpy as np

from ..errors import ConfigError, InputMismatchError
from ..preprocess import Transform
from ..results import Result
from .base import Decoder, batch_size, pick_output

ACTIVATIONS = ("none", "sigmoid", "softmax")


class SegmentationDecoder(Decoder):
    kind = "segmentation"

    def __init__(self, labels: Optional[Sequence[str]] = None, threshold: float = 0.5, layout: str = "auto",
                 activation: str = "none", output: Optional[str] = None, **unknown: Any) -> None:
        super().__init__(labels)
        self._check_unknown(unknown)
        if layout not in ("auto", "NCHW", "NHWC"):
            raise ConfigError(f"segmentation layout must be auto, NCHW or NHWC, got {layout!r}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"segmentation activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.threshold, self.layout, self.activation, self.output = float(threshold), layout, activation, output

    def channels_first(self, scores: np.ndarray) -> tuple[np.ndarray, str]:
        """[N, C, H, W] scores and the layout they were read in ([N, H, W] gets C = 1)."""
        if scores.ndim == 3:
            return scores[:, None], "NHW"
        if scores.ndim != 4:
            raise InputMismatchError(f"segmentation expects scores [N, C, H, W] or [N, H, W, C], got {scores.shape}")
        layout = self.layout
        if layout == "auto":
            _, a, b, c = scores.shape
            if c < min(a, b):
                layout = "NHWC"
            elif a < min(b, c):
                layout = "NCHW"
            else:
                raise ConfigError(f"cannot tell the channel axis of segmentation output {tuple(scores.shape)}; "
                                  "set the decoder's layout to NCHW or NHWC in the bundle manifest")
        return (scores.transpose(0, 3, 1, 2) if layout == "NHWC" else scores), layout

    def _activate(self, scores: np.ndarray) -> np.ndarray:
        if self.activation == "sigmoid":
            return 1.0 / (1.0 + np.exp(-scores))
        if self.activation == "softmax" and scores.shape[1] > 1:
            e = np.exp(scores - scores.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        return scores

    def __call__(self, outputs: Mapping[str, np.ndarray], transforms: Sequence[Transform]) -> list[Result]:
        n = batch_size(outputs, transforms)
        scores, layout = self.channels_first(np.asarray(pick_output(outputs, self.output, "class scores"),
                                                        np.float32))
        scores = self._activate(scores)
        results = []
        for i in range(n):
            if scores.shape[1] == 1:  # a foreground probability: resize first, threshold at full size
                prob = _to_original(scores[i, 0], transforms[i], cv2.INTER_LINEAR)
                mask = (prob > self.threshold).astype(np.uint8)
            else:
                mask = _to_original(scores[i].argmax(axis=0).astype(np.uint8), transforms[i], cv2.INTER_NEAREST)
            ids, counts = np.unique(mask, return_counts=True)
            share = {self.label(int(c)): round(float(k) / mask.size, 4) for c, k in zip(ids, counts)}
            results.append(Result(meta={"mask": mask, "class_share": share, "layout": layout}))
        return results


def _to_original(mask: np.ndarray, t: Transform, interpolation: int = cv2.INTER_NEAREST) -> np.ndarray:
    """Undo the resize/pad/crop of the preprocessing for a map in model-input pixels (parts of
    the image a center crop cut off get 0)."""
    ih, iw = t.input_size if t.input_size[0] else mask.shape
    m = cv2.resize(mask, (iw, ih), interpolation=interpolation) if mask.shape != (ih, iw) else mask
    oh, ow = t.original_size if t.original_size[0] else (ih, iw)
    # the original image in model-input pixels spans [pad, pad + size * ratio)
    sh, sw = max(1, int(round(oh * t.ratio[0]))), max(1, int(round(ow * t.ratio[1])))
    top, left = int(round(t.pad[0])), int(round(t.pad[1]))
    canvas = np.zeros((sh, sw), mask.dtype)
    ys, xs = max(0, top), max(0, left)  # model-input window
    ye, xe = min(ih, top + sh), min(iw, left + sw)
    canvas[ys - top:ye - top, xs - left:xe - left] = m[ys:ye, xs:xe]
    return cv2.resize(canvas, (ow, oh), interpolation=interpolation)
