"""Stage "build": every candidate variant built and compared with the original on the held-out
samples (INT8 over budget keeps its most sensitive layers float, converters.guard); when timing
here, a reference onnxruntime fp32 row and an interleaved re-measurement of all of them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from runtimes.registry import REFERENCE, record

from ..errors import ConversionError
from . import qat
from .candidates import Candidate, candidates
from .context import Context
from .data import Data
from .prepare import Prepared


@dataclass
class Built:
    variants: list[Any]                  # converters.variants.Variant, in the candidates' order
    candidates: list[Candidate]          # parallel to `variants`
    baseline: Optional[Any] = None       # the reference row when the profile lists none
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # from the re-measurement

    @property
    def rows(self) -> list[Any]:
        return ([self.baseline] if self.baseline else []) + self.variants

    def summary(self) -> str:
        ok = [v.key for v in self.variants if v.ok]
        failed = len(self.variants) - len(ok)
        return (f"{len(ok)} variant(s) built ({', '.join(ok) or 'none'})" + (f", {failed} failed" if failed else "")
                + (f"; baseline {self.baseline.key}" if self.baseline else ""))


def build(ctx: Context, prep: Prepared, data: Data) -> Built:
    import runtimes
    from converters import tflite
    from converters.variants import VariantBuilder

    o = ctx.opts
    precision = "fp32" if prep.already_quantized else o.precision  # taken as given (prepare says so)
    cands, notes = candidates(ctx.prof, precision, o.backends, ctx.measure, runtimes.available_backends(),
                              tflite.is_available())
    from ..shapes import keep_dynamic_candidates

    cands, skipped = keep_dynamic_candidates(cands, prep.facts.shape, ctx.prof.name)  # TFLite, NPU: static only
    notes += skipped
    if o.precision == "int8" and data.fit is None and any(not record(c.backend).int8_without_calib for c in cands):
        raise ConversionError("INT8 needs calibration data: pass --calib with a folder of real images, a video "
                              "or a .npy (never random noise)")
    if o.qat:
        qat.check_inputs(ctx, prep, data)  # before minutes of building
    builder = VariantBuilder(_settings(ctx, prep, data))
    baseline = None
    if ctx.measure and not any((c.backend, c.precision) == (REFERENCE, "fp32") for c in cands):
        # ratios are against onnxruntime fp32: build it as a reference row if the profile has none
        baseline = builder.build(REFERENCE, "fp32")
        baseline.key, baseline.name = f"baseline-{REFERENCE}-fp32", f"{REFERENCE} fp32 (baseline)"
    built = _build_all(ctx, builder, cands, data)
    variants, kept, qat_notes = qat.after_guard(ctx, builder, [built[i] for i in sorted(built)],
                                                [cands[i] for i in sorted(built)], data)
    builder.close()
    result = Built(variants, kept, baseline, notes + qat_notes)
    if ctx.measure:
        ctx.say(f"timing {sum(v.ok for v in result.variants) + bool(baseline)} variants again, interleaved in 3 rounds")
        result.warnings += builder.remeasure(result.rows, rounds=3)
    return result


def _settings(ctx: Context, prep: Prepared, data: Data) -> Any:
    from converters.variants import BuildSettings

    o = ctx.opts
    return BuildSettings(
        prepared=prep.prepared_path, work=ctx.work / "variants", input_name=prep.facts.input_name,
        input_shape=prep.facts.shape, calib=data.fit_samples, comparator=data.comparator, budget=o.budget,
        calib_method=o.calib_method, exclude=list(o.exclude), guard_steps=o.guard_steps,
        accuracy_control=o.accuracy_control, threads=ctx.threads, measure=ctx.measure,
        bench_seconds=o.bench_seconds, progress=ctx.say, model_name=prep.src_path.name, **_tensorrt(ctx.prof))


def _tensorrt(prof: Any) -> dict[str, Any]:
    """The device's TensorRT version (its calibration cache header must match) and DLA core, from
    the profile; converters.tensorrt holds the default."""
    from converters.tensorrt import DEFAULT_TRT_VERSION

    pref = next((p for p in prof.backends if p.backend == "tensorrt"), None)
    if pref is None:
        return {"trt_version": DEFAULT_TRT_VERSION, "dla_core": None}
    return {"trt_version": str(dict(prof.software).get("tensorrt", DEFAULT_TRT_VERSION)).split()[0],
            "dla_core": pref.option("dla_core")}


def _build_all(ctx: Context, builder: Any, cands: list[Candidate], data: Data) -> dict[int, Any]:
    """{candidate index: variant}; timing here builds float variants first (the INT8 guard stops
    when a float variant is as fast); the profile's order stops at the first good variant."""
    budget = ctx.opts.budget
    order = list(range(len(cands)))
    if ctx.measure:
        order.sort(key=lambda i: (cands[i].precision.startswith("int8"), i))
    built: dict[int, Any] = {}
    for i in order:
        c = cands[i]
        if not ctx.measure and any(v.ok and v.within(budget) is not False for v in built.values()):
            break  # the profile's order decides: the first good variant wins
        if record(c.backend).needs == "onnx2tf" and data.fit is None and data.held is None:
            built[i] = _failed(c, "TFLite conversion needs real samples: pass --calib")
            continue
        ctx.say(f"building {c.backend} {c.precision}")
        v = builder.build(c.backend, c.precision)
        if c.layout == "NHWC" and record(v.backend).file_layout != "NHWC":
            v.notes.append("the profile prefers NHWC for this backend; ONNX/IR models stay NCHW")
        if c.device == "GPU" and v.ok and record(v.backend).gpu_recipe:
            _attach_gpu_recipe(v, ctx.work)
        built[i] = v
        status = v.error or (v.comparison.summary() if v.comparison else "built")
        lat = f", {v.latency['p50_ms']:.2f} ms" if v.latency else ""
        ctx.say(f"  {v.name}: {status}{lat}")
    return built


def _attach_gpu_recipe(v: Any, work: Path) -> None:
    """OpenCL GPU targets: the bundle runs on the GPU; gpu/ says how to set it up and check it there."""
    from converters import gpu_recipes

    v.files.update(gpu_recipes.write_recipe(work / f"gpu-{v.key}", v.backend, v.model))
    v.device = "GPU"
    v.not_verified.append(gpu_recipes.not_verified(v.backend))


def _failed(c: Candidate, why: str) -> Any:
    from converters.variants import Variant

    return Variant(f"{c.backend}-{c.precision}", f"{c.backend} {c.precision}", c.backend, c.precision, error=why)
