"""OpenVINO IR: fp32, fp16 (compressed weights), INT8 with NNCF.

The IR comes from `ov.convert_model` (not `Core.read_model`): the converter runs OpenVINO's
front-end transformations (HSwish and similar fusions, shape sub-graph folding). NNCF on an
un-fused graph puts quantizers inside hard-swish patterns, and on the PP-OCRv4 detector that
cost ~0.1 cosine similarity.

bf16 is not a file format but a RUNTIME precision: the fp32 IR compiled with
INFERENCE_PRECISION_HINT=bf16 (AMX / AVX-512 BF16 CPUs). The converter offers it as a variant
of its own (same file, different manifest `runtime.precision`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from runtimes.openvino import OV_TRACE_LINES, ov_error_line  # noqa: F401  (OV_TRACE_LINES: tests import it here)

from . import engine_telemetry
from .errors import ConversionError
from .samples import batches_of_one

#: ops whose inputs NNCF quantizes and that the guard may keep float ("layers")
LAYER_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
               "MatMul", "Add", "Multiply", "Subtract", "Divide", "Interpolate", "ReduceMean", "Concat",
               "MaxPool", "AvgPool", "HSwish", "HSigmoid", "HardSigmoid")


def _ov():
    engine_telemetry.disable()
    try:
        import openvino as ov
    except ImportError as exc:
        raise ConversionError("OpenVINO conversion needs the 'openvino' package: pip install 'edgesdk[convert]'") from exc
    return ov


def read_onnx(onnx_path: Path, display_name: Optional[str] = None) -> Any:
    """ONNX -> ov.Model with OpenVINO's converter (fusions applied); unsupported ops raise clearly."""
    import re

    ov = _ov()
    name = display_name or Path(onnx_path).name
    # ov.convert_model sets the ROOT logger to ERROR (ovc's init_logger), which would silence
    # every warning the application logs afterwards: put the level back.
    root_level = logging.root.level
    try:
        return ov.convert_model(str(onnx_path))
    except Exception as exc:  # OpConversionFailure etc. carry C++ traces
        text = str(exc)
        missing = re.search(r"No conversion rule found for operations:\s*([^\n]+)", text)
        if missing:
            raise ConversionError(
                f"OpenVINO cannot convert {name}: it has no conversion rule for operator(s) {missing.group(1).strip()}; "
                "pick a profile/backend that runs them (onnxruntime), or replace those operators before converting"
            ) from exc
        raise ConversionError(f"OpenVINO IR conversion of {name} failed: {ov_error_line(exc)}") from exc
    finally:
        logging.root.setLevel(root_level)


def save_ir(model: Any, xml_path: Path, compress_to_fp16: bool = False) -> Path:
    """Save the IR; the .xml loses its indentation (about 15% of its size; XML does not care)."""
    import re

    ov = _ov()
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml_path), compress_to_fp16=compress_to_fp16)
    text = xml_path.read_text()
    xml_path.write_text(re.sub(r">\s+<", "><", text))
    return xml_path


def to_ir(onnx_path: Path, xml_path: Path, precision: str = "fp32") -> Path:
    """fp32 IR, or fp16 IR (weights stored fp16; the CPU computes in f32/bf16 per the hint)."""
    if precision not in ("fp32", "fp16"):
        raise ConversionError(f"OpenVINO IR files are fp32 or fp16 (bf16 is a runtime hint), got {precision!r}")
    return save_ir(read_onnx(onnx_path), xml_path, compress_to_fp16=(precision == "fp16"))


def _dataset(samples: np.ndarray):
    engine_telemetry.disable()
    import nncf

    return nncf.Dataset(batches_of_one(samples))  # shapes may differ per sample (dynamic dims)


def _quiet_nncf() -> None:
    # NNCF logs every ignored node at INFO; the converter shows its own progress
    logging.getLogger("nncf").setLevel(logging.WARNING)


#: op types left float in the "weighted" scope: only layers with weights get int8 inputs
ELEMENTWISE_TYPES = ("Add", "Multiply", "Subtract", "Divide", "Interpolate", "Concat", "ReduceMean", "HSwish",
                     "HSigmoid", "HardSigmoid", "MaxPool", "AvgPool", "Sigmoid", "Swish", "Clamp")


def quantize(model: Any, calib: np.ndarray, *, preset: str = "performance", fast_bias_correction: bool = True,
             ignored: Sequence[str] = (), subset_size: Optional[int] = None, scope: str = "weighted") -> Any:
    """INT8 post-training quantization with `nncf.quantize` on real calibration samples.

    scope "weighted" quantizes only the inputs of layers with weights (convolutions, MatMul):
    on the PP-OCRv4 detector it kept cosine 0.989 to fp32 against 0.984 for NNCF's default
    ("all", which also quantizes element-wise ops), at the same speed.
    """
    engine_telemetry.disable()
    import nncf

    _quiet_nncf()
    if calib is None or len(calib) == 0:
        raise ConversionError("OpenVINO INT8 needs calibration samples (--calib DATA); none were given")
    kw: dict[str, Any] = {"subset_size": int(subset_size or len(calib)),
                          "fast_bias_correction": fast_bias_correction}
    if preset == "mixed":
        kw["preset"] = nncf.QuantizationPreset.MIXED
    if scope not in ("weighted", "all"):
        raise ConversionError(f"quantization scope must be 'weighted' or 'all', got {scope!r}")
    types = list(ELEMENTWISE_TYPES) if scope == "weighted" else []
    if ignored or types:
        kw["ignored_scope"] = nncf.IgnoredScope(names=list(ignored), types=types, validate=False)
    try:
        return nncf.quantize(model, _dataset(calib), **kw)
    except Exception as exc:  # nncf raises many kinds (ValidationError, RuntimeError, ...)
        raise ConversionError(f"NNCF INT8 quantization failed: {ov_error_line(exc)}") from exc


def quantize_with_accuracy_control(model: Any, calib: np.ndarray, held_out: np.ndarray,
                                   validate: Callable[[Any, Iterable[Any]], float], max_drop: float, *,
                                   max_steps: int = 8, ranking_samples: int = 8,
                                   fast_bias_correction: bool = True) -> Any:
    """`nncf.quantize_with_accuracy_control`: NNCF ranks quantizers and reverts the worst ones.

    `validate(compiled_model, data) -> metric` (higher is better, 1.0 = identical to fp32).
    Thorough but slow (every ranking step compiles and runs the model once per quantizer group);
    the converter's own guard (`converters.sensitivity`) is the default.
    """
    engine_telemetry.disable()
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    _quiet_nncf()
    params = AdvancedAccuracyRestorerParameters(max_num_iterations=max_steps,
                                                ranking_subset_size=min(ranking_samples, len(held_out)))

    def fn(compiled: Any, data: Iterable[Any]) -> float:
        return float(validate(compiled, data))

    try:
        return nncf.quantize_with_accuracy_control(
            model, _dataset(calib), _dataset(held_out), fn, max_drop=max_drop, subset_size=len(calib),
            fast_bias_correction=fast_bias_correction, advanced_accuracy_restorer_parameters=params)
    except Exception as exc:
        raise ConversionError(f"NNCF accuracy-controlled quantization failed: {ov_error_line(exc)}") from exc


def quantized_layers(model: Any) -> list[str]:
    """Friendly names of ops that read at least one FakeQuantize output (they run in int8)."""
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("FakeQuantize", "Constant", "Parameter", "Result", "Convert"):
            continue
        if any(i.get_source_output().get_node().get_type_name() == "FakeQuantize" for i in op.inputs()):
            out.append(op.get_friendly_name())
    return out


def align_names(float_model: Any, like: Any) -> tuple[Any, int]:
    """A copy of `float_model` whose ops carry the friendly names of `like`'s, op by op.

    The INT8 source (weights rounded in ONNX) and the float model are the same graph read from
    two files, but OpenVINO names ops its ONNX frontend creates with a process-wide counter
    (`Multiply_19882`), so the names differ between the two reads and `revert_layers` could not
    find the original weights of those layers (it left their rounded weights: on the PP-OCRv4
    detector, every layer float still gave box-F1 drop 0.029). Returns (copy, ops renamed);
    (copy, 0) when the two graphs differ in op count or types (then nothing can be matched)."""
    out = float_model.clone()
    ours, theirs = out.get_ordered_ops(), like.get_ordered_ops()
    if len(ours) != len(theirs) or any(a.get_type_name() != b.get_type_name() for a, b in zip(ours, theirs)):
        return out, 0
    renamed = 0
    for a, b in zip(ours, theirs):
        if a.get_friendly_name() != b.get_friendly_name():
            a.set_friendly_name(b.get_friendly_name())
            renamed += 1
    return out, renamed


def revert_layers(model: Any, names: Iterable[str], float_model: Any = None) -> Any:
    """A copy of a quantized ov.Model where the ops `names` run float again.

    Their inputs are taken from before each FakeQuantize; with `float_model` (the model before
    quantization) their int8-compressed weights are replaced by the original float constants.
    Bypassed FakeQuantize nodes with no consumers left drop out of the graph, so the result is
    a clean mixed-precision model (those ops run f32, or bf16 under a bf16 hint).
    """
    import openvino as ov

    names = set(names)
    out = model.clone()
    originals = {op.get_friendly_name(): op for op in float_model.get_ordered_ops()} if float_model is not None else {}
    for op in out.get_ordered_ops():
        name = op.get_friendly_name()
        if name not in names:
            continue
        ref = originals.get(name)
        for port in op.inputs():
            src = port.get_source_output().get_node()
            if src.get_type_name() == "FakeQuantize":
                port.replace_source_output(src.input_value(0))
                continue
            if ref is None or port.get_index() >= ref.get_input_size():
                continue
            ref_src = ref.input_value(port.get_index()).get_node()
            if ref_src.get_type_name() == "Constant" and src.get_type_name() in ("Multiply", "Convert", "Subtract"):
                port.replace_source_output(ov.op.Constant(ref_src.get_data().copy()).output(0))
        _restore_bias(op, originals)
    return out


def _restore_bias(op: Any, originals: dict[str, Any]) -> None:
    """NNCF's bias correction rewrites the constant of the Add that follows a quantized layer,
    to offset the int8 weights' error: a layer made float again needs its original bias back,
    or it runs float weights with a bias tuned for int8 ones (the bug that left a model with
    every layer reverted 9 points off fp32)."""
    import openvino as ov

    for out in op.outputs():
        for target in out.get_target_inputs():
            add = target.get_node()
            ref = originals.get(add.get_friendly_name())
            if add.get_type_name() != "Add" or ref is None or ref.get_type_name() != "Add":
                continue
            for i in range(add.get_input_size()):
                src = add.input_value(i).get_node()
                ref_src = ref.input_value(i).get_node()
                if src.get_type_name() == "Constant" and ref_src.get_type_name() == "Constant":
                    add.input(i).replace_source_output(ov.op.Constant(ref_src.get_data().copy()).output(0))
