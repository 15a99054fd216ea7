"""ONNX precisions: fp16, INT8 dynamic, INT8 static (QDQ, per-channel) with onnxruntime.

All functions take a prepared model file (see `converters.passes`: static shapes, opset >= 13,
named nodes) and write a new file. Errors are ConversionErrors saying what to do.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from runtimes.errors import first_line

from .errors import ConversionError
from .samples import batches_of_one

#: nncf: NNCF's ONNX backend writes the QDQ model (its range estimators per tensor, fast bias
#: correction; on PP-OCRv4 det at 320 cosine 0.980 to fp32 where onnxruntime's minmax QDQ gave
#: 0.650 and percentile 0.913, measured in one run). The others are onnxruntime's quantizer:
#: minmax: global min/max over the samples; movavg: moving average of per-sample min/max (tighter
#: ranges, fewer outliers); entropy / percentile: histogram based (slower)
CALIBRATION_METHODS = ("nncf", "minmax", "movavg", "entropy", "percentile")
#: ops onnxruntime's QDQ quantizer quantizes that carry weights: the "layers" of the report
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def to_fp16(src: Path, dst: Path, keep_io_types: bool = True,
            op_block_list: Optional[Sequence[str]] = None) -> list[str]:
    """fp16 weights and compute; inputs/outputs stay fp32 unless `keep_io_types` is False.

    Returns notes for the report (which ops stayed fp32).
    """
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    blocked = list(float16.DEFAULT_OP_BLOCK_LIST) + list(op_block_list or ())
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # one warning per weight value outside fp16's range
            out = float16.convert_float_to_float16(model, keep_io_types=keep_io_types, op_block_list=blocked)
    except Exception as exc:  # onnxconverter-common raises plain exceptions on odd graphs
        raise ConversionError(f"fp16 conversion of {Path(src).name} failed: {first_line(exc)}") from exc
    truncated = sum("truncated" in str(w.message) for w in caught)
    onnx.save(out, str(dst))
    kept = sorted({n.op_type for n in model.graph.node if n.op_type in blocked})
    notes = ["inputs/outputs kept fp32" if keep_io_types else "inputs/outputs fp16"]
    if truncated:
        notes.append(f"{truncated} tiny weight values (|w| < 1e-7) rounded to +-1e-7, the smallest fp16 kept")
    if kept:
        notes.append(f"ops kept fp32 (not safe in fp16 for onnxruntime): {', '.join(kept)}")
    return notes


def quantize_dynamic(src: Path, dst: Path, per_channel: bool = True,
                     op_types: Sequence[str] = ("MatMul", "Gemm")) -> list[str]:
    """INT8 weights, activations quantized on the fly at run time (no calibration).

    Only MatMul/Gemm by default: onnxruntime's dynamic Conv (ConvInteger) is slower than fp32 on
    most CPUs, so a CNN mostly stays float; the report says how many layers changed.
    """
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as _qd

    import onnx

    model = onnx.load(str(src))
    targets = [n for n in model.graph.node if n.op_type in op_types]
    if not targets:
        raise ConversionError(
            f"dynamic INT8 quantizes {'/'.join(op_types)} layers and {Path(src).name} has none; use static "
            "INT8 with calibration data (--calib) instead")
    try:
        _qd(str(src), str(dst), per_channel=per_channel, weight_type=QuantType.QInt8,
            op_types_to_quantize=list(op_types))
    except Exception as exc:
        raise ConversionError(f"dynamic INT8 quantization failed: {first_line(exc)}") from exc
    return [f"{len(targets)} {'/'.join(op_types)} layers with int8 weights, activations quantized at run time"]


@contextlib.contextmanager
def _no_root_warnings():
    """onnxruntime.quantization logs advice on the root logger ("consider pre-processing"):
    our passes already did that, so keep it out of the user's console."""
    root = logging.getLogger()

    def quiet(record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Please consider") or (msg.startswith("Axis") and "out-of-range" in msg))

    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


class _Reader:
    """onnxruntime CalibrationDataReader over model-ready samples (one sample per batch; their
    shapes may differ, see converters.samples)."""

    def __init__(self, input_name: str, samples: np.ndarray) -> None:
        self._items = iter([{input_name: x} for x in batches_of_one(samples)])

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        return next(self._items, None)

    def rewind(self) -> None:  # some onnxruntime versions call it
        pass


@dataclass
class StaticQuantizer:
    """INT8 static QDQ quantization of one prepared model, re-runnable with other exclusions.

    Calibration runs once; the tensor ranges are cached (onnxruntime's calibration cache), so
    `quantize(dst, exclude=...)` for another set of float layers takes seconds, not minutes.
    Weights int8 per channel (symmetric), activations uint8 (asymmetric, per tensor): the
    combination onnxruntime recommends for x86 CPUs with VNNI.
    """

    src: Path
    input_name: str
    calib: np.ndarray
    method: str = "minmax"
    per_channel: bool = True
    percentile: float = 99.999
    #: "weighted": only Conv/ConvTranspose/MatMul/Gemm get int8 inputs (element-wise ops stay
    #: float: fewer quantize/dequantize steps, better accuracy); "all": onnxruntime's default
    scope: str = "weighted"
    work_dir: Optional[Path] = None
    #: the float model before data-aware weight rounding (converters.weight_rounding) when `src`
    #: is the rounded one: layers left float get their original weights back from it
    float_src: Optional[Path] = None
    _cache: Optional[Path] = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ConversionError(f"unknown calibration method {self.method!r}; choose one of "
                                  f"{', '.join(CALIBRATION_METHODS)}")
        if self.scope not in ("weighted", "all"):
            raise ConversionError(f"quantization scope must be 'weighted' or 'all', got {self.scope!r}")
        if self.calib is None or len(self.calib) == 0:
            raise ConversionError("static INT8 needs calibration samples (--calib DATA: an image folder, a "
                                  "video or a .npy); none were given")
        self._tmp = tempfile.TemporaryDirectory(prefix="edgesdk-quant-", dir=self.work_dir)
        self._cache = Path(self._tmp.name) / "ranges.json"

    def layers(self) -> list[str]:
        """Names of the nodes that carry weights (what `exclude` takes)."""
        import onnx

        return [n.name for n in onnx.load(str(self.src)).graph.node if n.op_type in WEIGHTED_OPS]

    def quantize(self, dst: Path, exclude: Iterable[str] = (), keep_activations: bool = False) -> Path:
        """Write the QDQ model with the layers in `exclude` left float.

        `keep_activations`: keep Relu/Clip nodes that the quantizer would otherwise fold into
        the quantization range; `revert_layers` needs them to make a layer exactly float again.
        """
        exclude = sorted(exclude)
        if self.method == "nncf":
            out = self._quantize_nncf(Path(dst), exclude)
        else:
            out = self._quantize_ort(Path(dst), exclude, keep_activations)
        if exclude and self.float_src is not None:
            import onnx

            tmp = out.with_name(out.name + ".part")
            onnx.save(revert_layers(onnx.load(str(out)), onnx.load(str(self.float_src)), exclude), str(tmp))
            tmp.replace(out)
        return out

    def _quantize_ort(self, dst: Path, exclude: Sequence[str], keep_activations: bool) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        method = {"minmax": CalibrationMethod.MinMax, "movavg": CalibrationMethod.MinMax,
                  "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[self.method]
        extra: dict[str, Any] = {"QDQKeepRemovableActivations": bool(keep_activations)}
        if self.method == "percentile":
            extra["CalibPercentile"] = self.percentile
        if self.method == "movavg":
            extra["CalibMovingAverage"] = True
        reader = None if self._cache.is_file() else _Reader(self.input_name, self.calib)
        try:
            with _no_root_warnings():
                quantize_static(str(self.src), str(dst), reader, quant_format=QuantFormat.QDQ,
                                per_channel=self.per_channel, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, calibrate_method=method,
                                nodes_to_exclude=sorted(exclude) or None, extra_options=extra,
                                op_types_to_quantize=list(WEIGHTED_OPS) if self.scope == "weighted" else None,
                                calibration_cache_path=str(self._cache))
        except Exception as exc:
            raise ConversionError(f"static INT8 quantization of {Path(self.src).name} failed: "
                                  f"{first_line(exc)}") from exc
        return Path(dst)

    def _quantize_nncf(self, dst: Path, exclude: Iterable[str]) -> Path:
        """QDQ ONNX from NNCF's ONNX backend; `exclude` and (scope "weighted") every op type
        without weights stay float, as in the OpenVINO path (converters.openvino_ir.quantize)."""
        import onnx

        from . import engine_telemetry
        from .openvino_ir import _quiet_nncf

        engine_telemetry.disable()
        import nncf

        _quiet_nncf()
        model = onnx.load(str(self.src))
        types = sorted({n.op_type for n in model.graph.node} - set(WEIGHTED_OPS)) if self.scope == "weighted" else []
        names = sorted(exclude)
        ignored = nncf.IgnoredScope(names=names, types=types, validate=False) if (names or types) else None
        data = nncf.Dataset(batches_of_one(self.calib), lambda x: {self.input_name: x})
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars: the converter shows its own
                quantized = nncf.quantize(model, data, subset_size=len(self.calib), fast_bias_correction=True,
                                          **({"ignored_scope": ignored} if ignored else {}))
        except Exception as exc:  # nncf raises many kinds (ValidationError, RuntimeError, ...)
            raise ConversionError(f"static INT8 (NNCF ONNX backend) of {Path(self.src).name} failed: "
                                  f"{first_line(exc)}") from exc
        tmp = dst.with_name(dst.name + ".part")
        onnx.save(quantized, str(tmp))
        tmp.replace(dst)
        return dst

    def close(self) -> None:
        self._tmp.cleanup()


def revert_layers(qdq_model: Any, float_model: Any, names: Iterable[str]) -> Any:
    """A copy of a QDQ model where the nodes `names` read float inputs again (weights included).

    Quick surgery for ranking layers by sensitivity: no re-quantization, same ranges
    elsewhere. Each input that comes through QuantizeLinear -> DequantizeLinear is wired to the
    float tensor before the pair; a dequantized weight/bias becomes the float initializer of the
    same-named node in `float_model` (or, failing that, the dequantized values), and so does a
    float initializer the quantizer changed (a bias after NNCF's bias correction). Dangling Q/DQ
    nodes are left (harmless); the final model comes from `StaticQuantizer.quantize(exclude=...)`.
    """
    import onnx
    from onnx import numpy_helper

    names = set(names)
    out = onnx.ModelProto()
    out.CopyFrom(qdq_model)
    producer = {o: n for n in out.graph.node for o in n.output}
    inits = {t.name: t for t in out.graph.initializer}
    float_nodes = {n.name: n for n in float_model.graph.node}
    float_inits = {t.name: t for t in float_model.graph.initializer}
    added: set[str] = set()

    def add_init(name: str, array: np.ndarray) -> str:
        alias = f"{name}__float"
        if alias not in added:
            out.graph.initializer.append(numpy_helper.from_array(np.asarray(array), alias))
            added.add(alias)
        return alias

    for node in out.graph.node:
        if node.name not in names:
            continue
        ref = float_nodes.get(node.name)
        for i, name in enumerate(list(node.input)):
            dq = producer.get(name)
            ref_name = ref.input[i] if ref is not None and i < len(ref.input) else None
            if name in inits and ref_name in float_inits:
                # a float input the quantizer rewrote (NNCF's bias correction tunes the bias for
                # int8 weights): the float layer takes its original value back
                node.input[i] = add_init(ref_name, numpy_helper.to_array(float_inits[ref_name]))
                continue
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            src = dq.input[0]
            if src in inits:  # a quantized weight or bias
                if ref_name in float_inits:
                    node.input[i] = add_init(ref_name, numpy_helper.to_array(float_inits[ref_name]))
                else:
                    node.input[i] = add_init(src, _dequantize(dq, inits))
                continue
            q = producer.get(src)
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
    return out


def _dequantize(dq: Any, inits: dict[str, Any]) -> np.ndarray:
    from onnx import numpy_helper

    q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
    zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float32) if len(dq.input) > 2 and dq.input[2] else 0.0
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if np.ndim(scale) == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero = np.reshape(zero, shape) if np.ndim(zero) == 1 else zero
    return (q - zero) * scale


def quantized_layers(qdq_model: Any) -> list[str]:
    """Weighted nodes of a QDQ model whose inputs come from DequantizeLinear (i.e. run in int8)."""
    producers = {o: n.op_type for n in qdq_model.graph.node for o in n.output}
    out = []
    for n in qdq_model.graph.node:
        if n.op_type in WEIGHTED_OPS and n.input and producers.get(n.input[0]) == "DequantizeLinear":
            out.append(n.name)
    return out
