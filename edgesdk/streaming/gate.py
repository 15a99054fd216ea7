"""Change-gated inference: skip the engine for frames that barely differ from the last
one it ran on, and re-emit that frame's result marked ``cached`` (DeepStream's
``interval``, Roboflow's motion gate, Reducto's frame filtering, with a plain cheap test).

The test compares the frame with the last frame actually inferred for that source, both as
64x48 grey thumbnails (area average, which ignores sensor noise and codec shimmer), after
matching the overall brightness (a light ramp of up to -30 %/+40 % is not a change; more is).
Two measures, both as fractions of full scale, must stay below the limits for a skip:

- local: the largest change of any region (an 8x8 grid of cells, each 1/8 of the frame's
  width and height), a shift of one thumbnail pixel (~1.6 % of the frame) tolerated per
  cell so camera shimmer is not motion; below `threshold` (default 0.07). This is what
  catches a small object that moves, appears or leaves: averaged over the whole frame it
  would be diluted (measured: 68 % of results kept on a face walking over a still photo).
- global: the mean change over the frame, below `threshold / 2`: many small changes
  everywhere (a zoom) add up even when no region stands out.

A skip is refused too when the last real inference of that source is older than
`max_age_s` (of video position for files, of capture time otherwise), so a slow change is
never hidden for long, and when a slow change that stopped short of the threshold has come
to rest (gate_settle.py: the settled frame is inferred once). The reference is the last frame
inferred, so many small steps add up.
bench/gate.py measures skipped and matching results per video and detector.
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
from .gate_settle import SourceNoise

THUMB = (64, 48)  # (width, height)
GRID = 8  # regions per side
SHIFT_PX = 1  # thumbnail pixels of shift tolerated per region
GAIN_RANGE = (0.7, 1.4)  # brightness ratios matched before comparing
DEFAULT_THRESHOLD = 0.07
GATES = ("none", "change")


@dataclass
class _Ref:
    thumb: np.ndarray
    at: float  # seconds (video position or capture time) of the reference frame


def _thumb(image: np.ndarray) -> np.ndarray:
    # every step-th pixel first, keeping >= 4 per thumbnail pixel each way: a 1080p frame costs
    # ~7 ms whole (8 cameras x 15 fps would be most of a core), ~1 ms subsampled
    step = max(1, min(image.shape[1] // (THUMB[0] * 4), image.shape[0] // (THUMB[1] * 4)))
    image = image[::step, ::step] if step > 1 else image
    grey = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)


def _regions(diff: np.ndarray) -> np.ndarray:
    return cv2.resize(diff, (GRID, GRID), interpolation=cv2.INTER_AREA)


def change(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """(largest region change, mean change) of thumbnail `cur` against `ref`, fractions of full
    scale, after matching brightness; each region takes its best of the shifts within SHIFT_PX."""
    gain = float(np.clip(ref.mean() / max(float(cur.mean()), 1.0), *GAIN_RANGE))
    cur = cur * gain
    mean = float(np.abs(cur - ref).mean()) / 255.0
    r = SHIFT_PX
    padded = cv2.copyMakeBorder(ref, r, r, r, r, cv2.BORDER_REPLICATE)
    h, w = cur.shape
    best: Optional[np.ndarray] = None
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            cells = _regions(np.abs(padded[dy:dy + h, dx:dx + w] - cur))
            best = cells if best is None else np.minimum(best, cells)
    assert best is not None
    return float(best.max()) / 255.0, mean


def _when(frame: Frame) -> float:
    pos = frame.meta.get("position_s") if frame.meta else None
    return float(pos) if pos is not None else frame.timestamp


class ChangeGate:
    """Decides per frame whether to infer (`decide`) and makes cached results (`cached`)."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, max_age_s: float = 2.0) -> None:
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise ConfigError(f"--gate-threshold must be within [0, 1] (the largest change of any region of the "
                              f"frame, a fraction of full scale; default {DEFAULT_THRESHOLD}), got {threshold!r}")
        if not (isinstance(max_age_s, (int, float)) and math.isfinite(max_age_s) and max_age_s > 0):
            raise ConfigError(f"--gate-max-age-s must be a finite number of seconds > 0, got {max_age_s!r}")
        self.threshold = float(threshold)
        self.max_age_s = float(max_age_s)
        self._refs: dict[str, _Ref] = {}
        self._noise: dict[str, SourceNoise] = {}
        self._lock = threading.Lock()

    def decide(self, frame: Frame) -> bool:
        """True: run the engine on this frame (it becomes the reference); False: reuse."""
        thumb, when = _thumb(frame.image), _when(frame)
        with self._lock:
            noise = self._noise.setdefault(frame.source_id, SourceNoise())
            noise.observe(thumb, change)
            ref = self._refs.get(frame.source_id)
            if ref is not None and 0 <= when - ref.at < self.max_age_s and ref.thumb.shape == thumb.shape:
                local, mean = change(ref.thumb, thumb)
                # a slow change that stopped short of the threshold: infer the settled frame once
                if local < self.threshold and mean < self.threshold / 2 and not noise.drifted(local, self.threshold):
                    return False
            self._refs[frame.source_id] = _Ref(thumb, when)
            return True

    def forget(self, source_id: str) -> None:
        with self._lock:
            self._refs.pop(source_id, None)
            self._noise.pop(source_id, None)

    @staticmethod
    def cached(last: Result, from_index: int) -> Result:
        """A copy of the last real result, marked as re-emitted."""
        out = copy.copy(last)
        out.meta = {k: v for k, v in last.meta.items() if k not in ("latency_ms", "infer_ms", "batch_size")}
        out.meta["cached"] = True
        out.meta["cached_from"] = from_index
        return out

    def describe(self) -> dict[str, object]:
        return {"gate": "change", "threshold": self.threshold, "max_age_s": self.max_age_s,
                "measure": f"skip when no region ({GRID}x{GRID} grid, brightness matched, {SHIFT_PX} thumbnail px of "
                           f"shift tolerated) changed by threshold or more and the whole frame by less than "
                           f"threshold/2, fractions of full scale, against the last inferred frame; and once a frame "
                           f"holds still (within the source's noise of the previous one) but drifted from the last "
                           f"inferred one by more than threshold/4, it is inferred"}


def make_gate(name: Optional[str], threshold: Optional[float] = None,
              max_age_s: Optional[float] = None) -> Optional[ChangeGate]:
    key = (name or "none").lower()
    if key == "none":
        if threshold is not None or max_age_s is not None:
            raise ConfigError("--gate-threshold / --gate-max-age-s need --gate change")
        return None
    if key == "change":
        return ChangeGate(DEFAULT_THRESHOLD if threshold is None else threshold,
                          2.0 if max_age_s is None else max_age_s)
    raise ConfigError(f"--gate must be one of {', '.join(GATES)}, got {name!r}")
