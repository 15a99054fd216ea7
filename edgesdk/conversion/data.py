"""Stage "data": calibration samples and held-out samples (never calibrated on), preprocessed as
the bundle will preprocess at run time, and the Comparator holding the original model's outputs
on the held-out samples (Polygraphy's Comparator, here converters.compare)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from .context import Context
from .prepare import Prepared


@dataclass
class Data:
    fit: Any = None                 # the calibration samples (edgesdk.calibration.CalibrationSet)
    held: Any = None                # the held-out samples
    comparator: Any = None          # converters.compare.Comparator, None without held-out samples
    info: Optional[dict[str, Any]] = None   # the report's "calibration"
    warnings: list[str] = field(default_factory=list)

    @property
    def fit_samples(self) -> Any:
        return self.fit.samples if self.fit is not None else None

    def summary(self) -> str:
        if self.fit is None and self.held is None:
            return "no calibration or held-out data: INT8 static variants not built, accuracy not checked"
        parts = [f"{len(self.fit)} calibration samples" if self.fit is not None else "no calibration samples",
                 f"{len(self.held)} held out" if self.held is not None else "none held out"]
        if self.warnings:
            parts.append(f"{len(self.warnings)} data warning(s)")
        return ", ".join(parts)


def split_data(ctx: Context, prep: Prepared) -> Data:
    f = prep.facts
    return split_samples(ctx, lambda source, size: _load(ctx, prep, source, size),
                         lambda held: _comparator(ctx, prep, held), f.shape, f.dtype)


def split_samples(ctx: Context, load: Callable[[Any, Optional[int]], Any], comparator: Callable[[Any], Any],
                  shape: Any, dtype: Any) -> Data:
    """The calibration and held-out samples of either route (ONNX or .tflite input): `load(source,
    size)` reads a CalibrationSet as the bundle preprocesses; held out are --val, else whole
    sources of --calib (CalibrationSet.split); `comparator(held)` holds the original's outputs."""
    from converters import guard as int8_guard

    o = ctx.opts
    data = Data()
    if o.calib is not None:
        ctx.say(f"calibration data: {o.calib if not isinstance(o.calib, np.ndarray) else 'array'}")
        calib_set = load(o.calib, o.calib_size)
        if o.val is not None:
            data.fit, data.held = calib_set, load(o.val, None)
            held_source = f"--val {data.held.source}"
        else:
            data.fit, data.held = calib_set.split(o.holdout)
            held_source = (f"{data.held.source_count} of {calib_set.source_count} sources of the calibration data "
                           f"held out whole ({calib_set.source_rule}), never used to calibrate")
        data.warnings += int8_guard.data_warnings(data.fit.samples, len(data.held), data.fit.source_count)
        data.info = {"source": calib_set.source, "kind": calib_set.kind, "calibration": len(data.fit),
                     "held_out": len(data.held), "held_out_source": held_source, "shape": shape,
                     "dtype": str(dtype), "notes": list(calib_set.notes)}
    elif o.val is not None:
        data.held = load(o.val, None)
    if data.held is not None:
        data.comparator = comparator(data.held)
        for w in data.warnings:
            ctx.say(f"WARNING: {w}")
    return data


def _load(ctx: Context, prep: Prepared, source: Any, size: Optional[int]) -> Any:
    from ..calibration import load_calibration, stderr_progress

    f = prep.facts
    return load_calibration(source, f.preprocess, size, input_shape=f.shape, input_dtype=f.dtype,
                            progress=stderr_progress if ctx.say_is_on else None)


def _comparator(ctx: Context, prep: Prepared, held: Any) -> Any:
    from pathlib import Path

    from converters.compare import Comparator
    from runtimes.registry import REFERENCE

    from ..accuracy import box_decoder_for

    ctx.say(f"reference outputs of the original model on {len(held)} held-out samples")
    # a PyTorch model is compared through its export, before any compression changes the file
    original = prep.src_path if isinstance(ctx.model, (str, Path)) else prep.prepared_path
    original = prep.reference_path or original  # a float16 model: its float32 widening
    return Comparator(original, held.samples, task=prep.facts.task, eval_fn=ctx.eval_fn, reference_backend=REFERENCE,
                      metric=ctx.metric, box_decoder=box_decoder_for(prep.facts, prep.facts.shape))
