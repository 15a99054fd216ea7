"""YOLO detectors (Ultralytics v5/v7, v8/v11, end-to-end v10): output tensor -> boxes, scores, classes.

Three output layouts are common, told apart by the output shape and the class count C:

- ``v8``: [N, 4 + C, A] (v8, v9, v11): per anchor cx, cy, w, h in input pixels, then C class scores;
- ``v5``: [N, A, 5 + C] (v5, v7): cx, cy, w, h, objectness, C class scores (score = obj * cls);
- ``end2end``: [N, K, 6] (v10, ``nms=True`` exports): x1, y1, x2, y2, score, class, already NMSed.

Scores above ``score_threshold`` go through class-aware hard NMS (Ultralytics' offset trick;
``agnostic_nms`` for one pass over all classes), boxes are mapped back through the letterbox
transform to original-image pixels. `choose_layout` decides the layout from a shape and
refuses when it cannot tell, naming ``--decoder-layout``.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from runtimes.dims import show_dims

from ..errors import ConfigError, InputMismatchError
from ..preprocess import Transform
from ..results import Result
from .base import Decoder, batch_size, pick_output
from .nms import nms

LAYOUTS = ("v8", "v5", "end2end")
#: Ultralytics' defaults (ultralytics/cfg/default.yaml: conf 0.25, iou 0.7, max_det 300)
DEFAULT_SCORE, DEFAULT_IOU, DEFAULT_MAX_DET = 0.25, 0.7, 300
#: class offset for class-aware NMS in one pass (Ultralytics' max_wh)
_MAX_WH = 7680.0
#: most candidates entering NMS (Ultralytics' max_nms)
_MAX_NMS = 30000
OVERRIDE = "edgesdk convert --decoder-layout v8|v5|end2end (decoder setting 'layout')"


def grid_anchors(size: Sequence[int], strides: Sequence[int] = (8, 16, 32)) -> int:
    """Anchor points of an anchor-free head (v8) at input (h, w): one per cell of each stride's grid."""
    h, w = int(size[0]), int(size[1])
    return sum(-(-h // s) * -(-w // s) for s in strides)


def _candidates(a: Optional[int], b: Optional[int], classes: Optional[int],
                anchors: Optional[int]) -> dict[str, str]:
    """Layouts the dims [N, a, b] allow, each with why."""
    out: dict[str, str] = {}
    if a is not None and a > 4 and (classes is None or a == 4 + classes) and (b is None or b > a):
        out["v8"] = f"{a} = 4 box + {a - 4} class scores per anchor"
    if b is not None and b > 5 and (classes is None or b == 5 + classes) and (a is None or a > b):
        out["v5"] = f"{b} = 4 box + objectness + {b - 5} class scores per anchor"
    if b == 6:
        out["end2end"] = "6 = x1,y1,x2,y2,score,class per detection"
    if anchors is not None and len(out) > 1:
        # the anchor count an anchor-free head has at this input size settles v8 against the rest
        fits = {k: v for k, v in out.items() if (k == "v8" and b == anchors) or (k == "v5" and a == 3 * anchors)
                or (k == "end2end" and a is not None and a not in (anchors, 3 * anchors))}
        out = fits or out
    return out


def choose_layout(dims: Sequence[Optional[int]], classes: Optional[int] = None,
                  input_size: Optional[Sequence[int]] = None, output: str = "output") -> tuple[str, str]:
    """(layout, why) for a YOLO output of shape `dims` (None: dynamic) with `classes` labels.

    Raises `ConfigError` naming ``--decoder-layout`` when no layout or more than one fits.
    """
    dims = list(dims)
    if len(dims) != 3:
        raise ConfigError(f"a YOLO output is [N, channels, anchors] or [N, anchors, channels]; {output!r} is "
                          f"{show_dims(dims, bracketed=True)}: not a YOLO detector output (pass --task raw to ship "
                          "it undecoded)")
    anchors = grid_anchors(input_size) if input_size else None
    found = _candidates(dims[1], dims[2], classes, anchors)
    shown = f"output {output!r} {show_dims(dims, bracketed=True)}"
    with_labels = f" with {classes} labels" if classes else " (no labels known)"
    if len(found) == 1:
        (layout, why), = found.items()
        return layout, f"{shown}{with_labels}: {why}"
    if not found:
        raise ConfigError(f"{shown}{with_labels} fits no YOLO layout (v8 [N,4+C,A], v5 [N,A,5+C], end2end "
                          f"[N,K,6]); check --labels (one per class) or state the layout with {OVERRIDE}")
    raise ConfigError(f"{shown}{with_labels} fits more than one YOLO layout ({', '.join(found)}); state it "
                      f"with {OVERRIDE}" + ("" if classes else ", or give --labels FILE so the class count decides"))


def _cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    half = b[:, 2:4] / 2
    return np.concatenate([b[:, 0:2] - half, b[:, 0:2] + half], axis=1)


class YoloDecoder(Decoder):
    """Detections (xyxy boxes in original-image pixels, scores, class ids and names).

    Settings: ``layout`` (v8 | v5 | end2end; None: chosen from the output shape and the labels
    on the first call), ``layout_source`` (why that layout: recorded, not used),
    ``num_classes``, ``score_threshold``, ``iou_threshold``, ``agnostic_nms``,
    ``max_detections``, ``output`` (output name; default: the first rank-3 output).
    """

    kind = "yolo"
    yields_boxes = True

    def __init__(self, labels: Optional[Sequence[str]] = None, layout: Optional[str] = None,
                 layout_source: str = "", num_classes: Optional[int] = None,
                 score_threshold: float = DEFAULT_SCORE, iou_threshold: float = DEFAULT_IOU,
                 agnostic_nms: bool = False, max_detections: Optional[int] = DEFAULT_MAX_DET,
                 output: Optional[str] = None, **unknown: Any) -> None:
        super().__init__(labels)
        self._check_unknown(unknown)
        if layout is not None and layout not in LAYOUTS:
            raise ConfigError(f"yolo decoder layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if not 0.0 <= float(score_threshold) <= 1.0 or not 0.0 <= float(iou_threshold) <= 1.0:
            raise ConfigError("yolo score_threshold and iou_threshold must be within [0, 1]")
        if num_classes is not None and self.labels and int(num_classes) != len(self.labels):
            raise ConfigError(f"yolo decoder: num_classes {num_classes} but {len(self.labels)} labels")
        self.layout, self.layout_source = layout, layout_source
        self.num_classes = int(num_classes) if num_classes is not None else (len(self.labels) or None)
        self.score_threshold, self.iou_threshold = float(score_threshold), float(iou_threshold)
        self.agnostic_nms = bool(agnostic_nms)
        self.max_detections = None if max_detections is None else int(max_detections)
        self.output = output

    def describe(self) -> str:
        """One line stating what this decoder does and how to change it."""
        return (f"decoder yolo, layout {self.layout or 'from the output shape'}"
                + (f" ({self.layout_source})" if self.layout_source else "")
                + f", score > {self.score_threshold:g}, {'agnostic' if self.agnostic_nms else 'class-aware'} NMS "
                f"IoU {self.iou_threshold:g}; override: {OVERRIDE}")

    def _tensor(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        arr = pick_output(outputs, self.output, "a YOLO detection output [N, 4+C, A] / [N, A, 5+C] / [N, K, 6]",
                          None if self.output else (lambda x: x.ndim == 3))
        if arr.ndim != 3:
            raise InputMismatchError(f"the yolo decoder takes a rank-3 output, got {tuple(arr.shape)}")
        if self.layout is None:
            self.layout, self.layout_source = choose_layout(arr.shape, self.num_classes)
        want = {"v8": (1, 4), "v5": (2, 5)}.get(self.layout)
        if self.layout == "end2end" and arr.shape[2] != 6:
            raise InputMismatchError(f"layout end2end expects [N, K, 6], the model gives {tuple(arr.shape)}; "
                                     f"check {OVERRIDE}")
        if want is not None:
            axis, extra = want
            c = arr.shape[axis] - extra
            if c < 1 or (self.num_classes is not None and c != self.num_classes):
                raise InputMismatchError(
                    f"layout {self.layout} expects {extra} + {self.num_classes or 'C'} channels on axis {axis}, the "
                    f"model gives {tuple(arr.shape)}; check {OVERRIDE} and --labels (one name per class)")
        return arr.astype(np.float32, copy=False)

    def candidates(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One item's raw rows -> (boxes xyxy, scores, class ids) above the score threshold, input pixels."""
        if self.layout == "end2end":
            keep = pred[:, 4] > self.score_threshold
            return pred[keep, :4], pred[keep, 4], pred[keep, 5].astype(np.int64)
        rows = pred.T if self.layout == "v8" else pred
        first = 4 if self.layout == "v8" else 5
        cls = rows[:, first:]
        if self.layout == "v5":
            obj = rows[:, 4]
            live = obj > self.score_threshold  # obj * cls <= obj: nothing else can pass
            rows, cls = rows[live], cls[live] * obj[live, None]
        ids = cls.argmax(1)
        scores = cls[np.arange(len(cls)), ids]
        keep = np.flatnonzero(scores > self.score_threshold)
        if keep.size > _MAX_NMS:
            keep = keep[np.argsort(-scores[keep], kind="stable")[:_MAX_NMS]]
        return _cxcywh_to_xyxy(rows[keep, :4]), scores[keep], ids[keep].astype(np.int64)

    def decode_one(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One item -> (boxes xyxy, scores, class ids) in model-input pixels, best first, after NMS."""
        boxes, scores, ids = self.candidates(pred)
        if self.layout == "end2end" or not len(boxes):
            order = np.argsort(-scores, kind="stable")[:self.max_detections]
            return boxes[order], scores[order], ids[order]
        offset = 0.0 if self.agnostic_nms else ids[:, None].astype(np.float32) * _MAX_WH
        keep = nms(boxes + offset, scores, self.iou_threshold, self.max_detections)
        return boxes[keep], scores[keep], ids[keep]

    def __call__(self, outputs: Mapping[str, np.ndarray], transforms: Sequence[Transform]) -> list[Result]:
        n = batch_size(outputs, transforms)
        arr = self._tensor(outputs)
        results = []
        for i in range(n):
            boxes, scores, ids = self.decode_one(arr[i])
            results.append(Result(boxes=transforms[i].boxes_to_original(boxes), scores=scores, class_ids=ids,
                                  labels=[self.label(int(c)) for c in ids]))
        return results


def _check_stated(layout: str, dims: list[Optional[int]], classes: Optional[int], output: str) -> None:
    """A stated layout that the output's known dims rule out is refused (it would decode garbage)."""
    if len(dims) != 3:
        raise ConfigError(f"--decoder-layout {layout}: output {output!r} is {show_dims(dims, bracketed=True)}, a "
                          "YOLO output has rank 3 ([N, channels, anchors] or [N, anchors, channels])")
    fits = _candidates(dims[1], dims[2], classes, None)
    if fits and layout not in fits:
        raise ConfigError(f"--decoder-layout {layout} contradicts output {output!r} {show_dims(dims, bracketed=True)}"
                          + (f" with {classes} labels" if classes else "") + f": it fits {', '.join(fits)} ("
                          + "; ".join(fits.values()) + f"); pass that layout ({OVERRIDE}) or drop the option")
    axis, extra = {"v8": (1, 4), "v5": (2, 5), "end2end": (2, 6)}[layout]
    want = 6 if layout == "end2end" else (extra + classes if classes else None)
    got = dims[axis]
    if got is not None and (got != want if want is not None else got <= extra):
        need = want if want is not None else f"more than {extra}"
        raise ConfigError(f"--decoder-layout {layout} needs {need} channels on axis {axis} of output {output!r}, "
                          f"but it is {show_dims(dims, bracketed=True)}" + (f" with {classes} labels" if classes else "")
                          + f"; pass the layout this output has ({OVERRIDE}) or drop the option to choose it "
                          "from the shape")


def yolo_settings(dims: Sequence[Optional[int]], labels: Sequence[str], layout: Optional[str] = None,
                  input_size: Optional[Sequence[int]] = None, output: str = "output",
                  **settings: Any) -> dict[str, Any]:
    """The manifest's decoder settings for a YOLO model: the layout chosen (or `layout` as stated) and why."""
    if layout is not None:
        if layout not in LAYOUTS:
            raise ConfigError(f"--decoder-layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        source = "option --decoder-layout"
        _check_stated(layout, list(dims), len(labels) or None, output)
    else:
        layout, source = choose_layout(dims, len(labels) or None, input_size, output)
    out: dict[str, Any] = {"type": "yolo", "layout": layout, "layout_source": source,
                           "score_threshold": DEFAULT_SCORE, "iou_threshold": DEFAULT_IOU,
                           "max_detections": DEFAULT_MAX_DET}
    if labels:
        out["num_classes"] = len(labels)
    out.update(settings)
    YoloDecoder(labels=labels, **{k: v for k, v in out.items() if k != "type"})  # settings checked now
    return out
