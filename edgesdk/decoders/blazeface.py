"""BlazeFace and other MediaPipe SSD detectors: SSD anchors + box/keypoint decode + weighted NMS.

Follows MediaPipe's ssd_anchors_calculator and tflite_tensors_to_detections_calculator
with fixed-size anchors: a regressor row is (dx, dy, w, h, kx0, ky0, ...) in model-input
pixels relative to its anchor centre; the score is a logit clipped at +-raw_score_limit.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..errors import ConfigError, InputMismatchError
from ..preprocess import Transform
from ..results import Result
from .base import Decoder, batch_size, pick_output
from .nms import nms, weighted_nms


def ssd_anchors(input_size: Sequence[int], strides: Sequence[int], offset: Sequence[float] = (0.5, 0.5),
                interpolated_scale_aspect_ratio: float = 1.0) -> np.ndarray:
    """Anchor centres (A x 2, normalized x, y) as MediaPipe's SsdAnchorsCalculator makes them
    for fixed-size anchors with a single aspect ratio (1.0) per layer.

    Consecutive layers with the same stride share one feature map; each contributes one
    anchor per cell, plus one more for the interpolated scale when that ratio is 1.0.
    """
    h, w = int(input_size[0]), int(input_size[1])
    anchors = []
    layer, n = 0, len(strides)
    while layer < n:
        last, repeats = layer, 0
        while last < n and strides[last] == strides[layer]:
            repeats += 2 if interpolated_scale_aspect_ratio == 1.0 else 1
            last += 1
        fh, fw = int(np.ceil(h / strides[layer])), int(np.ceil(w / strides[layer]))
        ys, xs = np.meshgrid((np.arange(fh) + offset[1]) / fh, (np.arange(fw) + offset[0]) / fw, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        anchors.append(np.repeat(centres, repeats, axis=0))
        layer = last
    return np.concatenate(anchors).astype(np.float32)


class BlazeFaceDecoder(Decoder):
    """Face boxes (xyxy), scores and keypoints (N x K x 2) in original-image pixels.

    Settings: ``input_size`` [h, w], ``strides``, ``anchor_offset`` [x, y],
    ``interpolated_scale_aspect_ratio``, ``num_keypoints``, ``score_threshold``,
    ``iou_threshold``, ``nms`` ("weighted" | "hard"), ``raw_score_limit``,
    ``max_detections``, ``keypoint_names``, ``boxes_output`` / ``scores_output`` (names;
    default: the output whose last dim is 4 + 2K, and the one whose last dim is 1).
    """

    kind = "blazeface"
    yields_boxes = True
    default_labels: tuple[str, ...] = ("face",)

    def __init__(self, labels: Optional[Sequence[str]] = None, input_size: Sequence[int] = (128, 128),
                 strides: Sequence[int] = (8, 16, 16, 16), anchor_offset: Sequence[float] = (0.5, 0.5),
                 interpolated_scale_aspect_ratio: float = 1.0, num_keypoints: int = 6,
                 score_threshold: float = 0.5, iou_threshold: float = 0.3, nms: str = "weighted",
                 raw_score_limit: float = 80.0, max_detections: Optional[int] = None,
                 keypoint_names: Optional[Sequence[str]] = None, boxes_output: Optional[str] = None,
                 scores_output: Optional[str] = None, **unknown: Any) -> None:
        super().__init__(labels or list(self.default_labels))
        self._check_unknown(unknown)
        if nms not in ("weighted", "hard"):
            raise ConfigError(f"{self.kind} nms must be 'weighted' or 'hard', got {nms!r}")
        if not 0.0 <= float(score_threshold) <= 1.0 or not 0.0 <= float(iou_threshold) <= 1.0:
            raise ConfigError(f"{self.kind} score_threshold and iou_threshold must be within [0, 1]")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.anchors = ssd_anchors(self.input_size, list(strides), anchor_offset, interpolated_scale_aspect_ratio)
        self.num_keypoints = int(num_keypoints)
        self.score_threshold, self.iou_threshold = float(score_threshold), float(iou_threshold)
        self.nms, self.raw_score_limit = nms, float(raw_score_limit)
        self.max_detections = max_detections
        self.keypoint_names = list(keypoint_names or [])
        self.boxes_output, self.scores_output = boxes_output, scores_output

    @classmethod
    def settings_for(cls, outputs: Sequence[tuple[str, Sequence[Optional[int]]]],
                     input_size: Optional[Sequence[int]], **stated: Any) -> tuple[dict[str, Any], str]:
        """Manifest settings for a model with no preset, from its (name, dims) outputs (`ssd_settings`)."""
        return ssd_settings(cls, outputs, input_size, **stated)

    def check_outputs(self, outputs: Sequence[tuple[str, Sequence[Optional[int]]]]) -> None:
        count, width = _ssd_outputs(outputs)
        if len(self.anchors) != count or width != 4 + 2 * self.num_keypoints:
            raise ConfigError(f"{self.kind}: these settings make {len(self.anchors)} anchors and a "
                              f"{4 + 2 * self.num_keypoints}-wide regressor at {self.input_size[0]}x"
                              f"{self.input_size[1]}; the model outputs {count} anchors, {width} wide; check the "
                              f"settings: {OVERRIDE}")

    def _outputs(self, outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        width = 4 + 2 * self.num_keypoints
        a = len(self.anchors)
        raw = pick_output(outputs, self.boxes_output, f"box regressors [N, {a}, {width}]",
                          lambda x: x.ndim == 3 and x.shape[-1] == width)
        logits = pick_output(outputs, self.scores_output, f"scores [N, {a}, 1]",
                             lambda x: x.ndim == 3 and x.shape[-1] == 1)
        if raw.shape[1] != a or logits.shape[1] != a:
            raise InputMismatchError(
                f"{self.kind} decoder expects {a} anchors (input {self.input_size}, these strides), the model gives "
                f"regressors {raw.shape} and scores {logits.shape}; check the decoder settings for this model")
        return raw.astype(np.float32, copy=False), logits[..., 0].astype(np.float32, copy=False)

    def decode_one(self, raw: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One item -> (boxes xyxy, scores, keypoints K x 2) in model-input pixels, after NMS."""
        h, w = self.input_size
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -self.raw_score_limit, self.raw_score_limit)))
        keep = np.flatnonzero(scores >= self.score_threshold)
        k = self.num_keypoints
        if keep.size == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, k, 2), np.float32)
        r, anc, s = raw[keep], self.anchors[keep], scores[keep]
        scale = np.array([w, h], np.float32)
        centre = r[:, 0:2] / scale + anc
        size = r[:, 2:4] / scale
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1) * np.tile(scale, 2)
        kps = (r[:, 4:4 + 2 * k].reshape(-1, k, 2) / scale + anc[:, None, :]) * scale
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, s, kps = boxes[valid], s[valid], kps[valid]
        if self.nms == "weighted":
            boxes, s, flat = weighted_nms(boxes, s, self.iou_threshold, kps.reshape(len(kps), -1),
                                         self.max_detections)
            kps = flat.reshape(-1, k, 2)
        else:
            idx = nms(boxes, s, self.iou_threshold, self.max_detections)
            boxes, s, kps = boxes[idx], s[idx], kps[idx]
        return boxes, s, kps

    def __call__(self, outputs: Mapping[str, np.ndarray], transforms: Sequence[Transform]) -> list[Result]:
        n = batch_size(outputs, transforms)
        raw, logits = self._outputs(outputs)
        results = []
        for i in range(n):
            boxes, scores, kps = self.decode_one(raw[i], logits[i])
            t = transforms[i]
            results.append(Result(
                boxes=t.boxes_to_original(boxes), scores=scores, class_ids=np.zeros(len(boxes), np.int64),
                labels=[self.label(0)] * len(boxes), keypoints=t.to_original(kps),
                meta={"keypoint_names": self.keypoint_names} if self.keypoint_names else {}))
        return results


class MediaPipeSSDDecoder(BlazeFaceDecoder):
    """Any MediaPipe SSD detector decoded as TensorsToDetectionsCalculator does with fixed-size
    anchors and ``reverse_output_order`` (x before y): BlazeFace, the palm detector, the pose
    detector. Same settings as `BlazeFaceDecoder`; the labels come from the manifest."""

    kind = "mediapipe_ssd"
    default_labels = ("object",)


#: MediaPipe's SSD anchor layouts (strides, interpolated_scale_aspect_ratio) from its graphs'
#: SsdAnchorsCalculator options, tried before any other layout that gives the same anchor count
MEDIAPIPE_LAYOUTS = (
    ((8, 16, 16, 16), 1.0, "MediaPipe's short-range face and palm detectors"),
    ((4,), 0.0, "MediaPipe's full-range face detector"),
    ((8, 16, 32, 32, 32), 1.0, "MediaPipe's pose detector"),
)
_STRIDES = (4, 8, 16, 32, 64, 128)
OVERRIDE = ("--decoder-opt strides=8,16,32 --decoder-opt interpolated_scale_aspect_ratio=1.0 (edgesdk convert or "
            "predict; also input_size, num_keypoints, score_threshold, iou_threshold)")


def _anchor_count(input_size: Sequence[int], strides: Sequence[int], ratio: float) -> int:
    per_cell = 2 if ratio == 1.0 else 1
    return sum(int(np.ceil(input_size[0] / s)) * int(np.ceil(input_size[1] / s)) * per_cell for s in strides)


def _layouts_giving(count: int, input_size: Sequence[int]) -> list[tuple[tuple[int, ...], float, str]]:
    """Every anchor layout with `count` anchors at `input_size`: MediaPipe's own first, then any
    non-decreasing stride list (up to 6 layers) that makes different anchors."""
    import itertools

    found = [(s, r, why) for s, r, why in MEDIAPIPE_LAYOUTS if _anchor_count(input_size, s, r) == count]
    seen = [ssd_anchors(input_size, s, interpolated_scale_aspect_ratio=r) for s, r, _ in found]
    for n in range(1, 7):
        for strides in itertools.combinations_with_replacement(_STRIDES, n):
            for ratio in (1.0, 0.0):
                if _anchor_count(input_size, strides, ratio) != count:
                    continue
                anchors = ssd_anchors(input_size, strides, interpolated_scale_aspect_ratio=ratio)
                if not any(a.shape == anchors.shape and np.array_equal(a, anchors) for a in seen):
                    found.append((strides, ratio, "the only layout that gives this anchor count"))
                    seen.append(anchors)
    return found


def looks_like_ssd(outputs: Sequence[tuple[str, Sequence[Optional[int]]]]) -> bool:
    """Whether the outputs are a MediaPipe SSD's regressors [1, A, 4+2K] and scores [1, A, 1]."""
    try:
        _ssd_outputs(outputs)
    except ConfigError:
        return False
    return True


def _ssd_outputs(outputs: Sequence[tuple[str, Sequence[Optional[int]]]]) -> tuple[int, int]:
    """(anchor count, regressor width) of a MediaPipe SSD model's outputs [1, A, 4+2K] and [1, A, 1]."""
    rank3 = [(n, list(d)) for n, d in outputs if len(d) == 3 and all(isinstance(x, int) and x > 0 for x in d[1:])]
    scores = [d for _, d in rank3 if d[2] == 1]
    boxes = [d for _, d in rank3 if d[2] >= 4 and d[2] % 2 == 0 and any(s[1] == d[1] for s in scores)]
    if not boxes:
        shapes = ", ".join(f"{n} {list(d)}" for n, d in outputs)
        raise ConfigError(f"a MediaPipe SSD decoder needs box regressors [1, A, 4+2K] and scores [1, A, 1] with the "
                          f"same anchor count A; this model outputs {shapes}: pick another --decoder, or --task raw")
    return int(boxes[0][1]), int(boxes[0][2])


def ssd_settings(cls: type[BlazeFaceDecoder], outputs: Sequence[tuple[str, Sequence[Optional[int]]]],
                 input_size: Optional[Sequence[int]], **stated: Any) -> tuple[dict[str, Any], str]:
    """Settings for a MediaPipe SSD detector with no preset, read off its output shapes, and a
    line saying what was inferred and how to override it. Refuses when the anchor layout is
    ambiguous or unknown, naming the settings that decide it."""
    kind = cls.kind
    cls(**stated)  # an unknown or out-of-range setting is named before the outputs are read
    count, width = _ssd_outputs(outputs)
    size = stated.get("input_size") or input_size
    if not size:
        raise ConfigError(f"{kind}: the model input size is unknown; state it with --decoder-opt input_size=H,W")
    size = [int(size[0]), int(size[1])]
    out: dict[str, Any] = {"type": kind, "input_size": size, "num_keypoints": (width - 4) // 2}
    said = [f"{count} anchors from the output shapes", f"{out['num_keypoints']} keypoints from the {width}-wide regressor"]
    if "strides" in stated:
        said.append("strides as stated")
    else:
        layouts = _layouts_giving(count, size)
        known = [lay for lay in layouts if lay[2].startswith("MediaPipe")]
        if len(known) != 1 and len(layouts) != 1:
            options = "; ".join(f"strides={','.join(map(str, s))} interpolated_scale_aspect_ratio={r:g}"
                                for s, r, _ in layouts[:4]) or "none"
            raise ConfigError(f"{kind}: {count} anchors at {size[0]}x{size[1]} match "
                              f"{'no' if not layouts else len(layouts)} anchor layout(s) ({options}); state the "
                              f"model's own with {OVERRIDE}")
        strides, ratio, why = (known or layouts)[0]
        out.update(strides=list(strides), interpolated_scale_aspect_ratio=ratio)
        said.append(f"strides {','.join(map(str, strides))} ({why})")
    out.update(stated)
    decoder = cls(**{k: v for k, v in out.items() if k != "type"})  # settings checked now
    decoder.check_outputs(outputs)
    line = (f"decoder {kind} INFERRED (no preset): {'; '.join(said)}; input {size[0]}x{size[1]}, score >= "
            f"{decoder.score_threshold:g}, {decoder.nms} NMS IoU {decoder.iou_threshold:g}; override: {OVERRIDE}")
    return out, line
