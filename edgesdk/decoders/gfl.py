"""PicoDet / NanoDet / GFL heads exported without NMS: per stride level, class scores [N, A_l, C]
and box-side distributions [N, A_l, 4 * (R + 1)].

Follows PaddleDetection's PicoHead post-process (as RapidLayout and PP-Structure ship it): the
anchor points of level l are the cell centres ((x + 0.5) * s, (y + 0.5) * s) of its
ceil(H / s) x ceil(W / s) grid; each side's distance is the expectation of a softmax over R + 1
bins, times the stride; then per-class hard NMS, and the boxes mapped back to original pixels.
The strides, R and C are read off the output shapes (`gfl_settings`), said, and refused when
the shapes leave them open.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..errors import ConfigError, InputMismatchError
from ..preprocess import Transform
from ..results import Result
from .base import Decoder, batch_size
from .nms import nms

Outputs = Sequence[tuple[str, Sequence[Optional[int]]]]
_STRIDES = (4, 8, 16, 32, 64, 128)
#: bins per side of common GFL heads: PicoDet / NanoDet reg_max 7, NanoDet-Plus 7, GFL 16
_COMMON_BINS = (8, 17)
OVERRIDE = ("--decoder-opt strides=8,16,32,64 --decoder-opt reg_max=7 (edgesdk convert or predict; also input_size, "
            "score_threshold, iou_threshold, max_detections)")


class GFLDecoder(Decoder):
    """Boxes (xyxy, original pixels), scores and class ids from a multi-level GFL head.

    Settings: ``input_size`` [h, w], ``strides`` (one per level, in output order),
    ``reg_max`` (R: R + 1 bins per side), ``num_classes``, ``score_outputs`` /
    ``box_outputs`` (names, one per level), ``score_threshold``, ``iou_threshold``,
    ``pre_nms_top_k`` (best anchors kept per level), ``max_detections`` (per class).
    """

    kind = "picodet"
    yields_boxes = True

    def __init__(self, labels: Optional[Sequence[str]] = None, input_size: Sequence[int] = (320, 320),
                 strides: Sequence[int] = (8, 16, 32, 64), reg_max: int = 7, num_classes: Optional[int] = None,
                 score_outputs: Sequence[str] = (), box_outputs: Sequence[str] = (),
                 score_threshold: float = 0.5, iou_threshold: float = 0.5, pre_nms_top_k: int = 1000,
                 max_detections: int = 100, **unknown: Any) -> None:
        super().__init__(labels)
        self._check_unknown(unknown)
        if not 0.0 <= float(score_threshold) <= 1.0 or not 0.0 <= float(iou_threshold) <= 1.0:
            raise ConfigError(f"{self.kind} score_threshold and iou_threshold must be within [0, 1]")
        if len(score_outputs) != len(box_outputs) or (score_outputs and len(score_outputs) != len(strides)):
            raise ConfigError(f"{self.kind}: give one score output and one box output per stride "
                              f"({len(strides)} strides, {len(score_outputs)} score and {len(box_outputs)} box outputs)")
        if num_classes is not None and self.labels and len(self.labels) != int(num_classes):
            raise ConfigError(f"{self.kind}: the head scores {num_classes} classes but {len(self.labels)} labels were "
                              "given: give one name per class, in class-index order (--labels FILE)")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.strides = [int(s) for s in strides]
        self.reg_max, self.num_classes = int(reg_max), None if num_classes is None else int(num_classes)
        self.score_outputs, self.box_outputs = list(score_outputs), list(box_outputs)
        self.score_threshold, self.iou_threshold = float(score_threshold), float(iou_threshold)
        self.pre_nms_top_k, self.max_detections = int(pre_nms_top_k), int(max_detections)
        # the anchor points depend only on the input size and the strides: made once, not per frame
        self._anchor_centres = [_centres(self.input_size, s) for s in self.strides]

    @classmethod
    def settings_for(cls, outputs: Outputs, input_size: Optional[Sequence[int]], **stated: Any
                     ) -> tuple[dict[str, Any], str]:
        return gfl_settings(cls, outputs, input_size, **stated)

    def check_outputs(self, outputs: Outputs) -> None:
        levels = _pair_levels(outputs, self.reg_max)
        counts = [a for a, _, _ in levels]
        want = [_cells(self.input_size, s) for s in self.strides]
        if counts != want:
            raise ConfigError(f"{self.kind}: strides {self.strides} at {self.input_size[0]}x{self.input_size[1]} make "
                              f"{want} anchor points per level, the model outputs {counts}; check {OVERRIDE}")

    def _levels(self, outputs: Mapping[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        names = (self.score_outputs, self.box_outputs)
        if not self.score_outputs or any(n not in outputs for n in (*names[0], *names[1])):
            # a manifest written by hand, or a variant that renamed the outputs (onnx2tf's Identity_N):
            # the shapes pair them, or refuse
            try:
                pairs = _pair_levels([(k, list(v.shape)) for k, v in outputs.items()], self.reg_max)
            except ConfigError as exc:
                raise InputMismatchError(f"{self.kind} decoder: the outputs {sorted(outputs)} are not the head "
                                         f"{list(names[0])} / {list(names[1])} named in the manifest: {exc}") from None
            names = ([p[1] for p in pairs], [p[2] for p in pairs])
        levels = [(outputs[s], outputs[b]) for s, b in zip(*names)]
        for (scores, dist), stride in zip(levels, self.strides):
            cells = _cells(self.input_size, stride)
            if scores.shape[1] != cells or dist.shape[-1] != 4 * (self.reg_max + 1):
                raise InputMismatchError(f"{self.kind} decoder: level of stride {stride} gives scores "
                                         f"{tuple(scores.shape)} and boxes {tuple(dist.shape)}, expected {cells} "
                                         f"anchors and {4 * (self.reg_max + 1)} box values; check {OVERRIDE}")
        return levels

    def decode_one(self, levels: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One item's levels -> (boxes xyxy in input pixels, scores, class ids), after per-class NMS."""
        boxes, scores = [], []
        for (score, dist), stride, centres in zip(levels, self.strides, self._anchor_centres):
            top = np.argsort(-score.max(1), kind="stable")[:self.pre_nms_top_k]
            boxes.append(_decode_level(dist[top], centres[top], stride, self.reg_max))
            scores.append(score[top])
        b, s = np.concatenate(boxes), np.concatenate(scores).astype(np.float32)
        if s.size and (s.min() < -1e-3 or s.max() > 1 + 1e-3):
            raise InputMismatchError(f"{self.kind} decoder: class scores span [{s.min():.3g}, {s.max():.3g}], not "
                                     "probabilities; this decoder takes a head exported with its sigmoid")
        out_b, out_s, out_c = [], [], []
        for c in range(s.shape[1]):
            live = np.flatnonzero(s[:, c] > self.score_threshold)
            keep = live[nms(b[live], s[live, c], self.iou_threshold, self.max_detections)]
            out_b.append(b[keep])
            out_s.append(s[keep, c])
            out_c.append(np.full(len(keep), c, np.int64))
        order = np.argsort(-np.concatenate(out_s), kind="stable")
        return np.concatenate(out_b)[order], np.concatenate(out_s)[order], np.concatenate(out_c)[order]

    def __call__(self, outputs: Mapping[str, np.ndarray], transforms: Sequence[Transform]) -> list[Result]:
        n = batch_size(outputs, transforms)
        levels = [(s.astype(np.float32, copy=False), d.astype(np.float32, copy=False))
                  for s, d in self._levels(outputs)]
        results = []
        for i in range(n):
            boxes, scores, ids = self.decode_one([(s[i], d[i]) for s, d in levels])
            results.append(Result(boxes=transforms[i].boxes_to_original(boxes), scores=scores, class_ids=ids,
                                  labels=[self.label(int(c)) for c in ids]))
        return results


def _cells(size: Sequence[int], stride: int) -> int:
    return int(np.ceil(size[0] / stride)) * int(np.ceil(size[1] / stride))


def _centres(size: Sequence[int], stride: int) -> np.ndarray:
    fh, fw = int(np.ceil(size[0] / stride)), int(np.ceil(size[1] / stride))
    ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
    return (np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) + 0.5) * stride


def _decode_level(dist: np.ndarray, centres: np.ndarray, stride: int, reg_max: int) -> np.ndarray:
    """Distributions [A, 4 (R + 1)] -> boxes xyxy: each side the softmax expectation over its bins."""
    d = dist.reshape(-1, 4, reg_max + 1)
    e = np.exp(d - d.max(-1, keepdims=True))
    sides = (e / e.sum(-1, keepdims=True)) @ np.arange(reg_max + 1, dtype=np.float32) * stride
    return np.concatenate([centres - sides[:, :2], centres + sides[:, 2:]], axis=1)


def _pair_levels(outputs: Outputs, reg_max: Optional[int] = None) -> list[tuple[int, str, str]]:
    """(anchor count, score output, box output) per level, in output order: the rank-3 outputs
    [1, A, C] and [1, A, 4 (R + 1)] that share an anchor count A. Refuses what does not pair."""
    rank3 = [(n, list(d)) for n, d in outputs if len(d) == 3 and all(isinstance(x, int) and x > 0 for x in d[1:])]
    by_count: dict[int, list[tuple[str, int]]] = {}
    for name, dims in rank3:
        by_count.setdefault(dims[1], []).append((name, dims[2]))
    shapes = ", ".join(f"{n} {list(d)}" for n, d in outputs)
    if len(by_count) < 2 or any(len(v) != 2 for v in by_count.values()):
        raise ConfigError(f"a PicoDet/GFL head has, per stride level, scores [1, A, C] and box distributions "
                          f"[1, A, 4(R+1)] with the same A; this model outputs {shapes}: pick another --decoder, "
                          "or --task raw")
    levels = []
    for count, pair in by_count.items():
        box = [p for p in pair if p[1] % 4 == 0 and p[1] >= 8 and (reg_max is None or p[1] == 4 * (reg_max + 1))]
        if len(box) == 2:  # C divisible by 4 too: a common bin count decides, else the user does
            box = [p for p in box if p[1] // 4 in _COMMON_BINS] if reg_max is None else box
        if len(box) != 1:
            raise ConfigError(f"picodet: cannot tell the scores from the box distributions among {pair} (anchor count "
                              f"{count}); state the bins with --decoder-opt reg_max=R")
        score = [p for p in pair if p is not box[0]][0]
        levels.append((count, score[0], box[0][0]))
    return sorted(levels, key=lambda lv: -lv[0])  # finest stride first


def looks_like_gfl(outputs: Outputs) -> bool:
    try:
        _pair_levels(outputs)
    except ConfigError:
        return False
    return True


def gfl_settings(cls: type[GFLDecoder], outputs: Outputs, input_size: Optional[Sequence[int]],
                 **stated: Any) -> tuple[dict[str, Any], str]:
    """Settings for a GFL head with no preset, read off its output shapes, and a line saying what
    was inferred and how to override it. Refuses when a level's stride is not unique."""
    cls(**stated)  # an unknown or out-of-range setting is named before the outputs are read
    levels = _pair_levels(outputs, stated.get("reg_max"))
    size = stated.get("input_size") or input_size
    if not size:
        raise ConfigError(f"{cls.kind}: the model input size is unknown; state it with --decoder-opt input_size=H,W")
    size = [int(size[0]), int(size[1])]
    widths = dict((n, list(d)[2]) for n, d in outputs if len(d) == 3)
    classes = {widths[s] for _, s, _ in levels}
    bins = {widths[b] // 4 for _, _, b in levels}
    if len(classes) != 1 or len(bins) != 1:
        raise ConfigError(f"{cls.kind}: the levels disagree on the class count {sorted(classes)} or the bins "
                          f"{sorted(bins)}; check {OVERRIDE}")
    if "strides" in stated:
        strides, how = [int(s) for s in stated["strides"]], "strides as stated"
    else:
        strides = []
        for count, _, _ in levels:
            fits = [s for s in _STRIDES if _cells(size, s) == count]
            if len(fits) != 1:
                raise ConfigError(f"{cls.kind}: {count} anchor points at {size[0]}x{size[1]} fit "
                                  f"{'no stride' if not fits else 'strides ' + str(fits)}; state them: {OVERRIDE}")
            strides.append(fits[0])
        how = f"strides {','.join(map(str, strides))} from the anchor counts"
    out: dict[str, Any] = {"type": cls.kind, "input_size": size, "strides": strides, "reg_max": bins.pop() - 1,
                           "num_classes": classes.pop(), "score_outputs": [s for _, s, _ in levels],
                           "box_outputs": [b for _, _, b in levels], **{k: v for k, v in stated.items()
                                                                        if k != "strides"}}
    decoder = cls(**{k: v for k, v in out.items() if k != "type"})
    decoder.check_outputs(outputs)
    line = (f"decoder {cls.kind} INFERRED (no preset): {len(levels)} levels, {how}; {out['num_classes']} classes, "
            f"{out['reg_max'] + 1} bins per side from the output shapes; input {size[0]}x{size[1]}, score > "
            f"{decoder.score_threshold:g}, per-class NMS IoU {decoder.iou_threshold:g}; override: {OVERRIDE}")
    return out, line
