"""Draw results on images, supervision-style.

Each annotator takes its settings in ``__init__`` and has one method,
``annotate(image, result) -> image``, which draws **in place** on an HxWx3 uint8 BGR image
and returns it (pass ``image.copy()`` to keep the original). Annotators that have nothing
to draw for a result (no boxes, no keypoints, ...) return the image untouched, so a fixed
list works for every task::

    from edgesdk.annotate import BoxAnnotator, LabelAnnotator, draw
    img = LabelAnnotator().annotate(BoxAnnotator(thickness=3).annotate(img.copy(), result), result)
    img = draw(frame.image, result)          # the default set, on a copy

Colours are BGR. ``color=None`` picks one per class id from a fixed palette, so a class
keeps its colour across frames. ``thickness=None`` / ``text_scale=None`` scale with the
image size (a 2-pixel line is invisible on 4K and heavy on 160x120).
"""
from __future__ import annotations

from typing import Iterable, Optional, Protocol, Sequence

import cv2
import numpy as np

from .errors import ConfigError, InputMismatchError
from .results import Result

Color = tuple[int, int, int]

#: distinct, readable on photos (BGR)
PALETTE: tuple[Color, ...] = (
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
    (10, 249, 72), (23, 204, 146), (134, 219, 61), (211, 188, 0), (209, 85, 0),
    (255, 194, 0), (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132),
    (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255), (0, 150, 255),
)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


class Annotator(Protocol):
    def annotate(self, image: np.ndarray, result: Result) -> np.ndarray: ...


def class_color(class_id: int) -> Color:
    return PALETTE[int(class_id) % len(PALETTE)]


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = (f"shape {image.shape} dtype {image.dtype}" if isinstance(image, np.ndarray)
                else type(image).__name__)
        raise InputMismatchError(f"annotate: image must be an HxWx3 uint8 BGR array, got {desc}")
    if not image.flags.writeable or not image.flags.c_contiguous:
        raise InputMismatchError("annotate: image must be writable and C-contiguous "
                                 "(annotators draw in place; pass np.ascontiguousarray(image))")
    return image


def _check_color(name: str, color: Optional[Sequence[int]]) -> Optional[Color]:
    if color is None:
        return None
    c = tuple(int(v) for v in color)
    if len(c) != 3 or not all(0 <= v <= 255 for v in c):
        raise ConfigError(f"{name}: color must be three 0-255 values (B, G, R), got {color!r}")
    return c  # type: ignore[return-value]


def _check_positive(name: str, value: Optional[float], allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(f"{name} must be > 0{' (or None for automatic)' if allow_none else ''}, got {value!r}")


def auto_thickness(image: np.ndarray) -> int:
    return max(2, int(round(min(image.shape[:2]) / 240)))


def auto_text_scale(image: np.ndarray) -> float:
    return max(0.35, min(image.shape[:2]) / 900)


def _pick(color: Optional[Color], result: Result, i: int) -> Color:
    if color is not None:
        return color
    return class_color(int(result.class_ids[i])) if len(result.class_ids) > i else PALETTE[i % len(PALETTE)]


def _text_box(image: np.ndarray, text: str, org: tuple[int, int], scale: float, thickness: int,
              padding: int, bg: Color, fg: Color) -> None:
    """Text with a filled background; ``org`` is the box's top-left, clamped into the image."""
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thickness)
    h, w = image.shape[:2]
    bw, bh = tw + 2 * padding, th + base + 2 * padding
    x = int(min(max(org[0], 0), max(w - bw, 0)))
    y = int(min(max(org[1], 0), max(h - bh, 0)))
    cv2.rectangle(image, (x, y), (x + bw, y + bh), bg, -1)
    cv2.putText(image, text, (x + padding, y + padding + th), _FONT, scale, fg, thickness, cv2.LINE_AA)


class BoxAnnotator:
    """Rectangles around ``result.boxes``."""

    def __init__(self, color: Optional[Sequence[int]] = None, thickness: Optional[int] = None) -> None:
        self.color = _check_color("BoxAnnotator", color)
        _check_positive("BoxAnnotator thickness", thickness)
        self.thickness = thickness

    def annotate(self, image: np.ndarray, result: Result) -> np.ndarray:
        _check_image(image)
        t = self.thickness or auto_thickness(image)
        for i, box in enumerate(result.boxes):
            if not np.all(np.isfinite(box)):
                continue
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cv2.rectangle(image, (x1, y1), (x2, y2), _pick(self.color, result, i), t)
        return image


class LabelAnnotator:
    """``label score`` above each box's top-left corner (inside the image when there is no room)."""

    def __init__(self, color: Optional[Sequence[int]] = None, text_color: Sequence[int] = (255, 255, 255),
                 text_scale: Optional[float] = None, text_thickness: int = 1, text_padding: int = 3,
                 show_score: bool = True) -> None:
        self.color = _check_color("LabelAnnotator", color)
        self.text_color = _check_color("LabelAnnotator text_color", text_color)
        _check_positive("LabelAnnotator text_scale", text_scale)
        _check_positive("LabelAnnotator text_thickness", text_thickness, allow_none=False)
        if text_padding < 0:
            raise ConfigError(f"LabelAnnotator text_padding must be >= 0, got {text_padding}")
        self.text_scale, self.text_thickness, self.text_padding = text_scale, int(text_thickness), int(text_padding)
        self.show_score = show_score

    def text(self, result: Result, i: int) -> str:
        name = result.labels[i] if result.labels else f"class {int(result.class_ids[i])}"
        return f"{name} {float(result.scores[i]):.2f}" if self.show_score else name

    def annotate(self, image: np.ndarray, result: Result) -> np.ndarray:
        _check_image(image)
        scale = self.text_scale or auto_text_scale(image)
        for i, box in enumerate(result.boxes):
            if not np.all(np.isfinite(box)):
                continue
            text = self.text(result, i)
            (_, th), base = cv2.getTextSize(text, _FONT, scale, self.text_thickness)
            bh = th + base + 2 * self.text_padding
            x1, y1 = int(round(box[0])), int(round(box[1]))
            y = y1 - bh if y1 - bh >= 0 else y1  # above the box, else just inside it
            _text_box(image, text, (x1, y), scale, self.text_thickness, self.text_padding,
                      _pick(self.color, result, i), self.text_color)  # type: ignore[arg-type]
        return image


class KeypointAnnotator:
    """Dots at ``result.keypoints`` (N x K x 2); optional ``edges`` [(a, b), ...] joins keypoints."""

    def __init__(self, color: Optional[Sequence[int]] = None, radius: Optional[int] = None,
                 edges: Iterable[tuple[int, int]] = ()) -> None:
        self.color = _check_color("KeypointAnnotator", color)
        _check_positive("KeypointAnnotator radius", radius)
        self.radius = radius
        self.edges = [(int(a), int(b)) for a, b in edges]

    def annotate(self, image: np.ndarray, result: Result) -> np.ndarray:
        _check_image(image)
        if result.keypoints is None:
            return image
        r = self.radius or auto_thickness(image) + 1
        kps = np.asarray(result.keypoints, np.float32)
        for i, pts in enumerate(kps.reshape(len(kps), -1, 2) if kps.size else []):
            c = _pick(self.color, result, i)
            ok = np.all(np.isfinite(pts), axis=1)
            for a, b in self.edges:
                if a < len(pts) and b < len(pts) and ok[a] and ok[b]:
                    cv2.line(image, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]), c,
                             max(1, r // 2), cv2.LINE_AA)
            for p, good in zip(pts, ok):
                if good:
                    cv2.circle(image, (int(round(p[0])), int(round(p[1]))), r, c, -1, cv2.LINE_AA)
        return image


class PolygonAnnotator:
    """Outlines of ``result.polygons`` (text regions, masks), optionally filled translucent."""

    def __init__(self, color: Optional[Sequence[int]] = None, thickness: Optional[int] = None,
                 fill_opacity: float = 0.0) -> None:
        self.color = _check_color("PolygonAnnotator", color)
        _check_positive("PolygonAnnotator thickness", thickness)
        if not 0.0 <= fill_opacity <= 1.0:
            raise ConfigError(f"PolygonAnnotator fill_opacity must be within [0, 1], got {fill_opacity}")
        self.thickness, self.fill_opacity = thickness, float(fill_opacity)

    def annotate(self, image: np.ndarray, result: Result) -> np.ndarray:
        _check_image(image)
        if not result.polygons:
            return image
        t = self.thickness or auto_thickness(image)
        polys = [(i, np.round(np.asarray(p, np.float32).reshape(-1, 2)).astype(np.int32))
                 for i, p in enumerate(result.polygons)]
        polys = [(i, p) for i, p in polys if len(p) >= 2]
        if self.fill_opacity > 0:
            overlay = image.copy()
            for i, p in polys:
                cv2.fillPoly(overlay, [p], _pick(self.color, result, i))
            cv2.addWeighted(overlay, self.fill_opacity, image, 1 - self.fill_opacity, 0, dst=image)
        for i, p in polys:
            cv2.polylines(image, [p], True, _pick(self.color, result, i), t, cv2.LINE_AA)
        return image


class TopKAnnotator:
    """Classification: the top ``k`` of ``result.topk`` as ``label score`` lines in a corner."""

    def __init__(self, k: int = 3, color: Sequence[int] = (0, 0, 0), text_color: Sequence[int] = (255, 255, 255),
                 text_scale: Optional[float] = None, text_thickness: int = 1, text_padding: int = 4,
                 position: tuple[int, int] = (0, 0)) -> None:
        _check_positive("TopKAnnotator k", k, allow_none=False)
        _check_positive("TopKAnnotator text_scale", text_scale)
        _check_positive("TopKAnnotator text_thickness", text_thickness, allow_none=False)
        self.k = int(k)
        self.color = _check_color("TopKAnnotator", color)
        self.text_color = _check_color("TopKAnnotator text_color", text_color)
        self.text_scale, self.text_thickness, self.text_padding = text_scale, int(text_thickness), int(text_padding)
        self.position = (int(position[0]), int(position[1]))

    def annotate(self, image: np.ndarray, result: Result) -> np.ndarray:
        _check_image(image)
        scale = self.text_scale or auto_text_scale(image)
        x, y = self.position
        for class_id, label, score in result.topk[: self.k]:
            text = f"{label or f'class {class_id}'} {float(score):.2f}"
            (_, th), base = cv2.getTextSize(text, _FONT, scale, self.text_thickness)
            _text_box(image, text, (x, y), scale, self.text_thickness, self.text_padding,
                      self.color, self.text_color)  # type: ignore[arg-type]
            y += th + base + 2 * self.text_padding
        return image


class ComposeAnnotator:
    """Several annotators applied in order (itself an annotator)."""

    def __init__(self, annotators: Iterable[Annotator]) -> None:
        self.annotators = list(annotators)
        for a in self.annotators:
            if not callable(getattr(a, "annotate", None)):
                raise ConfigError(f"{a!r} is not an annotator (it has no annotate(image, result) method)")

    def annotate(self, image: np.ndarray, result: Result) -> np.ndarray:
        for a in self.annotators:
            image = a.annotate(image, result)
        return image


def default_annotator() -> ComposeAnnotator:
    """Polygons, boxes, keypoints, labels and top-k: whatever the result holds gets drawn."""
    return ComposeAnnotator([PolygonAnnotator(), BoxAnnotator(), KeypointAnnotator(), LabelAnnotator(),
                             TopKAnnotator()])


def draw(image: np.ndarray, result: Result, annotator: Optional[Annotator] = None) -> np.ndarray:
    """A copy of ``image`` with ``result`` drawn on it (the default annotators unless given)."""
    if not isinstance(image, np.ndarray):
        _check_image(image)
    out = np.ascontiguousarray(image).copy()
    return (annotator or default_annotator()).annotate(out, result)
