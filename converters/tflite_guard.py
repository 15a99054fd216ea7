"""LiteRT INT8 through the accuracy guard: the same ranking and bisection as onnxruntime QDQ and
OpenVINO (converters.sensitivity.bisect_float_layers), with TFLite ops kept float.

Flow (for `VariantBuilder`, converters.variants): onnx2tf turns the prepared model, and the
weight-rounded one when rounding is on, into TF SavedModels (one conversion each, shared with
the litert fp32 variant); converters.tflite_int8 calibrates once on up to `CALIB_SAMPLES`
calibration samples spread over the whole set (the first samples of a set are often crops of
one photo) and writes each trial in about a second. Ranking: each layer alone kept float, on the
guard's few ranking samples (cosine to the original); TFLite's numeric debugger
(`layer_statistics_dump`, RMSE/scale) was tried for this and cannot rank a weight-rounded model:
its weights sit on the int8 grid, so every layer shows the same ~0.29 (pure output rounding).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from .sensitivity import bisect_float_layers

if TYPE_CHECKING:
    from .variants import Variant, VariantBuilder

#: calibration samples the TFLite INT8 quantizer uses at most (spread over the set)
CALIB_SAMPLES = 64
#: samples onnx2tf gets for its own output check when it only writes the SavedModel/fp32 file
CHECK_SAMPLES = 8


def spread(samples: np.ndarray, k: int) -> np.ndarray:
    """`k` samples evenly spread over the set (all when it has fewer)."""
    if len(samples) <= k:
        return samples
    return samples[np.linspace(0, len(samples) - 1, k).round().astype(int)]


def saved_model(b: "VariantBuilder", src: Path) -> Any:
    """onnx2tf's conversion of `src` to fp32 .tflite with its SavedModel kept (a TFLiteResult,
    made once per source model)."""
    from . import tflite

    cache = b.__dict__.setdefault("_tflite_saved", {})
    if src not in cache:
        tag = "float" if src == b.s.prepared else "rounded"
        b._say(f"litert: onnx2tf -> TF SavedModel of the {tag} model (about a minute)")
        res = tflite.onnx_to_tflite(src, b.s.work / f"tflite_sm_{tag}", "fp32", spread(b.s.calib, CHECK_SAMPLES),
                                    progress=b._say, saved_model_dir=b.s.work / f"tflite_saved_{tag}")
        cache[src] = res
    return cache[src]


def build_int8(b: "VariantBuilder") -> "Variant":
    """The LiteRT INT8 variant; over the budget, the guard keeps the most sensitive ops float."""
    import onnx

    from .tflite_int8 import TFLiteInt8Quantizer
    from .variants import Variant

    s = b.s
    calib = b._need_calib("TFLite INT8")
    src = b._int8_source()
    rounded = src != s.prepared
    float_sm = saved_model(b, s.prepared).saved_model
    int8_sm = saved_model(b, src).saved_model if rounded else float_sm
    out = s.work / "tflite_int8"
    out.mkdir(parents=True, exist_ok=True)
    used = spread(calib, CALIB_SAMPLES)
    onnx_outputs = [o.name for o in onnx.load(str(s.prepared), load_external_data=False).graph.output]
    with TFLiteInt8Quantizer(int8_sm, used, s.work, float_saved_model=float_sm if rounded else None,
                             output_names=onnx_outputs, progress=b._say) as q:
        path = q.quantize(out / "model_int8.tflite")
        v = Variant("litert-int8", "litert int8 (TFLite full-integer ops, float in/out)", "litert", "int8",
                    layout="NHWC", model=path.name, files={path.name: path}, check_with=("litert", path))
        v.notes += ["TFLite models are NHWC: the bundle's preprocessing says layout NHWC",
                    f"calibrated on {len(used)} of {len(calib)} calibration samples, spread over the set "
                    f"(TFLiteConverter on onnx2tf's SavedModel, {q.seconds:.0f} s)"]
        b._int8_notes(v)
        if rounded:
            exact, total = q.rounding_exact
            v.notes.append(f"weight rounding reached TFLite exactly in {exact} of {total} output channels (TFLite "
                           "rounds the others again on a wider step: its int32 bias range)")
        if s.exclude:
            v.notes.append(f"--exclude names ONNX layers ({', '.join(s.exclude)}); TFLite ops carry onnx2tf's TF "
                           "names, so they were not applied to this variant")
        if s.comparator is None:
            return v
        b.check(v)
        if v.within(s.budget) or not v.ok or b._guard_off(v):
            return v
        return _guarded(b, v, q, out)


def _guarded(b: "VariantBuilder", v: "Variant", q: Any, out: Path) -> "Variant":
    from .variants import Variant

    s = b.s
    sub = b._subset_comparator()
    trial_path = out / "guard_trial.tflite"

    def trial_drop(comparator: Any, excluded: Sequence[str]) -> float:
        return b._drop(comparator, "litert", q.quantize(trial_path, excluded))

    def evaluate(excluded: Sequence[str]) -> float:
        return v.comparison.drop if not excluded else trial_drop(s.comparator, excluded)

    latency = None
    if s.measure:
        def latency(excluded: Sequence[str]) -> float:
            import runtimes

            with runtimes.load(q.quantize(trial_path, excluded), backend="litert", threads=s.threads) as rt:
                return b._latency(rt)["p50_ms"]

    if not q.float_weights_restored:
        v.notes.append(f"layers kept float keep their rounded weights ({q.float_note})")
    try:
        guard = bisect_float_layers(q.layers, evaluate, s.budget, rank_evaluate=lambda ex: trial_drop(sub, ex),
                                    latency=latency, progress=b._say)
    finally:
        trial_path.unlink(missing_ok=True)
    v.guard = guard
    if not guard.excluded:
        return v
    final = q.quantize(out / "model_int8_mixed.tflite", guard.excluded)
    Path(v.files[v.model]).unlink(missing_ok=True)
    mixed = Variant("litert-int8-mixed", f"litert int8 with {len(guard.excluded)} TFLite ops float", "litert",
                    "mixed", layout="NHWC", model=final.name, files={final.name: final},
                    check_with=("litert", final), guard=guard, notes=list(v.notes))
    mixed.notes.append(f"kept float by the accuracy guard (TFLite op names): {', '.join(guard.excluded)}")
    b.check(mixed)
    return mixed

