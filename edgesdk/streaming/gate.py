"""Change-gated inference: skip the engine for frames that barely differ from the last
one it ran on, and re-emit that frame's result marked ``cached`` (DeepStream's
``interval``, Roboflow's motion gate, Reducto's frame filtering, with a plain cheap test).

The test: both frames as 32x32 grey thumbnails (area average, which ignores sensor noise
and codec shimmer), the mean absolute difference divided by 255. Below `threshold` the
frame is skipped, unless the last real inference of that source is older than
`max_age_s` (of video position for files, of capture time otherwise), so a slow change
is never hidden for long. The reference is the last frame actually inferred: many small
steps add up and are caught.
"""
from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from ..errors import ConfigError
from ..results import Frame, Result

THUMB = (32, 32)
GATES = ("none", "change")


@dataclass
class _Ref:
    thumb: np.ndarray
    at: float  # seconds (video position or capture time) of the reference frame


def _thumb(image: np.ndarray) -> np.ndarray:
    grey = image if image.ndim == 2 else cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)


def _when(frame: Frame) -> float:
    pos = frame.meta.get("position_s") if frame.meta else None
    return float(pos) if pos is not None else frame.timestamp


class ChangeGate:
    """Decides per frame whether to infer (`decide`) and makes cached results (`cached`)."""

    def __init__(self, threshold: float = 0.02, max_age_s: float = 2.0) -> None:
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise ConfigError(f"--gate-threshold must be within [0, 1] (a mean pixel change as a fraction of "
                              f"full scale; 0.02 is a good start), got {threshold!r}")
        if not (isinstance(max_age_s, (int, float)) and math.isfinite(max_age_s) and max_age_s > 0):
            raise ConfigError(f"--gate-max-age-s must be a finite number of seconds > 0, got {max_age_s!r}")
        self.threshold = float(threshold)
        self.max_age_s = float(max_age_s)
        self._refs: dict[str, _Ref] = {}
        self._lock = threading.Lock()

    def decide(self, frame: Frame) -> bool:
        """True: run the engine on this frame (it becomes the reference); False: reuse."""
        thumb, when = _thumb(frame.image), _when(frame)
        with self._lock:
            ref = self._refs.get(frame.source_id)
            if ref is not None and 0 <= when - ref.at < self.max_age_s and ref.thumb.shape == thumb.shape:
                if float(np.abs(thumb - ref.thumb).mean()) / 255.0 < self.threshold:
                    return False
            self._refs[frame.source_id] = _Ref(thumb, when)
            return True

    def forget(self, source_id: str) -> None:
        with self._lock:
            self._refs.pop(source_id, None)

    @staticmethod
    def cached(last: Result, from_index: int) -> Result:
        """A copy of the last real result, marked as re-emitted."""
        out = copy.copy(last)
        out.meta = {k: v for k, v in last.meta.items() if k not in ("latency_ms", "infer_ms", "batch_size")}
        out.meta["cached"] = True
        out.meta["cached_from"] = from_index
        return out

    def describe(self) -> dict[str, float]:
        return {"gate": "change", "threshold": self.threshold, "max_age_s": self.max_age_s}


def make_gate(name: Optional[str], threshold: Optional[float] = None,
              max_age_s: Optional[float] = None) -> Optional[ChangeGate]:
    key = (name or "none").lower()
    if key == "none":
        if threshold is not None or max_age_s is not None:
            raise ConfigError("--gate-threshold / --gate-max-age-s need --gate change")
        return None
    if key == "change":
        return ChangeGate(0.02 if threshold is None else threshold, 2.0 if max_age_s is None else max_age_s)
    raise ConfigError(f"--gate must be one of {', '.join(GATES)}, got {name!r}")
