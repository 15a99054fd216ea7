"""TFLite (LiteRT) INT8 with chosen layers kept float, for the accuracy guard.

onnx2tf's own INT8 output quantizes every layer. Here the TF SavedModel onnx2tf writes
(`tflite.onnx_to_tflite(..., saved_model_dir=...)`) is calibrated ONCE on our calibration
data (TFLiteConverter with `_experimental_calibrate_only`, what
`tf.lite.experimental.QuantizationDebugger` does), and each trial is only TensorFlow's MLIR
quantization pass over that calibrated model (`mlir_quantize(..., denylisted_nodes=...)`,
the call behind the debugger's `get_nondebug_quantized_model`): about a second, so the guard
can rank every layer and bisect like on the other backends.

Layers are named by the TFLite op's output tensor in the calibrated model (onnx2tf's Keras
names such as ``model_1/tf.nn.relu6_1/Relu6;...;model_1/tf.compat.v1.nn.depthwise_conv2d/
depthwise``; they do not carry the ONNX node names).

Weight rounding (converters.weight_rounding) reaches TFLite: the SavedModel made from the
rounded ONNX model holds weights on TFLite's own per-channel grid (max|w| / 127), and `ready`
reports how many weighted ops quantize back to exactly those values. A layer kept float must
not keep the rounded weights (they ARE the int8 error): when the SavedModel of the unrounded
model is given too (`float_saved_model`, same graph), the kept-float layers get its weights.

TensorFlow runs in one child process for the whole guard (its threads and memory stay out of
the caller); requests and answers are JSON lines; a crash is a ConversionError with the log's tail.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .errors import ConversionError

_MARK = "@@edgesdk "

_WORKER = r'''
import json, os, sys, time
import numpy as np
cfg = json.load(open(sys.argv[1]))
calib = np.load(cfg["calib_nhwc"])

def say(kind, **kw):
    print("@@edgesdk " + json.dumps(dict(kind=kind, **kw)), flush=True)

say("progress", text="importing TensorFlow")
import tensorflow as tf
from tensorflow.lite.python import convert as tfconvert
from tensorflow.lite.tools import flatbuffer_utils as fbu

def calibrate(saved_model):
    # the converter settings onnx2tf's integer_quant uses, calibration only (as QuantizationDebugger does)
    conv = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.SELECT_TF_OPS]
    conv.representative_dataset = lambda: ([calib[k:k + 1]] for k in range(len(calib)))
    conv.experimental_mlir_quantizer = True
    conv._experimental_calibrate_only = True
    return conv.convert()

def out_names(model):
    g = model.subgraphs[0]
    return [g.tensors[op.outputs[0]].name.decode() for op in g.operators]

def shape_of(g, t):
    # scalars and unknown shapes have no shape vector in the flatbuffer
    return list(g.tensors[t].shape) if g.tensors[t].shape is not None else []

def weight_inputs(model, op):
    g = model.subgraphs[0]
    out = []
    for t in list(op.inputs if op.inputs is not None else [])[1:]:
        data = model.buffers[g.tensors[t].buffer].data if t >= 0 else None
        if data is not None and len(data) > 0:
            out.append(t)
    return out

t0 = time.time()
say("progress", text=f"calibrating on {len(calib)} samples")
calibrated = calibrate(cfg["saved_model"])
base = fbu.convert_bytearray_to_object(calibrated)
names = out_names(base)
donor, aligned, why = None, False, "no unrounded SavedModel given"
if cfg.get("float_saved_model"):
    say("progress", text="calibrating the unrounded model (float weights for the layers kept float)")
    donor = fbu.convert_bytearray_to_object(calibrate(cfg["float_saved_model"]))
    a, b = base.subgraphs[0], donor.subgraphs[0]
    code = lambda m, op: m.operatorCodes[op.opcodeIndex].builtinCode
    aligned = len(a.operators) == len(b.operators) and all(
        code(base, x) == code(donor, y) and [shape_of(a, t) for t in weight_inputs(base, x)]
        == [shape_of(b, t) for t in weight_inputs(donor, y)] for x, y in zip(a.operators, b.operators))
    why = "" if aligned else "the unrounded and rounded TF graphs differ"

def patched(excluded):
    if not excluded or not aligned:
        return calibrated
    m = fbu.convert_bytearray_to_object(calibrated)
    g, dg = m.subgraphs[0], donor.subgraphs[0]
    for i, op in enumerate(g.operators):
        if names[i] in excluded:
            for t in weight_inputs(m, op):
                m.buffers[g.tensors[t].buffer].data = donor.buffers[dg.tensors[t].buffer].data
    return bytes(fbu.convert_object_to_bytearray(m))

def named(content):
    # the SavedModel's signature calls the outputs output_0..output_N (in the ONNX model's order);
    # the float .tflite onnx2tf writes calls them by their ONNX names: so must this one
    want = cfg.get("output_names") or []
    m = fbu.convert_bytearray_to_object(content)
    renamed = 0
    for sig in m.signatureDefs or []:
        for t in sig.outputs or []:
            name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
            k = name[len("output_"):]
            if name.startswith("output_") and k.isdigit() and int(k) < len(want):
                t.name = want[int(k)].encode()
                renamed += 1
    return bytes(fbu.convert_object_to_bytearray(m)) if renamed else content

def quantize(excluded):
    return named(tfconvert.mlir_quantize(patched(set(excluded)), denylisted_nodes=list(excluded) or None))

def int8_ops(content):
    m = fbu.convert_bytearray_to_object(content)
    g = m.subgraphs[0]
    return [g.tensors[op.outputs[0]].name.decode() for op in g.operators
            if g.tensors[op.outputs[0]].type == 9 and fbu.opcode_to_name(m, op.opcodeIndex) not in ("QUANTIZE", "DEQUANTIZE")]

def rounding_reached(content):
    # output channels whose int8 weights dequantize to the calibrated float weights (no second
    # rounding); TFLite widens the step of channels whose bias would leave its int32 range
    q = fbu.convert_bytearray_to_object(content)
    g, bg = q.subgraphs[0], base.subgraphs[0]
    float_w = {names[i]: weight_inputs(base, op) for i, op in enumerate(bg.operators)}
    exact = total = 0
    for op in g.operators:
        name = g.tensors[op.outputs[0]].name.decode()
        if name not in float_w or not float_w[name] or op.inputs is None or len(op.inputs) < 2:
            continue
        t = g.tensors[op.inputs[1]]
        if t.type != 9 or t.quantization is None or t.quantization.scale is None:
            continue
        w8 = np.frombuffer(bytes(q.buffers[t.buffer].data), np.int8).astype(np.float32)
        wf = np.frombuffer(bytes(base.buffers[bg.tensors[float_w[name][0]].buffer].data), np.float32)
        if w8.size != wf.size:
            continue
        scale = np.asarray(t.quantization.scale, np.float32)
        axis = int(t.quantization.quantizedDimension or 0)
        shape = list(t.shape)
        s = scale.reshape([-1 if k == axis else 1 for k in range(len(shape))]) if scale.size > 1 else scale
        err = np.abs(w8.reshape(shape) * s - wf.reshape(shape)) / np.maximum(s, 1e-30)
        per_channel = np.moveaxis(err, axis, 0).reshape(shape[axis], -1).max(1) if scale.size > 1 else err.max()[None]
        exact += int((per_channel <= 0.01).sum())
        total += per_channel.size
    return exact, total

plain = quantize([])
def calibrated_name(name, known):
    # a model output's op is renamed in the quantized model ("PartitionedCall:0" -> "...:01"): its
    # DEQUANTIZE takes the output name
    return name if name in known else name[:-1] if name[:-1] in known else None

known = set(names)
layers = [c for c in (calibrated_name(n, known) for n in int8_ops(plain)) if c is not None]
exact, total = rounding_reached(plain)
say("ready", layers=layers, aligned=aligned, why=why, exact=exact, weighted=total, seconds=round(time.time() - t0, 1))
for line in sys.stdin:
    req = json.loads(line)
    if req.get("quit"):
        break
    try:
        content = quantize(req["exclude"])
        tmp = req["out"] + ".tmp"
        with open(tmp, "wb") as f:
            f.write(content)
        os.replace(tmp, req["out"])
        say("done", out=req["out"], int8_ops=len(int8_ops(content)))
    except Exception as e:  # reported to the caller as one line
        say("error", text=f"{type(e).__name__}: {e}"[:400])
'''


class TFLiteInt8Quantizer:
    """Calibrates a SavedModel once in a child process, then writes INT8 .tflite files with any
    set of layers kept float. Use as a context manager (or call `close`). `output_names`: the ONNX
    model's outputs in order, given to the written models' signature outputs (the SavedModel calls
    them output_0, output_1, ...), so each output is found by the name it has in the other variants."""

    def __init__(self, saved_model: Path, calib_nchw: np.ndarray, work: Path, *,
                 float_saved_model: Optional[Path] = None, output_names: Sequence[str] = (), timeout: float = 900.0,
                 progress: Callable[[str], None] = lambda msg: None) -> None:
        calib = np.asarray(calib_nchw, np.float32)
        if calib.ndim != 4 or len(calib) < 1:
            raise ConversionError(f"TFLite INT8 calibration takes (N, C, H, W) samples, got {list(calib.shape)}")
        if not (Path(saved_model) / "saved_model.pb").is_file():
            raise ConversionError(f"no TF SavedModel in {saved_model} (onnx_to_tflite(..., saved_model_dir=...))")
        self._say, self._timeout = progress, timeout
        # absolute: the worker runs with it as its working directory and is handed paths inside it
        self._dir = Path(tempfile.mkdtemp(prefix=".tflite-int8-", dir=work)).resolve()
        np.save(self._dir / "calib_nhwc.npy", np.ascontiguousarray(calib.transpose(0, 2, 3, 1)))
        cfg = {"saved_model": str(Path(saved_model).resolve()), "calib_nhwc": str(self._dir / "calib_nhwc.npy"),
               "float_saved_model": str(Path(float_saved_model).resolve()) if float_saved_model else None,
               "output_names": list(output_names)}
        (self._dir / "cfg.json").write_text(json.dumps(cfg))
        self._log_path = self._dir / "worker.log"
        self._log = open(self._log_path, "w")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1", PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(self._dir / "cfg.json")], cwd=self._dir,
                                      env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                      text=True)
        self.calibration_samples = len(calib)
        try:
            ready = self._answer("ready")
        except BaseException:
            self.close()
            raise
        #: quantized layers (TFLite op output names), in graph order
        self.layers: list[str] = list(ready["layers"])
        #: whether kept-float layers get the unrounded weights (False: `float_note` says why)
        self.float_weights_restored: bool = bool(ready["aligned"])
        self.float_note: str = ready["why"]
        #: (output channels whose int8 weights are exactly the rounded float weights, channels)
        self.rounding_exact: tuple[int, int] = (int(ready["exact"]), int(ready["weighted"]))
        self.seconds: float = float(ready["seconds"])

    def _answer(self, kind: str) -> dict[str, Any]:
        """The next message of `kind` from the worker (killed after `timeout` s); progress lines are passed on."""
        import threading

        watchdog = threading.Timer(self._timeout, self._proc.kill)
        watchdog.daemon = True
        watchdog.start()
        try:
            return self._read(kind)
        finally:
            watchdog.cancel()

    def _read(self, kind: str) -> dict[str, Any]:
        start = time.monotonic()
        assert self._proc.stdout is not None
        while True:
            line = self._proc.stdout.readline()
            if not line:
                self._proc.wait(timeout=30)
                raise ConversionError(f"the TFLite INT8 quantizer process ended (exit code {self._proc.returncode}; "
                                      f"killed after {self._timeout:.0f} s if negative): {self._tail()}")
            if not line.startswith(_MARK):
                continue
            msg = json.loads(line[len(_MARK):])
            if msg["kind"] == "progress":
                self._say(f"litert int8: {msg['text']} ({time.monotonic() - start:.0f} s)")
                continue
            if msg["kind"] == "error":
                raise ConversionError(f"TFLite INT8 quantization failed: {msg['text']}")
            if msg["kind"] == kind:
                return msg

    def _tail(self) -> str:
        from .tflite import log_reason

        self._log.flush()
        return log_reason(self._log_path.read_text(errors="replace"))

    def quantize(self, out: Path, float_layers: Sequence[str] = ()) -> Path:
        """Write the INT8 model with `float_layers` (names from `layers`) kept float to `out`."""
        unknown = [n for n in float_layers if n not in set(self.layers)]
        if unknown:
            raise ConversionError(f"not quantized layers of this TFLite model: {', '.join(unknown[:3])}")
        if self._proc.poll() is not None:
            raise ConversionError(f"the TFLite INT8 quantizer process is gone: {self._tail()}")
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"exclude": list(float_layers), "out": str(out)}) + "\n")
        self._proc.stdin.flush()
        self._answer("done")
        return Path(out)

    def close(self) -> None:
        import shutil

        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "TFLiteInt8Quantizer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def op_input_types(path: Path) -> dict[str, list[str]]:
    """TFLite op output name -> dtype names of its inputs and output, read with the LiteRT
    interpreter (to show a layer kept float really runs float)."""
    from runtimes.litert import import_interpreter

    interpreter_cls, _, _ = import_interpreter()
    it = interpreter_cls(model_path=str(path))
    out = {}
    for op in it._get_ops_details():  # no public per-op API in LiteRT's interpreter
        if not len(op["outputs"]):
            continue
        name = it._get_tensor_details(op["outputs"][0], 0)["name"]
        out[name] = [np.dtype(it._get_tensor_details(t, 0)["dtype"]).name for t in list(op["inputs"])[:1]
                     if t >= 0] + [np.dtype(it._get_tensor_details(op["outputs"][0], 0)["dtype"]).name]
    return out
