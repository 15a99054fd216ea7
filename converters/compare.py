"""The accuracy guard's measuring stick: compare a converted model with the original.

Like Polygraphy's comparator, it only uses the runtime interface (`runtimes.load(...)` ->
`infer`), so any backend and any format compares the same way. On held-out real samples
(never the calibration ones) it reports, per output: cosine similarity (mean and worst over
samples, and pooled over all samples), max and mean absolute error; for classifiers, top-1
agreement. A user metric on labelled data plugs in as `eval_fn(runtime) -> float` (higher
is better), e.g. `--eval mypkg.metrics:accuracy`.

`Comparison.drop` is the one number the guard holds against `--max-accuracy-drop`; which
number is the metric (`--metric`, default chosen from the task by `default_metric`):
  module:function:  metric(original) - metric(converted)   (a user metric, `eval_fn`)
  top1:             1 - top-1 agreement with the original (classifiers' default)
  top5:             1 - share of samples whose original top-1 class is in the converted top-5
  box-f1:           1 - F1 of the converted model's decoded boxes against the original's own
                    decoded boxes (IoU >= 0.5), pooled over samples (detectors with a decoder:
                    the caller passes `box_decoder`, converters never import edgesdk)
  cosine:           1 - mean cosine similarity (worst output; raw outputs' default)
Each comparison keeps its per-sample values (`sample_values`) so the guard can put a bootstrap
confidence interval on the drop (converters.guard).

Per-sample cosine is only meaningful where the original says something: a text detector's
probability map on a photo without text is ~0 everywhere, and noise of 1e-5 there gives any
cosine at all. Samples whose reference output has less than `INFORMATIVE_NORM` of the largest
reference norm among the held-out samples are left out of the per-sample cosines (they still
count in max/mean abs error and in the pooled cosine); how many were left out is reported.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from .errors import ConversionError
from .samples import is_array_list, iter_batches

EvalFn = Callable[[Any], float]
#: one sample's outputs (name -> array, batch 1) -> K x 4 boxes (x1, y1, x2, y2)
BoxDecoder = Callable[[dict], np.ndarray]
#: the built-in task metrics (`--metric`); anything with a ":" is a user module:function
METRICS = ("top1", "top5", "cosine", "box-f1")
#: a decoded box matches the original's when their IoU is at least this
BOX_IOU = 0.5

#: a sample's reference output below this fraction of the largest reference norm carries no
#: signal for a per-sample cosine (see the module docstring)
INFORMATIVE_NORM = 0.05


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays (flattened). Two all-zero arrays are identical (1.0);
    one all-zero array against a non-zero one shares nothing (0.0)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def default_metric(task: str, has_box_decoder: bool = False, has_eval_fn: bool = False) -> str:
    """The metric a model's task calls for (what `--metric` defaults to)."""
    if has_eval_fn:
        return "metric"
    if task == "classification":
        return "top1"
    return "box-f1" if has_box_decoder else "cosine"


def check_metric(name: str, has_box_decoder: bool) -> str:
    """`name` if the Comparator can measure it, else a ConversionError saying what to pass."""
    if name not in METRICS + ("metric",):
        raise ConversionError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)} or module:function "
                              "(your function(runtime) -> number, higher is better)")
    if name == "box-f1" and not has_box_decoder:
        raise ConversionError("--metric box-f1 needs a box decoder for this model (a detection preset such as "
                              "ppocr_det); pass --preset, or use --metric cosine")
    return name


def topk_hits(reference: np.ndarray, converted: np.ndarray, k: int) -> np.ndarray:
    """Per row: is the original's top-1 class among the converted model's top-k?"""
    ref = np.asarray(reference).reshape(len(reference), -1)
    out = np.asarray(converted).reshape(ref.shape)
    best = ref.argmax(1)
    k = min(k, out.shape[1])
    top = np.argpartition(-out, k - 1, axis=1)[:, :k] if k < out.shape[1] else np.tile(np.arange(k), (len(out), 1))
    return (top == best[:, None]).any(1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: np.clip(r[:, 2] - r[:, 0], 0, None) * np.clip(r[:, 3] - r[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_matches(reference: np.ndarray, converted: np.ndarray, iou: float = BOX_IOU) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives): greedy one-to-one matching, best IoU
    first, of the converted boxes against the original's."""
    m = iou_matrix(reference, converted)
    tp = 0
    if m.size:
        pairs = sorted(((m[i, j], i, j) for i, j in zip(*np.nonzero(m >= iou))), reverse=True)
        used_r, used_c = set(), set()
        for _, i, j in pairs:
            if i not in used_r and j not in used_c:
                used_r.add(i)
                used_c.add(j)
        tp = len(used_r)
    return tp, m.shape[1] - tp, m.shape[0] - tp


def f1_from_counts(counts: np.ndarray) -> float:
    """Pooled F1 from per-sample (tp, fp, fn) rows; nothing found on either side is agreement."""
    tp, fp, fn = np.asarray(counts, np.float64).reshape(-1, 3).sum(0)
    return 1.0 if tp + fp + fn == 0 else float(2 * tp / (2 * tp + fp + fn))


def drop_of(kind: str, values: np.ndarray) -> float:
    """The drop a metric's per-sample values stand for (also used on bootstrap resamples)."""
    values = np.asarray(values, np.float64)
    if kind == "box-f1":
        return 1.0 - f1_from_counts(values)
    return float(1.0 - values.mean()) if values.size else 0.0


@dataclass
class OutputComparison:
    name: str
    cosine_mean: float
    cosine_min: float
    cosine_pooled: float
    max_abs: float
    mean_abs: float
    #: samples left out of the per-sample cosines (reference output ~0)
    uninformative: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class Comparison:
    """How close a converted model's outputs are to the original's on held-out samples."""

    samples: int
    outputs: list[OutputComparison]
    top1_agreement: Optional[float] = None
    metric: Optional[float] = None            # user metric of the converted model
    reference_metric: Optional[float] = None  # user metric of the original
    metric_name: Optional[str] = None
    kind: str = "cosine"                      # what `drop` measures: cosine | top1 | top5 | box-f1 | metric
    top5_agreement: Optional[float] = None
    box_f1: Optional[float] = None
    #: per sample: 1/0 agreement (top1/top5), cosine of the worst output (cosine, informative
    #: samples only) or (tp, fp, fn) rows (box-f1); what the guard's bootstrap resamples
    sample_values: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def cosine(self) -> float:
        """Mean per-sample cosine similarity of the worst output."""
        return min(o.cosine_mean for o in self.outputs)

    @property
    def cosine_min(self) -> float:
        return min(o.cosine_min for o in self.outputs)

    @property
    def max_abs(self) -> float:
        return max(o.max_abs for o in self.outputs)

    @property
    def drop(self) -> float:
        if self.kind == "metric" and self.metric is not None and self.reference_metric is not None:
            return float(self.reference_metric - self.metric)
        if self.kind == "top1" and self.top1_agreement is not None:
            return float(1.0 - self.top1_agreement)
        if self.kind == "top5" and self.top5_agreement is not None:
            return float(1.0 - self.top5_agreement)
        if self.kind == "box-f1" and self.box_f1 is not None:
            return float(1.0 - self.box_f1)
        return float(1.0 - self.cosine)

    def summary(self) -> str:
        parts = [f"cosine {self.cosine:.4f} (worst sample {self.cosine_min:.4f})", f"max abs err {self.max_abs:.4g}"]
        skipped = max((o.uninformative for o in self.outputs), default=0)
        if skipped:
            parts.append(f"{skipped} of {self.samples} samples ~0 in the original: left out of the cosine")
        if self.top1_agreement is not None:
            parts.append(f"top-1 agreement {self.top1_agreement:.1%}")
        if self.top5_agreement is not None:
            parts.append(f"top-5 agreement {self.top5_agreement:.1%}")
        if self.box_f1 is not None:
            parts.append(f"box F1 vs the original's boxes {self.box_f1:.4f}")
        if self.metric is not None:
            parts.append(f"{self.metric_name or 'metric'} {self.metric:.4f} (original {self.reference_metric:.4f})")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "kind": self.kind, "drop": round(self.drop, 6),
                "cosine": round(self.cosine, 6), "cosine_min": round(self.cosine_min, 6),
                "max_abs": float(self.max_abs), "top1_agreement": self.top1_agreement,
                "top5_agreement": self.top5_agreement, "box_f1": self.box_f1,
                "metric": self.metric, "reference_metric": self.reference_metric, "metric_name": self.metric_name,
                "outputs": [o.to_dict() for o in self.outputs]}


def load_eval_fn(spec: str) -> EvalFn:
    """`module:function` (module importable, or a path/to/file.py) -> the function."""
    if ":" not in spec:
        raise ConversionError(f"--eval takes module:function (e.g. mypkg.metrics:accuracy), got {spec!r}")
    module, _, name = spec.rpartition(":")
    try:
        if module.endswith(".py"):
            path = Path(module)
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            if loader_spec is None or loader_spec.loader is None or not path.is_file():
                raise ImportError(f"no file {path}")
            mod = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConversionError(f"--eval {spec}: cannot import {module!r}: {exc}") from exc
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise ConversionError(f"--eval {spec}: {module!r} has no function {name!r}")
    return fn


class Comparator:
    #: class-level defaults: a comparator made without __init__ (tests, subsets) still answers
    metric = "cosine"
    box_decoder: Optional[BoxDecoder] = None
    reference_boxes: Optional[list] = None

    """Runs held-out samples through a reference runtime once, then through each candidate.

    Args:
        reference: the original model (a path, loaded with `runtimes.load` pinned to fp32, or
            an activated/activatable Runtime).
        samples: model-ready held-out samples, N x input shape (single-input models), a list of
            per-sample arrays of different shapes (dynamic dims; each fed as a batch of one, see
            converters.samples), or a list of feed dicts.
        task: "classification" adds top-1/top-5 agreement and makes top-1 the guard's measure.
        eval_fn: optional user metric `fn(runtime) -> float`, higher is better.
        metric: what `drop` measures: top1 | top5 | cosine | box-f1 (default from the task,
            see `default_metric`); a user `eval_fn` always decides when given.
        box_decoder: one sample's outputs -> K x 4 boxes; enables box-f1 (the original's own
            decoded boxes are the reference: no labels needed).
    """

    def __init__(self, reference: Union[str, Path, Any], samples: Union[np.ndarray, list[dict]],
                 task: str = "raw", eval_fn: Optional[EvalFn] = None, metric_name: Optional[str] = None,
                 reference_backend: Optional[str] = None, metric: Optional[str] = None,
                 box_decoder: Optional[BoxDecoder] = None) -> None:
        if samples is None or len(samples) == 0:
            raise ConversionError("the accuracy check needs held-out samples; none were given")
        self.samples = samples
        self.task = task
        self.eval_fn = eval_fn
        self.metric_name = metric_name or (getattr(eval_fn, "__name__", None) if eval_fn else None)
        self.box_decoder = box_decoder
        self.metric = check_metric(metric or default_metric(task, box_decoder is not None, eval_fn is not None),
                                   box_decoder is not None)
        #: force what `drop` measures (subsets for ranking use "cosine": continuous, not top-1 steps)
        self.kind: Optional[str] = None
        runtime = self._runtime(reference, backend=reference_backend, precision="fp32")
        try:
            runtime.activate()
            self.reference_outputs = self._run(runtime)
            self.reference_metric = self._metric(runtime)
        finally:
            if isinstance(reference, (str, Path)):  # else the caller owns it
                runtime.deactivate()
        self.reference_boxes = self._decode_all(self.reference_outputs) if box_decoder is not None else None

    def subset(self, k: int) -> "Comparator":
        """A comparator on the first `k` samples (reference outputs reused; no user metric):
        for quick rankings where the full comparison would be too slow."""
        if k >= len(self.samples):
            return self
        sub = object.__new__(Comparator)
        sub.samples = self.samples[:k]
        sub.task, sub.eval_fn, sub.metric_name = self.task, None, None
        sub.reference_outputs = self.reference_outputs[:k]
        sub.reference_metric = None
        sub.box_decoder, sub.reference_boxes, sub.metric = None, None, "cosine"
        sub.kind = "cosine"
        return sub

    def _decode_all(self, outputs: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        boxes = []
        for out in outputs:
            try:
                boxes.append(np.asarray(self.box_decoder(out), np.float64).reshape(-1, 4))
            except Exception as exc:  # the caller's decoder: say which step failed, in one line
                raise ConversionError(f"the box decoder for --metric box-f1 failed: {type(exc).__name__}: "
                                      f"{_one_line(exc)}") from exc
        return boxes

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _runtime(model: Union[str, Path, Any], backend: Optional[str] = None, **kw: Any) -> Any:
        if isinstance(model, (str, Path)):
            import runtimes

            return runtimes.load(model, backend=backend, **kw)
        return model

    def _feeds(self):
        if isinstance(self.samples, np.ndarray) or is_array_list(self.samples):
            yield from iter_batches(self.samples)
        else:
            yield from self.samples

    @staticmethod
    def _adapt(feed: Any, runtime: Any) -> Any:
        """NCHW samples for an NHWC model (TFLite from ONNX): transpose, nothing else."""
        if not isinstance(feed, np.ndarray) or feed.ndim != 4:
            return feed
        spec = runtime.inputs[0]
        want = tuple(spec.shape)
        if len(want) == 4 and all(w in (None, g) for w, g in zip(want, feed.shape)):
            return feed
        nhwc = feed.transpose(0, 2, 3, 1)
        if len(want) == 4 and all(w in (None, g) for w, g in zip(want, nhwc.shape)):
            return np.ascontiguousarray(nhwc)
        return feed  # let the runtime's own check say what is wrong

    def _run(self, runtime: Any) -> list[dict[str, np.ndarray]]:
        return [dict(runtime.infer(self._adapt(feed, runtime))) for feed in self._feeds()]

    def _metric(self, runtime: Any) -> Optional[float]:
        if self.eval_fn is None:
            return None
        try:
            value = self.eval_fn(runtime)
        except Exception as exc:  # a user plug-in: report its failure, don't hide it
            raise ConversionError(f"the metric function {self.metric_name} failed: {type(exc).__name__}: "
                                  f"{_one_line(exc)}") from exc
        try:
            return float(value["metric"] if isinstance(value, dict) else value)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConversionError(f"the metric function {self.metric_name} must return a number (higher is better), "
                                  f"got {value!r}") from exc

    # ----------------------------------------------------------------- public
    def compare_outputs(self, outputs: list[dict[str, np.ndarray]]) -> Comparison:
        """Compare outputs (one dict per sample, as `infer` returns) with the reference's."""
        ref = self.reference_outputs
        if len(outputs) != len(ref):
            raise ConversionError(f"got outputs for {len(outputs)} samples, expected {len(ref)}")
        names = list(ref[0])
        results = []
        for pos, name in enumerate(names):
            cos, norms, max_abs, sum_abs, count = [], [], 0.0, 0.0, 0
            a_all, b_all = [], []
            for r, o in zip(ref, outputs):
                a = np.asarray(r[name], np.float64)
                b = o.get(name)
                if b is None:  # another backend may name outputs differently: fall back to position
                    b = list(o.values())[pos]
                b = np.asarray(b, np.float64)
                if a.size != b.size:
                    raise ConversionError(f"output {name!r} has {b.size} values in the converted model, "
                                          f"{a.size} in the original")
                b = b.reshape(a.shape) if a.shape != b.shape else b
                cos.append(cosine(a, b))
                norms.append(float(np.linalg.norm(a)))
                diff = np.abs(a - b)
                max_abs = max(max_abs, float(diff.max()) if diff.size else 0.0)
                sum_abs += float(diff.sum())
                count += diff.size
                a_all.append(a.ravel())
                b_all.append(b.ravel())
            informative = [c for c, n in zip(cos, norms) if n >= INFORMATIVE_NORM * max(norms)] or cos
            results.append(OutputComparison(name, float(np.mean(informative)), float(np.min(informative)),
                                            cosine(np.concatenate(a_all), np.concatenate(b_all)),
                                            max_abs, sum_abs / max(count, 1), len(cos) - len(informative)))
        result = Comparison(len(ref), results, None, None, self.reference_metric, self.metric_name)
        self._task_metrics(result, outputs, names[0])
        result.kind = self.kind or self.metric
        if result.kind == "cosine":
            result.sample_values = self._worst_output_cosines(outputs, names, results)
        return result

    def _task_metrics(self, result: Comparison, outputs: list[dict[str, np.ndarray]], name: str) -> None:
        """top-1/top-5 agreement (classifiers) and box F1 (with a decoder), with per-sample values."""
        if self.task == "classification":
            ref = np.concatenate([np.asarray(r[name]).reshape(np.asarray(r[name]).shape[0], -1)
                                  for r in self.reference_outputs])
            out = np.concatenate([np.asarray(o.get(name, list(o.values())[0])).reshape(-1, ref.shape[1])
                                  for o in outputs])
            top1, top5 = topk_hits(ref, out, 1), topk_hits(ref, out, 5)
            result.top1_agreement, result.top5_agreement = float(top1.mean()), float(top5.mean())
            result.sample_values = {"top1": top1, "top5": top5}.get(self.kind or self.metric)
        if self.reference_boxes is not None:  # reported whatever the metric; decides with box-f1
            counts = np.array([box_matches(r, b) for r, b in zip(self.reference_boxes, self._decode_all(outputs))])
            result.box_f1 = f1_from_counts(counts)
            if (self.kind or self.metric) == "box-f1":
                result.sample_values = counts

    def _worst_output_cosines(self, outputs: list[dict[str, np.ndarray]], names: list[str],
                              compared: list[OutputComparison]) -> np.ndarray:
        """Per-sample cosines of the output the drop is judged on (informative samples only)."""
        pos = int(np.argmin([c.cosine_mean for c in compared]))
        name = names[pos]
        ref = [np.asarray(r[name], np.float64) for r in self.reference_outputs]
        got = [np.asarray(o.get(name, list(o.values())[pos]), np.float64) for o in outputs]
        norms = [float(np.linalg.norm(a)) for a in ref]
        keep = [i for i, n in enumerate(norms) if n >= INFORMATIVE_NORM * max(norms)] or list(range(len(ref)))
        return np.array([cosine(ref[i], got[i]) for i in keep])

    def compare(self, candidate: Union[str, Path, Any], backend: Optional[str] = None, **runtime_kw: Any) -> Comparison:
        """Run the held-out samples through `candidate` (a path or a Runtime) and compare."""
        runtime = self._runtime(candidate, backend=backend, **runtime_kw)
        owned = isinstance(candidate, (str, Path))
        try:
            runtime.activate()
            result = self.compare_outputs(self._run(runtime))
            result.metric = self._metric(runtime)
        finally:
            if owned:
                runtime.deactivate()
        return result
