"""The accuracy guard's measuring stick: compare a converted model with the original.

Like Polygraphy's comparator, it only uses the runtime interface (`runtimes.load(...)` ->
`infer`), so any backend and any format compares the same way. On held-out real samples
(never the calibration ones) it reports, per output: cosine similarity (mean and worst over
samples, and pooled over all samples), max and mean absolute error; for classifiers, top-1
agreement. A user metric on labelled data plugs in as `eval_fn(runtime) -> float` (higher
is better), e.g. `--eval mypkg.metrics:accuracy`.

`Comparison.drop` is the one number the guard holds against `--max-accuracy-drop`:
  user metric given:  metric(original) - metric(converted)
  classification:     1 - top-1 agreement
  otherwise:          1 - mean cosine similarity (worst output)

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

EvalFn = Callable[[Any], float]

#: a sample's reference output below this fraction of the largest reference norm carries no
#: signal for a per-sample cosine (see the module docstring)
INFORMATIVE_NORM = 0.05


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
    kind: str = "cosine"                      # what `drop` measures: cosine | top1 | metric

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
        return float(1.0 - self.cosine)

    def summary(self) -> str:
        parts = [f"cosine {self.cosine:.4f} (worst sample {self.cosine_min:.4f})", f"max abs err {self.max_abs:.4g}"]
        skipped = max((o.uninformative for o in self.outputs), default=0)
        if skipped:
            parts.append(f"{skipped} of {self.samples} samples ~0 in the original: left out of the cosine")
        if self.top1_agreement is not None:
            parts.append(f"top-1 agreement {self.top1_agreement:.1%}")
        if self.metric is not None:
            parts.append(f"{self.metric_name or 'metric'} {self.metric:.4f} (original {self.reference_metric:.4f})")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "kind": self.kind, "drop": round(self.drop, 6),
                "cosine": round(self.cosine, 6), "cosine_min": round(self.cosine_min, 6),
                "max_abs": float(self.max_abs), "top1_agreement": self.top1_agreement,
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
    """Runs held-out samples through a reference runtime once, then through each candidate.

    Args:
        reference: the original model (a path, loaded with `runtimes.load` pinned to fp32, or
            an activated/activatable Runtime).
        samples: model-ready held-out samples, N x input shape (single-input models), or a list
            of feed dicts.
        task: "classification" adds top-1 agreement and makes it the guard's measure.
        eval_fn: optional user metric `fn(runtime) -> float`, higher is better.
    """

    def __init__(self, reference: Union[str, Path, Any], samples: Union[np.ndarray, list[dict]],
                 task: str = "raw", eval_fn: Optional[EvalFn] = None, metric_name: Optional[str] = None,
                 reference_backend: Optional[str] = None) -> None:
        if samples is None or len(samples) == 0:
            raise ConversionError("the accuracy check needs held-out samples; none were given")
        self.samples = samples
        self.task = task
        self.eval_fn = eval_fn
        self.metric_name = metric_name or (getattr(eval_fn, "__name__", None) if eval_fn else None)
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
        sub.kind = "cosine"
        return sub

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _runtime(model: Union[str, Path, Any], backend: Optional[str] = None, **kw: Any) -> Any:
        if isinstance(model, (str, Path)):
            import runtimes

            return runtimes.load(model, backend=backend, **kw)
        return model

    def _feeds(self):
        if isinstance(self.samples, np.ndarray):
            for i in range(len(self.samples)):
                yield self.samples[i:i + 1]
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
            raise ConversionError(f"the --eval function {self.metric_name} failed: {type(exc).__name__}: {exc}") from exc
        try:
            return float(value["metric"] if isinstance(value, dict) else value)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConversionError(f"the --eval function {self.metric_name} must return a number (higher is better), "
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
        top1 = None
        if self.task == "classification":
            name = names[0]
            agree = []
            for pos_r, o in zip(ref, outputs):
                a = np.asarray(pos_r[name])
                b = np.asarray(o.get(name, list(o.values())[0])).reshape(a.shape)
                agree.extend((a.reshape(a.shape[0], -1).argmax(1) == b.reshape(b.shape[0], -1).argmax(1)).tolist())
            top1 = float(np.mean(agree))
        kind = self.kind or ("metric" if self.eval_fn is not None else ("top1" if top1 is not None else "cosine"))
        return Comparison(len(ref), results, top1, None, self.reference_metric, self.metric_name, kind)

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
