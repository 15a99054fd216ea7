"""MediaPipe's SSD detector graphs written out from its calculators, run on LiteRT's raw output:
SsdAnchors, TensorsToDetections, weighted NonMaxSuppression, DetectionLetterboxRemoval. The tests
check our decoders against this, never against themselves."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np


def mp_anchors(size: int, strides: Sequence[int]) -> np.ndarray:
    """ssd_anchors_calculator.cc with fixed_anchor_size and interpolated_scale_aspect_ratio 1.0:
    layers of one stride share a feature map; each adds aspect ratio 1.0 plus the interpolated
    scale per cell, so only the centres matter."""
    anchors, layer = [], 0
    while layer < len(strides):
        per_cell, last = 0, layer
        while last < len(strides) and strides[last] == strides[layer]:
            per_cell += 2
            last += 1
        fm = math.ceil(size / strides[layer])
        for y in range(fm):
            for x in range(fm):
                anchors += [((x + 0.5) / fm, (y + 0.5) / fm)] * per_cell
        layer = last
    return np.asarray(anchors, np.float64)


def _letterbox_input(img_bgr: np.ndarray, size: int, value_range: tuple[float, float]) -> tuple[np.ndarray, tuple]:
    """Keep aspect, BORDER_ZERO (on the image), RGB floats in `value_range` (ImageToTensorCalculator)."""
    h, w = img_bgr.shape[:2]
    r = min(size / h, size / w)
    nh, nw = round(h * r), round(w * r)
    top, left = (size - nh) // 2, (size - nw) // 2
    lo, hi = value_range
    x = np.full((size, size, 3), lo, np.float32)  # the border is pixel 0, before the range is applied
    rgb = cv2.resize(img_bgr[..., ::-1], (nw, nh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    x[top:top + nh, left:left + nw] = lo + rgb / 255 * (hi - lo)
    return x, (top, left, nh, nw)


def ssd_reference(model: Path, img_bgr: np.ndarray, size: int, strides: Sequence[int], num_keypoints: int,
                  value_range: tuple[float, float] = (0.0, 1.0)) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe's detection graph on LiteRT: (box xyxy, score, Kx2 keypoints) in image pixels."""
    from ai_edge_litert.interpreter import Interpreter

    h, w = img_bgr.shape[:2]
    x, (top, left, nh, nw) = _letterbox_input(img_bgr, size, value_range)
    it = Interpreter(str(model))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x[None])
    it.invoke()
    width = 4 + 2 * num_keypoints
    outs = {o["shape"][-1]: it.get_tensor(o["index"])[0] for o in it.get_output_details()}
    raw, logit = outs[width].astype(np.float64), outs[1][:, 0].astype(np.float64)
    anchors = mp_anchors(size, strides)
    score = 1 / (1 + np.exp(-np.clip(logit, -100, 100)))
    dets = []
    for i in np.flatnonzero(score >= 0.5):  # reverse_output_order: x, y, w, h; scale = input size
        cx, cy = raw[i, 0] / size + anchors[i, 0], raw[i, 1] / size + anchors[i, 1]
        bw, bh = raw[i, 2] / size, raw[i, 3] / size
        kps = raw[i, 4:width].reshape(num_keypoints, 2) / size + anchors[i]
        dets.append((np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]), score[i], kps))
    pad = np.array([left / size, top / size])
    span = np.array([nw / size, nh / size])
    out = []
    for box, s, kps in weighted_nms(dets, 0.3):  # then DetectionLetterboxRemoval, then pixels
        b = ((box.reshape(2, 2) - pad) / span * [w, h]).ravel()
        out.append((b, s, (kps - pad) / span * [w, h]))
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def weighted_nms(dets, threshold):
    """non_max_suppression_calculator.cc WeightedNonMaxSuppression."""
    remaining = sorted(dets, key=lambda d: -d[1])
    kept = []
    while remaining:
        top = remaining[0]
        group = [d for d in remaining if iou(top[0], d[0]) > threshold or d is top]
        remaining = [d for d in remaining if not (iou(top[0], d[0]) > threshold or d is top)]
        wsum = sum(d[1] for d in group)
        kept.append((sum(d[0] * d[1] for d in group) / wsum, top[1], sum(d[2] * d[1] for d in group) / wsum))
    return kept
