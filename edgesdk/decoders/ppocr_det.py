"""PP-OCR text detection (DB): probability map -> text polygons and boxes.

The DBPostProcess steps of PaddleOCR/RapidOCR: threshold the map, (dilate), find
contours, fit a minimum-area rectangle to each, score it by the mean probability inside,
then "unclip" it outward by distance = area * unclip_ratio / perimeter and fit the
minimum-area rectangle again. PaddleOCR offsets the polygon with pyclipper (round
joins); for a rectangle the minimum-area rectangle of that rounded offset is the
rectangle grown by the distance on every side, which is what we compute, without
pyclipper or shapely.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import cv2
import numpy as np

from ..errors import ConfigError, InputMismatchError
from ..preprocess import Transform
from ..results import Result
from .base import Decoder, batch_size, pick_output


def order_points(box: np.ndarray) -> np.ndarray:
    """Four points ordered top-left, top-right, bottom-right, bottom-left."""
    xs = box[np.argsort(box[:, 0], kind="stable")]
    left, right = xs[:2], xs[2:]
    tl, bl = left[np.argsort(left[:, 1], kind="stable")]
    tr, br = right[np.argsort(right[:, 1], kind="stable")]
    return np.array([tl, tr, br, bl], np.float32)


def box_score(prob: np.ndarray, box: np.ndarray) -> float:
    """Mean probability inside a quadrilateral (PaddleOCR's box_score_fast)."""
    h, w = prob.shape
    xmin = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    xmax = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    ymin = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    ymax = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), np.uint8)
    pts = (box - np.array([xmin, ymin], np.float32)).astype(np.int32)
    cv2.fillPoly(mask, pts.reshape(1, -1, 2), 1)
    return float(cv2.mean(prob[ymin:ymax + 1, xmin:xmax + 1], mask)[0])


def contour_score(prob: np.ndarray, contour: np.ndarray) -> float:
    """Mean probability inside the contour itself (PaddleOCR's box_score_slow): fairer to
    curved text lines, whose min-area rectangle holds much background."""
    pts = contour.reshape(-1, 2).astype(np.int32)
    h, w = prob.shape
    xmin, ymin = np.clip(pts.min(0), 0, [w - 1, h - 1])
    xmax, ymax = np.clip(pts.max(0), 0, [w - 1, h - 1])
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), np.uint8)
    cv2.fillPoly(mask, (pts - np.array([xmin, ymin])).reshape(1, -1, 2), 1)
    return float(cv2.mean(prob[ymin:ymax + 1, xmin:xmax + 1], mask)[0])


def unclip_rect(rect: tuple, ratio: float) -> tuple:
    """Grow a cv2 RotatedRect ((cx, cy), (w, h), angle) by area * ratio / perimeter per side."""
    (cx, cy), (w, h), angle = rect
    perimeter = 2.0 * (w + h)
    if perimeter <= 0:
        return rect
    d = w * h * ratio / perimeter
    return (cx, cy), (w + 2 * d, h + 2 * d), angle


class PPOCRDetDecoder(Decoder):
    """Text regions as 4-point polygons (clockwise from top-left) plus their xyxy boxes.

    Settings: ``thresh`` (binarization), ``box_thresh`` (min mean probability of a box),
    ``unclip_ratio``, ``max_candidates``, ``use_dilation`` (2x2), ``min_size`` (min short
    side of a box in map pixels), ``score_mode`` ("fast": mean inside the rectangle, as
    RapidOCR; "slow": mean inside the contour), ``output`` (name of the probability map).
    """

    kind = "ppocr_det"
    yields_boxes = True

    def __init__(self, labels: Optional[Sequence[str]] = None, thresh: float = 0.3, box_thresh: float = 0.5,
                 unclip_ratio: float = 1.6, max_candidates: int = 1000, use_dilation: bool = True,
                 min_size: float = 3, score_mode: str = "fast", output: Optional[str] = None,
                 **unknown: Any) -> None:
        super().__init__(labels or ["text"])
        self._check_unknown(unknown)
        if not 0.0 < float(thresh) < 1.0 or not 0.0 <= float(box_thresh) <= 1.0:
            raise ConfigError("ppocr_det thresh must be in (0, 1) and box_thresh in [0, 1]")
        if float(unclip_ratio) < 0:
            raise ConfigError(f"ppocr_det unclip_ratio must be >= 0, got {unclip_ratio}")
        if score_mode not in ("fast", "slow"):
            raise ConfigError(f"ppocr_det score_mode must be 'fast' or 'slow', got {score_mode!r}")
        self.score_mode = score_mode
        self.thresh, self.box_thresh = float(thresh), float(box_thresh)
        self.unclip_ratio, self.max_candidates = float(unclip_ratio), int(max_candidates)
        self.use_dilation, self.min_size, self.output = bool(use_dilation), float(min_size), output

    def polygons(self, prob: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        """One H x W probability map -> (4-point polygons in map pixels, scores)."""
        bitmap = (prob > self.thresh).astype(np.uint8)
        if self.use_dilation:
            bitmap = cv2.dilate(bitmap, np.ones((2, 2), np.uint8))
        contours, _ = cv2.findContours(bitmap * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        polys, scores = [], []
        for contour in contours[: self.max_candidates]:
            rect = cv2.minAreaRect(contour)
            if min(rect[1]) < self.min_size:
                continue
            box = order_points(cv2.boxPoints(rect))
            score = box_score(prob, box) if self.score_mode == "fast" else contour_score(prob, contour)
            if score < self.box_thresh:
                continue
            grown = unclip_rect(rect, self.unclip_ratio)
            if min(grown[1]) < self.min_size + 2:
                continue
            polys.append(order_points(cv2.boxPoints(grown)))
            scores.append(score)
        return polys, scores

    def __call__(self, outputs: Mapping[str, np.ndarray], transforms: Sequence[Transform]) -> list[Result]:
        n = batch_size(outputs, transforms)
        maps = np.asarray(pick_output(outputs, self.output, "a probability map [N, 1, H, W]"))
        if maps.ndim == 4:
            if maps.shape[1] != 1:
                raise InputMismatchError(f"ppocr_det expects a map [N, 1, H, W], got {maps.shape}")
            maps = maps[:, 0]
        if maps.ndim != 3:
            raise InputMismatchError(f"ppocr_det expects a map [N, 1, H, W] or [N, H, W], got {maps.shape}")
        results = []
        for i in range(n):
            prob = maps[i].astype(np.float32, copy=False)
            t = transforms[i]
            polys, scores = self.polygons(prob)
            # map pixels -> model-input pixels (the same unless the head downsamples)
            ih, iw = t.input_size if t.input_size[0] else prob.shape
            sx, sy = iw / prob.shape[1], ih / prob.shape[0]
            oh, ow = t.original_size if t.original_size[0] else (ih, iw)
            out_polys, out_boxes, out_scores = [], [], []
            for poly, score in zip(polys, scores):
                p = t.to_original(poly * np.array([sx, sy], np.float32))
                p[:, 0] = np.clip(p[:, 0], 0, ow - 1)
                p[:, 1] = np.clip(p[:, 1], 0, oh - 1)
                p = order_points(p)
                # PaddleOCR drops boxes 3 pixels or thinner after clipping
                if np.linalg.norm(p[0] - p[1]) <= 3 or np.linalg.norm(p[0] - p[3]) <= 3:
                    continue
                out_polys.append(p)
                out_boxes.append([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()])
                out_scores.append(score)
            # reading order: top to bottom, then left to right
            order = sorted(range(len(out_polys)), key=lambda j: (round(out_boxes[j][1] / 10), out_boxes[j][0]))
            results.append(Result(
                boxes=np.asarray([out_boxes[j] for j in order], np.float32).reshape(-1, 4),
                scores=np.asarray([out_scores[j] for j in order], np.float32),
                class_ids=np.zeros(len(order), np.int64), labels=[self.label(0)] * len(order),
                polygons=[out_polys[j] for j in order]))
        return results


def crop_text(image: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Cut a detected text region out of the original image, straightened.

    `polygon` is 4 points clockwise from top-left (as `PPOCRDetDecoder` gives them). Like
    PaddleOCR's get_rotate_crop_image: a perspective warp to an upright rectangle, turned
    90 degrees when the region is much taller than wide (vertical text). Feed the result
    to the text-direction classifier or a recognizer.
    """
    poly = np.asarray(polygon, np.float32).reshape(4, 2)
    tl, tr, br, bl = poly
    w = max(1, int(round(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))))
    h = max(1, int(round(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))))
    m = cv2.getPerspectiveTransform(poly, np.float32([[0, 0], [w, 0], [w, h], [0, h]]))
    crop = cv2.warpPerspective(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)
    if h / w >= 1.5:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)
