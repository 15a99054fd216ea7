"""How much two models agree on one frame, by the task's metric (what the canary averages).

- classification: top-1 agreement (1.0 when both pick the same class, else 0.0), as the
  converter's accuracy guard measures classifiers;
- detection / text_detection: box F1 at IoU >= 0.5 (same class for detection; text regions
  compare their xyxy boxes); both empty is full agreement;
- raw: cosine similarity of the outputs (converters.compare.cosine, the guard's default).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from converters.compare import cosine

from ..decoders.nms import iou_one_to_many
from ..errors import ConfigError
from ..results import Result

METRICS = ("top1", "box_f1", "cosine")
BY_TASK = {"classification": "top1", "detection": "box_f1", "text_detection": "box_f1", "raw": "cosine"}


def metric_for(task: str, requested: Optional[str] = None) -> str:
    """The metric to use: the one asked for (checked against the task), else the task's own."""
    if requested is None:
        return BY_TASK.get(task, "cosine")
    if requested not in METRICS:
        raise ConfigError(f"canary metric {requested!r} is not one of {', '.join(METRICS)}")
    if requested == "top1" and task != "classification":
        raise ConfigError(f"top-1 agreement needs a classifier; this bundle's task is {task!r} (use box_f1 or cosine)")
    if requested == "box_f1" and task not in ("detection", "text_detection"):
        raise ConfigError(f"box F1 needs a detector; this bundle's task is {task!r} (use top1 or cosine)")
    return requested


def top1(a: Result, b: Result) -> float:
    if not a.topk or not b.topk:
        return float(not a.topk and not b.topk)
    return float(a.topk[0][0] == b.topk[0][0])


def box_f1(a: Result, b: Result, iou: float = 0.5, same_class: bool = True) -> float:
    """F1 of `b`'s boxes against `a`'s, matched greedily by IoU (highest score first)."""
    na, nb = len(a.boxes), len(b.boxes)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    free = np.ones(na, bool)
    matched = 0
    for j in np.argsort(-b.scores):
        ious = iou_one_to_many(b.boxes[j], a.boxes)
        ious[~free] = -1.0
        if same_class:
            ious[a.class_ids != b.class_ids[j]] = -1.0
        i = int(np.argmax(ious))
        if ious[i] >= iou:
            free[i] = False
            matched += 1
    precision, recall = matched / nb, matched / na
    return 0.0 if matched == 0 else 2 * precision * recall / (precision + recall)


def outputs_cosine(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Worst cosine over the outputs both models have (by name, else by position)."""
    if set(a) == set(b):
        pairs = [(a[k], b[k]) for k in a]
    else:
        pairs = list(zip(a.values(), b.values()))
    return min((cosine(x, y) for x, y in pairs), default=0.0)


def agreement(metric: str, task: str, ra: Result, rb: Result, oa: dict, ob: dict) -> float:
    if metric == "top1":
        return top1(ra, rb)
    if metric == "box_f1":
        return box_f1(ra, rb, same_class=task == "detection")
    return outputs_cosine(oa, ob)
