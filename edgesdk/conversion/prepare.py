"""Stage "prepare": the model as ONNX, what it is (ModelFacts: input, preprocessing, task, labels),
and the graph preparation passes (static shapes, opset, names, folding, shape inference)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from ..errors import ConversionError
from .context import Context


@dataclass
class Prepared:
    src_path: Path                   # the model file the bundle is made from (a PyTorch model: its export)
    source_proto: Any                # the ONNX model as loaded
    facts: Any                       # edgesdk.convert.ModelFacts
    prepared_path: Path              # work/prepared.onnx (compress overwrites it)
    prepared_model: Any              # the passes' output, before any compression
    passes: list[Any]                # converters.passes records
    name: str                        # the bundle's name
    #: the model the accuracy check runs as the original when that is not src_path (a float16
    #: model widened to float32: the engines' float32 reference runs it, the float16 file it cannot)
    reference_path: Optional[Path] = None
    #: what quantization the input already carries ('' for a float model): built only as given
    already_quantized: str = ""

    def summary(self) -> str:
        f = self.facts
        changed = [r.name for r in self.passes if r.changes]
        return (f"{self.src_path.name}: input {f.input_name} {f.shape} {f.dtype}; task {f.task}; "
                f"preset {f.preset.name if f.preset else 'none'}; passes that changed the graph: "
                f"{', '.join(changed) or 'none'}")


def prepare(ctx: Context) -> Prepared:
    import onnx

    from converters.fp16_io import is_float16_model
    from converters.passes import PassContext, default_passes, run_passes

    from ..convert import _load_model, _model_facts

    o = ctx.opts
    src_path, proto = _load_model(ctx.model, ctx.work, o.torch_example, ctx.say, o.example_shape)
    proto, frozen_path, frozen_notes = _freeze(ctx, proto)
    facts = _model_facts(ctx.model, src_path, proto, o.preset, o.input_shape, o.preprocess, o.preprocess_options,
                         o.task, o.labels, o.calib, o.assume_preprocess, ctx.say, o.decoder)
    ctx.say(f"{src_path.name}: input {facts.input_name} {facts.shape}; preset "
            f"{facts.preset.name if facts.preset else 'none'}; task {facts.task}; profile {ctx.prof.name} "
            f"(this host: {ctx.this_host}); budget {o.budget}")
    facts.notes.extend(frozen_notes)
    quantized = _already_quantized(ctx, src_path, proto, facts)
    pass_ctx = PassContext(input_shapes={facts.input_name: facts.shape}, work_dir=ctx.work)
    why = _needs_float32(ctx) if is_float16_model(proto) else None
    model, reference = proto, frozen_path  # the original the checks run: with its frozen inputs baked in
    if why:
        model, reference = _widen(ctx, src_path, proto, pass_ctx, why)
        facts = _float32_facts(facts)
        facts.notes.append(f"float16 model widened to float32 for {why}; {FLOAT16_IO_NOTE}")
    prepared_model, records = run_passes(model, default_passes(), pass_ctx)
    prepared = ctx.work / "prepared.onnx"
    onnx.save(prepared_model, str(prepared))
    ctx.say("graph prepared: " + "; ".join(f"{r.name}: {', '.join(r.changes)}" for r in records if r.changes))
    return Prepared(src_path, proto, facts, prepared, prepared_model, pass_ctx.records, o.name or facts.name,
                    reference, quantized)


def _freeze(ctx: Context, proto: Any) -> tuple[Any, Optional[Path], list[str]]:
    """The model with --freeze-input's values baked in, saved as the checks' original (None when
    nothing is frozen), and what was frozen, said."""
    if not ctx.opts.freeze_inputs:
        return proto, None, []
    import onnx

    from converters.freeze_inputs import freeze_inputs

    frozen, notes = freeze_inputs(proto, ctx.opts.freeze_inputs)
    path = ctx.work / "frozen_inputs.onnx"
    onnx.save(frozen, str(path))
    for note in notes:
        ctx.say(note)
    return frozen, path, notes


def _already_quantized(ctx: Context, src_path: Path, proto: Any, facts: Any) -> str:
    """A model that arrives quantized is built as given (fp32 route: its integer ops kept), said
    so; asking to quantize or cast it again is refused (it would be the same model under a new label)."""
    from converters.quantized_input import describe, quantized_ops

    found = describe(quantized_ops(proto))
    if not found:
        return ""
    asked = ctx.opts.precision
    if asked not in ("auto", "fp32"):
        raise ConversionError(
            f"{src_path.name} is already quantized ({found}); EdgeSDK does not quantize or cast it again to "
            f"{asked}: use --precision fp32 to take it as given (its quantized operators kept), or convert the "
            "float original")
    note = (f"{src_path.name} is already quantized ({found}): built only as given, on the fp32 route with its "
            "quantization kept (variants labelled fp32 run the quantized graph; the graph passes may still fold "
            "constant Q/DQ pairs); no INT8/fp16 variant is made from it (convert the float original for those)")
    ctx.say(note)
    facts.notes.append(note)
    return found


#: how a user keeps a float16 model's float16 inputs and outputs (stated wherever it is widened)
FLOAT16_IO_NOTE = ("the bundle takes and gives float32; to keep float16 I/O build only variants that take the "
                   "model as stored (--precision fp32, or fp16 with --backend openvino), or wrap the bundle's "
                   "model with converters.fp16_io.with_float16_io")
#: float variants whose converter refuses a model already stored in float16 (onnxconverter-common's
#: fp16 conversion raises "already converted to float16")
FLOAT32_ONLY = {("onnxruntime", "fp16")}


def _widen(ctx: Context, src_path: Path, proto: Any, pass_ctx: Any, why: str) -> tuple[Any, Path]:
    """The float16 model widened to float32 (a pass record in `pass_ctx`), saved as the accuracy
    check's reference."""
    import onnx

    from converters.fp16_io import Float16ToFloat32

    wide = Float16ToFloat32()(proto, pass_ctx)
    reference = ctx.work / "widened_float32.onnx"
    onnx.save(wide, str(reference))
    ctx.say(f"{src_path.name} is stored in float16; {why} take only float32 graphs, so it was widened to float32 "
            f"(weights keep their float16 values; the accuracy check compares with this float32 model); "
            f"{FLOAT16_IO_NOTE}")
    return wide, reference


def _needs_float32(ctx: Context) -> Optional[str]:
    """Which of this run's candidates need a float32 graph (INT8: NNCF and onnxruntime's quantizer;
    TFLite: onnx2tf; FLOAT32_ONLY), or None when all of them take the model as stored."""
    import runtimes
    from converters import tflite
    from runtimes.registry import record

    from ..errors import ConversionError
    from .candidates import candidates

    o = ctx.opts
    try:
        cands, _ = candidates(ctx.prof, o.precision, o.backends, ctx.measure, runtimes.available_backends(),
                              tflite.is_available())
    except ConversionError:  # nothing to build: the build stage says so in its own words
        return None
    needs = sorted({f"{c.backend} {c.precision}" for c in cands
                    if "int8" in c.precision or record(c.backend).needs == "onnx2tf"
                    or (c.backend, c.precision) in FLOAT32_ONLY})
    return ", ".join(needs) or None


def _float32_facts(facts: Any) -> Any:
    """The model facts of the widened model: float32 input, float32 preprocessing output."""
    import numpy as np

    return replace(facts, dtype=np.dtype(np.float32), preprocess=replace(facts.preprocess, dtype="float32"),
                   notes=list(facts.notes))
