"""`Frame` and `Result`: what sources, decoders and sinks speak.

Like supervision's `Detections`, one result type serves classification, detection,
text detection (polygons) and keypoints; `from_*` adapters live with the decoders.
Arrays are numpy; coordinates are pixels of the original frame (x1, y1, x2, y2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


@dataclass
class Frame:
    """One image from a source."""

    source_id: str
    index: int
    timestamp: float  # capture time, time.time() seconds
    image: np.ndarray  # HxWx3 uint8 BGR
    meta: dict[str, Any] = field(default_factory=dict)


def _empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


@dataclass
class Result:
    """What a model said about one frame."""

    boxes: np.ndarray = field(default_factory=lambda: _empty((0, 4), np.float32))  # N x 4 xyxy
    scores: np.ndarray = field(default_factory=lambda: _empty((0,), np.float32))  # N
    class_ids: np.ndarray = field(default_factory=lambda: _empty((0,), np.int64))  # N
    labels: list[str] = field(default_factory=list)  # N (may be empty when unlabelled)
    keypoints: Optional[np.ndarray] = None  # N x K x 2
    polygons: Optional[list[np.ndarray]] = None  # N arrays of P x 2
    #: classification: [(class_id, label, score)] best first
    topk: list[tuple[int, str, float]] = field(default_factory=list)
    source_id: str = ""
    frame_index: int = -1
    timestamp: float = 0.0
    #: timings and anything else a stage wants to attach (latency_ms, batch_size, ...)
    meta: dict[str, Any] = field(default_factory=dict)
    #: cascades (`--then`): stage name -> one Result per detection, made on its crop
    then: dict[str, list[Optional["Result"]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, np.int64).reshape(-1)
        n = len(self.boxes)
        if len(self.scores) != n or len(self.class_ids) != n:
            raise ValueError(f"Result: boxes ({n}), scores ({len(self.scores)}) and class_ids "
                             f"({len(self.class_ids)}) must have the same length")
        if self.labels and len(self.labels) != n:
            raise ValueError(f"Result: {len(self.labels)} labels for {n} boxes")

    def __len__(self) -> int:
        return len(self.boxes)

    def filter(self, mask: np.ndarray) -> "Result":
        mask = np.asarray(mask)
        idx = np.flatnonzero(mask) if mask.dtype == bool else mask
        return Result(
            boxes=self.boxes[idx], scores=self.scores[idx], class_ids=self.class_ids[idx],
            labels=[self.labels[i] for i in idx] if self.labels else [],
            keypoints=self.keypoints[idx] if self.keypoints is not None else None,
            polygons=[self.polygons[i] for i in idx] if self.polygons is not None else None,
            topk=list(self.topk), source_id=self.source_id, frame_index=self.frame_index,
            timestamp=self.timestamp, meta=dict(self.meta),
        )

    def _then_dict(self, i: int) -> dict[str, Any]:
        """What the cascade stages said about detection i (None: that stage found nothing)."""
        out: dict[str, Any] = {}
        for stage, children in self.then.items():
            child = children[i] if i < len(children) else None
            if child is None:
                out[stage] = None
                continue
            d = child.to_dict()
            out[stage] = {k: v for k, v in d.items() if k not in ("source_id", "frame_index", "timestamp")}
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the JSONL and MQTT sinks write)."""
        d: dict[str, Any] = {
            "source_id": self.source_id, "frame_index": self.frame_index, "timestamp": self.timestamp,
            "detections": [
                {"box": [round(float(v), 2) for v in self.boxes[i]], "score": round(float(self.scores[i]), 4),
                 "class_id": int(self.class_ids[i]),
                 **({"label": self.labels[i]} if self.labels else {}),
                 **({"keypoints": np.round(self.keypoints[i], 2).tolist()} if self.keypoints is not None else {}),
                 **({"polygon": np.round(self.polygons[i], 1).tolist()} if self.polygons is not None else {}),
                 **({"then": self._then_dict(i)} if self.then else {})}
                for i in range(len(self))
            ],
        }
        if self.topk:
            d["topk"] = [{"class_id": c, "label": lbl, "score": round(float(s), 4)} for c, lbl, s in self.topk]
        if self.meta:
            d["meta"] = {k: v for k, v in self.meta.items() if isinstance(v, (int, float, str, bool))}
        return d
