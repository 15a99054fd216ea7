"""A .tflite model as convert input: the LiteRT file as given, and OpenVINO IR read straight from
it (OpenVINO's TFLite frontend), each checked against the original on held-out samples.

No ONNX route here (tf2onnx is not a dependency): ONNX-only steps (graph passes, onnxruntime
INT8, TensorRT/Edge TPU recipes) are reported as not available for this input. When OpenVINO
cannot read the file (MediaPipe's custom ops such as ``Convolution2DTransposeBias``), the
OpenVINO row says which op blocks it and the LiteRT file remains.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from runtimes.registry import backend_for

from .bundle import sha256_file, write_bundle
from .conversion.build import Built
from .conversion.choose import Choice
from .conversion.context import Context
from .conversion.data import Data
from .conversion.write import Written
from .convert_options import ConvertOptions
from .errors import ConversionError

#: the stages of the .tflite route (no compression: that works on the ONNX graph)
TFLITE_STAGES = ("prepare", "data", "build", "choose", "write")


def _input_spec(src: Path) -> Any:
    import runtimes

    with runtimes.load(src, backend=backend_for(src)) as rt:
        if len(rt.inputs) != 1:
            raise ConversionError(f"{src.name} has {len(rt.inputs)} inputs; edgesdk convert takes single-input models")
        return rt.inputs[0]


def _openvino_variant(src: Path, precision: str, work: Path) -> Any:
    from converters.variants import Variant

    v = Variant(f"openvino-{precision}", f"openvino {precision} (read from the .tflite)", "openvino", precision,
                layout="NHWC")
    try:
        import openvino as ov

        model = ov.convert_model(str(src))
        xml = work / f"{src.stem}.xml"
        ov.save_model(model, str(xml), compress_to_fp16=precision == "fp16")
    except Exception as exc:  # the frontend raises its own kinds; the op name is what the user needs
        ops = sorted(set(re.findall(r"(?:operation|op(?:erator)?)\s*(?:type)?\s*[:=]?\s*'?\"?([A-Z][A-Za-z0-9_]+)", str(exc))))
        v.error = (f"OpenVINO cannot read {src.name}" + (f": unsupported op {', '.join(ops)}" if ops else "")
                   + f" ({str(exc).splitlines()[0][:200]})")
        return v
    v.model, v.files = xml.name, {xml.name: xml, xml.with_suffix(".bin").name: xml.with_suffix(".bin")}
    v.check_with = ("openvino", xml)
    v.runtime_precision = "fp32" if precision == "fp32" else None
    return v


def build_tflite_variants(src: Path, opts: ConvertOptions, comparator: Any, work: Path,
                          say: Callable[[str], None]) -> list[Any]:
    from converters.variants import Variant

    spec = _input_spec(src)
    engine = backend_for(src)  # the .tflite's own engine (LiteRT), also the reference
    asis = Variant(f"{engine}-asis", f"{engine} (the .tflite as given)", engine,
                   "int8" if spec.dtype.kind in "iu" else "fp32", model=src.name, files={src.name: src},
                   layout="NHWC", check_with=(engine, src))
    wanted = [p for p in ("fp32", "fp16") if opts.precision in ("auto", p)]
    variants = [asis] + [_openvino_variant(src, p, work) for p in wanted]
    for v in variants:
        if v.ok and comparator is not None:
            backend, path = v.check_with
            v.comparison = comparator.compare(path, backend=backend)
            v.checked = True
        say(f"  {v.name}: {v.error or (v.comparison.summary() if v.comparison else 'built')}")
    return variants


@dataclass
class TflitePrepared:
    """Stage "prepare" of a .tflite input: its input spec and how it is fed, what it outputs."""

    src: Path
    spec_in: Any                     # runtimes.TensorSpec of the single input
    shape: list[int]
    preset: Any
    resolved: Any                    # edgesdk.preprocess_options.ResolvedPreprocess
    spec: Any                        # the bundle's PreprocessSpec
    task: str
    decoder: dict[str, Any]
    labels: list[str]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.src.name}: input {self.spec_in.name} {self.shape} {self.spec_in.dtype.name}; task {self.task}; "
                f"preset {self.preset.name if self.preset else 'none'}; no graph passes (TFLite input)")


def convert_tflite(ctx: Context, src: Path) -> Any:
    """convert() for a .tflite file (see the module doc)."""
    from . import convert as conv
    from .conversion.context import work_dir

    ctx.plan = TFLITE_STAGES
    with work_dir(ctx):
        prep = ctx.stage("prepare", _prepare, src)
        data = ctx.stage("data", _data, prep)
        built = ctx.stage("build", _build, prep, data)
        choice = ctx.stage("choose", _choose, built)
        written = ctx.stage("write", _write, prep, data, built, choice)
    written.report["stages"] = ctx.replay()
    return conv.ConvertResult(written.bundle, choice.chosen, built.variants, written.report)


def _prepare(ctx: Context, src: Path) -> TflitePrepared:
    from . import convert as conv
    from .preprocess_options import resolve_preprocess
    from .presets import get_preset, preset_for

    opts = ctx.opts
    spec_in = _input_spec(src)
    pre = get_preset(opts.preset) if opts.preset else preset_for(src)
    resolved = resolve_preprocess(opts.preprocess_options, preset=pre.preprocess if pre else None,
                                  preset_name=pre.name if pre else "", input_shape=list(spec_in.shape),
                                  input_name=spec_in.name, dtype=spec_in.dtype.name)
    shape = [int(d or 1) for d in spec_in.shape]
    notes: list[str] = []
    conv._check_stated(pre, opts.preprocess, resolved, opts.calib, opts.assume_preprocess, opts.preprocess_options,
                       ctx.say, notes)
    spec = conv._bundle_spec(opts.preprocess or resolved.spec, shape)
    task = opts.task or (pre.task if pre else "raw")
    decoder = dict(pre.decoder) if pre is not None and pre.task == task else dict(conv.TASK_DECODERS.get(task, {}))
    labels = list(opts.labels) if isinstance(opts.labels, (list, tuple)) else (list(pre.labels) if pre else [])
    return TflitePrepared(src, spec_in, shape, pre, resolved, spec, task, decoder, labels, notes)


def _data(ctx: Context, prep: TflitePrepared) -> Data:
    from converters.compare import Comparator

    from .calibration import load_calibration

    opts = ctx.opts
    if opts.calib is None:
        return Data()
    data = load_calibration(opts.calib, prep.spec, opts.calib_size, input_shape=prep.shape,
                            input_dtype=prep.spec_in.dtype)
    fit, held = data.split(opts.holdout)
    comparator = Comparator(prep.src, held.samples, task=prep.task, reference_backend=backend_for(prep.src))
    info = {"source": data.source, "kind": data.kind, "calibration": len(fit), "held_out": len(held),
            "held_out_source": "every 4th sample, never calibrated on", "shape": prep.shape,
            "dtype": prep.spec_in.dtype.name}
    return Data(fit, held, comparator, info)


def _build(ctx: Context, prep: TflitePrepared, data: Data) -> Built:
    variants = build_tflite_variants(prep.src, ctx.opts, data.comparator, ctx.work, ctx.say)
    return Built(variants, [], notes=["input is TFLite: ONNX-only routes (graph passes, onnxruntime INT8, TensorRT, "
                                      "Edge TPU recipes) were not built; INT8 from a float .tflite needs the ONNX "
                                      "source"])


def _choose(ctx: Context, built: Built) -> Choice:
    order = [b.backend for b in ctx.prof.backends]
    good = [v for v in built.variants if v.ok and v.within(ctx.opts.budget) is not False]
    if not good:
        raise ConversionError("no variant of " + Path(str(ctx.model)).name + " is within the budget: "
                              + "; ".join(f"{v.name}: {v.error or v.comparison.summary()}" for v in built.variants))
    chosen = min(good, key=lambda v: order.index(v.backend) if v.backend in order else len(order))
    return Choice(chosen, "first in the profile's preference order within the accuracy budget", None)


def _write(ctx: Context, prep: TflitePrepared, data: Data, built: Built, choice: Choice) -> Written:
    import json

    from .conversion.manifest import build_manifest, jsonable
    from .conversion.markdown import markdown

    opts, src, chosen = ctx.opts, prep.src, choice.chosen
    report = _report(ctx, prep, data, built, choice)
    manifest = build_manifest(chosen, src, ctx.prof, prep.spec, prep.preset, prep.task, prep.labels, prep.shape,
                              prep.spec_in.name, np.dtype(prep.spec_in.dtype), report,
                              opts.name or (prep.preset.name if prep.preset else src.stem), prep.decoder)
    report["seconds"] = round(time.perf_counter() - ctx.started, 1)

    def write_reports(stage: Path) -> None:
        report["stages"] = ctx.replay(running="write")
        (stage / "report.json").write_text(json.dumps(report, indent=2, default=jsonable))
        (stage / "report.md").write_text(markdown(report, False))

    bundle = write_bundle(ctx.output, dict(chosen.files), manifest, overwrite=opts.force, extra_writer=write_reports)
    ctx.say(f"bundle written: {ctx.output} ({chosen.name}; {choice.decision})")
    return Written(bundle, report)


def _report(ctx: Context, prep: TflitePrepared, data: Data, built: Built, choice: Choice) -> dict[str, Any]:
    budget, src = ctx.opts.budget, prep.src
    return {"model": {"file": src.name, "sha256": sha256_file(src),
                      "input": {"name": prep.spec_in.name, "shape": prep.shape, "dtype": prep.spec_in.dtype.name}},
            "profile": {"name": ctx.prof.name, "is_this_host": "not measured"}, "mode": "profile preference order",
            "budget": budget, "accuracy_measure": "1 - mean cosine similarity to the original .tflite",
            "passes": [], "calibration": data.info, "variants": [v.to_dict(budget) for v in built.variants],
            "chosen": choice.chosen.to_dict(budget), "decision": choice.decision, "notes": prep.notes + built.notes,
            "threads": 1, "preprocess": prep.resolved.to_dict(), "options": ctx.opts.to_dict(), "seconds": 0.0,
            "stages": ctx.replay()}
