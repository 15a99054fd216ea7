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
from typing import Any, Callable, Optional

import numpy as np

from runtimes.registry import backend_for

from .bundle import sha256_file, write_bundle
from .conversion.build import Built
from .conversion.choose import Choice
from .conversion.context import Context
from .conversion.data import Data
from .conversion.write import Written, choice_mode
from .convert_options import ConvertOptions
from .errors import ConversionError

#: the stages of the .tflite route (no compression: that works on the ONNX graph)
TFLITE_STAGES = ("prepare", "data", "build", "choose", "write")
#: what an IR read from a float .tflite can be: bf16 is the fp32 IR run with the bf16 hint
FLOAT_IR = ("fp32", "fp16", "bf16")


def _input_spec(src: Path) -> Any:
    return _model_io(src)[0]


def _model_io(src: Path) -> tuple[Any, list[tuple[str, list[Optional[int]]]]]:
    """The single input's runtimes.TensorSpec and the outputs' (name, dims)."""
    import runtimes

    with runtimes.load(src, backend=backend_for(src)) as rt:
        if len(rt.inputs) != 1:
            from .convert import MULTI_INPUT_ADVICE

            raise ConversionError(f"{src.name} has {len(rt.inputs)} inputs; edgesdk convert takes single-input models"
                                  + MULTI_INPUT_ADVICE)
        return rt.inputs[0], [(o.name, list(o.shape)) for o in rt.outputs]


def tflite_custom_ops(path: Path) -> list[str]:
    """Names of the custom ops a .tflite uses (``Model.operator_codes[].custom_code`` in its
    flatbuffer), read without an engine; [] when the file cannot be read this way."""
    import struct

    buf = path.read_bytes()

    def u32(at: int) -> int:
        return struct.unpack_from("<I", buf, at)[0]

    def field(table: int, i: int) -> Any:  # where field i of the table at `table` is, or None
        vtable = table - struct.unpack_from("<i", buf, table)[0]
        if 4 + 2 * i >= struct.unpack_from("<H", buf, vtable)[0]:
            return None
        off = struct.unpack_from("<H", buf, vtable + 4 + 2 * i)[0]
        return table + off if off else None

    try:
        codes = field(u32(0), 1)  # Model field 1: operator_codes
        if codes is None:
            return []
        vec, names = codes + u32(codes), set()
        for k in range(u32(vec)):
            code = vec + 4 + 4 * k + u32(vec + 4 + 4 * k)
            custom = field(code, 1)  # OperatorCode field 1: custom_code
            if custom is not None:
                at = custom + u32(custom)
                names.add(buf[at + 4:at + 4 + u32(at)].decode("utf-8"))
        return sorted(names)
    except (struct.error, UnicodeDecodeError, IndexError):
        return []


def _openvino_variant(src: Path, precision: str, work: Path) -> Any:
    """An IR read from the .tflite: fp32, fp16 (weights stored fp16) or bf16 (the fp32 IR run
    with the bf16 hint, as the ONNX route builds it)."""
    from converters.variants import BF16_HINT_NOTE, Variant

    if precision == "bf16":
        v = Variant("openvino-bf16", "openvino fp32 IR (read from the .tflite) run with bf16 hint", "openvino",
                    "fp32", layout="NHWC", runtime_precision="bf16", notes=[BF16_HINT_NOTE])
    else:
        v = Variant(f"openvino-{precision}", f"openvino {precision} (read from the .tflite)", "openvino", precision,
                    layout="NHWC", runtime_precision="fp32" if precision == "fp32" else None)
    xml = work / (f"{src.stem}_fp16.xml" if precision == "fp16" else f"{src.stem}.xml")
    if not xml.is_file():
        error = _save_ir(src, xml, fp16=precision == "fp16")
        if error:
            v.error = error
            return v
    v.model, v.files = xml.name, {xml.name: xml, xml.with_suffix(".bin").name: xml.with_suffix(".bin")}
    v.check_with = ("openvino", xml)
    return v


def _save_ir(src: Path, xml: Path, fp16: bool) -> Optional[str]:
    """Write the IR OpenVINO's TFLite frontend reads from `src`; the error to show when it cannot."""
    import logging

    from converters.openvino_ir import _ov

    root_level = logging.root.level
    try:
        ov = _ov()  # the engine's telemetry declined first (converters.engine_telemetry)
        try:
            model = ov.convert_model(str(src))
        finally:  # convert_model sets the root logger to ERROR: every later warning would be lost
            logging.root.setLevel(root_level)
        ov.save_model(model, str(xml), compress_to_fp16=fp16)
    except Exception as exc:  # the frontend raises its own kinds; the op name is what the user needs
        ops = sorted(set(re.findall(r"(?:operation|op(?:erator)?)\s*(?:type)?\s*[:=]?\s*'?\"?([A-Z][A-Za-z0-9_]+)", str(exc))))
        custom = tflite_custom_ops(src)
        # the frontend's message often names no op; a custom op (MediaPipe's) is what it lacks then
        why = (f": unsupported op {', '.join(ops)}" if ops else
               f": custom op {', '.join(custom)} is not in OpenVINO's TFLite frontend" if custom else "")
        return (f"OpenVINO cannot read {src.name}{why}; the litert route (the .tflite as given) runs it"
                + f" ({str(exc).splitlines()[0][:160]})")
    return None


def build_tflite_variants(src: Path, opts: ConvertOptions, checker: Any, work: Path,
                          say: Callable[[str], None], profile: Any, notes: list[str]) -> list[Any]:
    """The .tflite as given and the OpenVINO IRs read from it, each loaded by `checker` (see
    `_checker`) with the precision its manifest will ask for: compared with the original and,
    when the checker measures, timed here."""
    from converters.variants import Variant

    spec = _input_spec(src)
    engine = backend_for(src)  # the .tflite's own engine (LiteRT), also the reference
    asis = Variant(f"{engine}-asis", f"{engine} (the .tflite as given)", engine,
                   "int8" if spec.dtype.kind in "iu" else "fp32", model=src.name, files={src.name: src},
                   layout="NHWC", check_with=(engine, src))
    variants = [asis] if _wanted_backend(engine, opts.backends, src) else []
    if _wanted_backend("openvino", opts.backends, src):
        variants += [_openvino_variant(src, p, work) for p in _openvino_precisions(profile, opts, notes, say)]
    for v in variants:
        if v.ok:
            checker.check(v)
        lat = f", {v.latency['p50_ms']:.2f} ms" if v.latency else ""
        say(f"  {v.name}: {v.error or (v.comparison.summary() if v.comparison else 'built')}{lat}")
    return _asked_precision(variants, opts.precision, src)


def _checker(src: Path, spec: Any, opts: ConvertOptions, comparator: Any, work: Path, threads: Optional[int],
             measure: bool) -> Any:
    """The ONNX route's check-and-time steps (converters.variants.VariantBuilder.check and
    .remeasure), here for files that were not built from an ONNX model."""
    from converters.variants import BuildSettings, VariantBuilder

    return VariantBuilder(BuildSettings(prepared=src, work=work, input_name=spec.name,
                                        input_shape=[int(d or 1) for d in spec.shape], comparator=comparator,
                                        budget=opts.budget, threads=threads, measure=measure,
                                        bench_seconds=opts.bench_seconds, model_name=src.name))


def _openvino_precisions(profile: Any, opts: ConvertOptions, notes: list[str],
                         say: Callable[[str], None]) -> list[str]:
    """The IR precisions read from a .tflite: those the profile lists for openvino (auto), or the
    asked one; what the profile does not list is built only when asked, and said."""
    listed = [p for p in profile.precisions_for("openvino") if p in FLOAT_IR]
    note = None
    if opts.precision in FLOAT_IR:
        if opts.precision not in listed:
            note = f"profile {profile.name} lists no openvino {opts.precision}; built it as asked (--precision)"
        listed = [opts.precision]
    elif opts.precision != "auto":
        listed = []
    elif not listed and opts.backends and "openvino" in opts.backends:
        note, listed = f"profile {profile.name} lists no openvino fp32/fp16/bf16; built openvino fp32 as --backend asked", \
            ["fp32"]
    elif not listed:
        note = (f"profile {profile.name} lists no openvino fp32/fp16/bf16: no OpenVINO IR was built "
                "(--backend openvino builds one)")
    if note:
        notes.append(note)
        say(f"  note: {note}")
    return listed


def _wanted_backend(backend: str, backends: Any, src: Path) -> bool:
    """Whether --backend (none: every backend) asks for `backend`; one a .tflite input cannot
    be built for is refused rather than ignored."""
    if not backends:
        return True
    routes = (backend_for(src), "openvino")
    unknown = [b for b in backends if b not in routes]
    if unknown:
        raise ConversionError(f"--backend {', '.join(unknown)}: a .tflite input is built for {routes[0]} (the file as "
                              f"given) or openvino (read from it); use one of those, or convert the ONNX model for "
                              "other backends")
    return backend in backends


def _asked_precision(variants: list[Any], precision: str, src: Path) -> list[Any]:
    """The variants of an explicit --precision; none built is refused rather than handing
    back the .tflite as given under a precision it does not have."""
    if precision == "auto":
        return variants
    hit = [v for v in variants if v.ok and precision in (v.precision, v.runtime_precision)]
    if hit:
        return hit
    why = "; ".join(f"{v.name}: {v.error}" for v in variants
                    if precision in (v.precision, v.runtime_precision) and v.error)
    if not why:
        kinds = ", ".join(sorted({v.precision for v in variants if v.ok}))
        why = (f"a .tflite input is taken as given or read by OpenVINO ({kinds}); EdgeSDK quantizes from the ONNX "
               "or PyTorch model (convert that one to get INT8)")
    raise ConversionError(f"--precision {precision}: no {precision} variant of {src.name} could be built ({why}); "
                          "use --precision auto to take what can be built")


def _labels(labels: Any, pre: Any) -> list[str]:
    """--labels (edgesdk.convert.stated_labels), else the preset's."""
    from .convert import stated_labels

    if labels is not None:
        return stated_labels(labels)
    return list(pre.labels) if pre is not None else []


def _say_facts(src: Path, spec_in: Any, pre: Any, task: str, resolved: Any, say: Callable[[str], None],
               notes: list[str]) -> None:
    """What the bundle will assume about its input, said before the work (and kept in the report)."""
    say(f"{src.name}: input {spec_in.name} {list(spec_in.shape)}; preset {pre.name if pre else 'none'}; task {task}")
    if pre is None and resolved.assumed:
        note = (f"no preset: preprocessing ASSUMED, not stated: {resolved.assumed_text()} (state --normalize/--mean/--std/--color/"
                "--resize/--pad-value to change it)")
        say(note)
        notes.append(note)


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
        choice = ctx.stage("choose", _choose, built, data)
        written = ctx.stage("write", _write, prep, data, built, choice)
    written.report["stages"] = ctx.replay()
    return conv.ConvertResult(written.bundle, choice.chosen, built.variants, written.report)


def _prepare(ctx: Context, src: Path) -> TflitePrepared:
    from . import convert as conv
    from .preprocess_options import resolve_preprocess
    from .presets import lookup_preset

    opts = ctx.opts
    if opts.freeze_inputs:
        raise ConversionError(f"--freeze-input edits ONNX graphs; {src.name} is a .tflite: convert the ONNX or "
                              "PyTorch original with --freeze-input, or drop the option")
    spec_in, outputs = _model_io(src)
    pre = lookup_preset(opts.preset, src)
    resolved = resolve_preprocess(opts.preprocess_options, preset=pre.preprocess if pre else None,
                                  preset_name=pre.name if pre else "", input_shape=list(spec_in.shape),
                                  input_name=spec_in.name, dtype=spec_in.dtype.name)
    shape = [int(d or 1) for d in spec_in.shape]
    notes: list[str] = []
    conv._check_stated(pre, opts.preprocess, resolved, opts.calib, opts.assume_preprocess, opts.preprocess_options,
                       ctx.say, notes)
    spec = conv._bundle_spec(opts.preprocess or resolved.spec, shape)
    task = opts.task or (pre.task if pre else "raw")
    _say_facts(src, spec_in, pre, task, resolved, ctx.say, notes)
    decoder, labels = conv._task_decoder(task, opts.task, pre, {}, outputs, _labels(opts.labels, pre), opts.decoder,
                                         spec.size, src, ctx.say, notes)
    if opts.exclude:
        note = (f"--exclude {', '.join(opts.exclude)}: not applied (a .tflite input is not quantized here, so no "
                "layer is kept float; --exclude names ONNX nodes of an ONNX input)")
        ctx.say(note)
        notes.append(note)
    return TflitePrepared(src, spec_in, shape, pre, resolved, spec, task, decoder, labels, notes)


def _data(ctx: Context, prep: TflitePrepared) -> Data:
    """The ONNX route's split and warnings (edgesdk.conversion.data.split_samples), the .tflite's
    preprocessing, and LiteRT running the original for the comparison."""
    from converters.compare import Comparator

    from .accuracy import box_decoder_for
    from .calibration import load_calibration, stderr_progress
    from .conversion.data import split_samples

    def load(source: Any, size: Any) -> Any:
        return load_calibration(source, prep.spec, size, input_shape=prep.shape, input_dtype=prep.spec_in.dtype,
                                progress=stderr_progress if ctx.say_is_on else None)

    def comparator(held: Any) -> Any:
        ctx.say(f"reference outputs of the original model on {len(held)} held-out samples")
        return Comparator(prep.src, held.samples, task=prep.task, eval_fn=ctx.eval_fn, metric=ctx.metric,
                          reference_backend=backend_for(prep.src), box_decoder=box_decoder_for(prep, prep.shape))

    return split_samples(ctx, load, comparator, prep.shape, prep.spec_in.dtype.name)


def _build(ctx: Context, prep: TflitePrepared, data: Data) -> Built:
    notes: list[str] = []
    checker = _checker(prep.src, prep.spec_in, ctx.opts, data.comparator, ctx.work, ctx.threads, ctx.measure)
    variants = build_tflite_variants(prep.src, ctx.opts, checker, ctx.work, ctx.say, ctx.prof, notes)
    custom = tflite_custom_ops(prep.src)
    note = ("input is TFLite: ONNX-only routes (graph passes, onnxruntime INT8, TensorRT, Edge TPU recipes) were "
            "not built; INT8 from a float .tflite needs the ONNX source (tf2onnx --tflite makes one; convert that "
            ".onnx)" + (f"; custom op {', '.join(custom)} may block that route too (tf2onnx converts builtin ops; "
                        "1.17 rejects MediaPipe's Convolution2DTransposeBias)" if custom else ""))
    built = Built(variants, [], notes=notes + [note])
    timed = [v for v in variants if v.ok and v.latency]
    if len(timed) > 1:
        ctx.say(f"timing {len(timed)} variants again, interleaved in 3 rounds")
        built.warnings += checker.remeasure(timed, rounds=3)
    return built


def _choose(ctx: Context, built: Built, data: Data) -> Choice:
    """The ONNX route's verdicts and pick (edgesdk.conversion.choose), the profile's backend order."""
    from .conversion.candidates import Candidate
    from .conversion.choose import pick
    from .conversion.verdict import judge_variants, with_verdict

    judge_variants(ctx, built.variants, data)
    order = [b.backend for b in ctx.prof.backends]
    ranked = sorted(built.variants, key=lambda v: order.index(v.backend) if v.backend in order else len(order))
    cands = [Candidate(v.backend, v.precision, v.device, v.layout, rank) for rank, v in enumerate(ranked)]
    chosen, decision = pick(ranked, cands, ctx.opts.budget, ctx.measure, ctx.opts.keep_best, data.warnings)
    return Choice(chosen, with_verdict(decision, chosen), None)


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
    from .conversion.growth import growth_warning, source_bytes
    from .conversion.verdict import accuracy_measure, report_warnings

    budget, src, chosen = ctx.opts.budget, prep.src, choice.chosen
    baseline = next((v for v in built.variants if v.ok and v.check_with == (backend_for(src), src)), None)
    grown = growth_warning(src.name, source_bytes(src), chosen.size_bytes, chosen)
    if grown:
        ctx.say(f"WARNING: {grown}")
    return {"model": {"file": src.name, "sha256": sha256_file(src),
                      "input": {"name": prep.spec_in.name, "shape": prep.shape, "dtype": prep.spec_in.dtype.name}},
            "profile": {"name": ctx.prof.name, "is_this_host": ctx.this_host},
            "mode": choice_mode(ctx),
            "budget": budget, "accuracy_measure": accuracy_measure(ctx, data) + " (against the original .tflite on LiteRT)",
            "passes": [], "calibration": data.info, "variants": [v.to_dict(budget, baseline) for v in built.variants],
            "ratios_against": f"{baseline.name}, the original file" if baseline else None,
            "chosen": chosen.to_dict(budget), "decision": choice.decision, "notes": prep.notes + built.notes,
            "warnings": report_warnings(data, built.warnings, chosen) + ([grown] if grown else []),
            "over_budget": chosen.within(budget) is False,
            "threads": ctx.threads, "preprocess": prep.resolved.to_dict(), "options": ctx.opts.to_dict(), "seconds": 0.0,
            "stages": ctx.replay()}
