"""Non-maximum suppression over xyxy boxes: hard and MediaPipe's weighted variant."""
from __future__ import annotations

from typing import Optional

import numpy as np


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        max_detections: Optional[int] = None) -> np.ndarray:
    """Indices of the boxes kept by greedy hard NMS, best first."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if max_detections is not None and len(keep) >= max_detections:
            break
        rest = order[1:]
        order = rest[iou_one_to_many(boxes[i], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, extra: Optional[np.ndarray] = None,
                 max_detections: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """MediaPipe's weighted NMS: each kept box is the score-weighted mean of the boxes
    (and `extra` rows, e.g. flattened keypoints) overlapping the best one by more than
    `iou_threshold`; its score is the best one's. Returns (boxes, scores, extra)."""
    order = np.argsort(-scores, kind="stable")
    out_boxes, out_scores, out_extra = [], [], []
    while order.size:
        top = order[0]
        overlap = iou_one_to_many(boxes[top], boxes[order]) > iou_threshold
        overlap[0] = True
        members = order[overlap]
        w = scores[members][:, None]
        out_boxes.append((boxes[members] * w).sum(0) / w.sum())
        if extra is not None:
            out_extra.append((extra[members] * w).sum(0) / w.sum())
        out_scores.append(scores[top])
        order = order[~overlap]
        if max_detections is not None and len(out_scores) >= max_detections:
            break
    n = len(out_scores)
    b = np.asarray(out_boxes, np.float32).reshape(n, 4)
    s = np.asarray(out_scores, np.float32).reshape(n)
    e = None if extra is None else np.asarray(out_extra, np.float32).reshape((n,) + extra.shape[1:])
    return b, s, e
