"""TensorRT targets (Jetson): an engine build recipe and an INT8 calibration cache.

TensorRT engines are built on the device (they are specific to the GPU and TensorRT version),
so the converter ships the ONNX model plus:
- `build_engine.sh`: the `trtexec` commands for the chosen precision (--fp16, --int8 with the
  calibration cache, DLA flags when the profile names a DLA core);
- `calibration.cache`: per-tensor INT8 scales in TensorRT's text cache format, computed here
  from the real calibration samples (max |value| of every float tensor over the samples,
  scale = amax / 127, written as the big-endian hex of the float32 bits).

Nothing here runs TensorRT: the report says so. The cache follows the format TensorRT's
calibrators write (first line "TRT-<version>-EntropyCalibration2", then "tensor: hex"); the
version in the header should match the device's TensorRT (JetPack 6.1+: 10.3).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .errors import ConversionError

DEFAULT_TRT_VERSION = "10.3.0"


def trt_version_code(version: str) -> int:
    """'10.3.0' -> 100300, '8.6.1' -> 8601 (how TensorRT numbers itself in cache headers)."""
    parts = [int(p) for p in str(version).split(".")[:3] if p.strip().isdigit()]
    while len(parts) < 3:
        parts.append(0)
    major, minor, patch = parts
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def tensor_ranges(onnx_path: Path, samples: np.ndarray, input_name: str) -> dict[str, float]:
    """Max |value| of the graph input and every float node output over `samples` (onnxruntime)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    model = onnx.shape_inference.infer_shapes(model)
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    typed = {v.name: v.type.tensor_type.elem_type for v in
             list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
    existing = {o.name for o in model.graph.output}
    names = []
    for node in model.graph.node:
        for out in node.output:
            if out and typed.get(out, onnx.TensorProto.FLOAT) in float_types:
                names.append(out)
                if out not in existing:
                    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(out))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types
        raise ConversionError(f"could not run {Path(onnx_path).name} to compute TensorRT calibration ranges: {exc}") from exc
    out_names = [o.name for o in sess.get_outputs()]
    amax: dict[str, float] = {input_name: float(np.abs(samples).max())}
    for i in range(len(samples)):
        values = sess.run(out_names, {input_name: samples[i:i + 1]})
        for name, value in zip(out_names, values):
            if value.dtype.kind == "f" and value.size:
                amax[name] = max(amax.get(name, 0.0), float(np.abs(value).max()))
    return amax


def write_calibration_cache(path: Path, amax: dict[str, float], trt_version: str = DEFAULT_TRT_VERSION) -> Path:
    """TensorRT's text calibration cache: header line, then `name: hex(float32 scale)` lines."""
    lines = [f"TRT-{trt_version_code(trt_version)}-EntropyCalibration2"]
    for name, value in amax.items():
        scale = max(float(value), 1e-8) / 127.0
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def read_calibration_cache(path: Path) -> dict[str, float]:
    """Parse a cache back to name -> scale (for tests and for checking a device's cache)."""
    lines = Path(path).read_text().splitlines()
    if not lines or not lines[0].startswith("TRT-"):
        raise ConversionError(f"{path} is not a TensorRT calibration cache (first line should be TRT-...)")
    out = {}
    for line in lines[1:]:
        name, _, hexval = line.rpartition(": ")
        out[name] = struct.unpack(">f", bytes.fromhex(hexval.strip()))[0]
    return out


@dataclass
class TensorRTRecipe:
    precision: str
    model: str
    commands: list[str]
    calibration_cache: Optional[str] = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def recipe(model_file: str, precision: str, *, input_name: str, input_shape: list[int],
           calibration_cache: Optional[str] = None, dla_core: Optional[int] = None,
           trt_version: str = DEFAULT_TRT_VERSION) -> TensorRTRecipe:
    """trtexec commands that build the engine on the device."""
    if precision not in ("fp32", "fp16", "int8"):
        raise ConversionError(f"TensorRT engines are fp32, fp16 or int8, not {precision!r}")
    if precision == "int8" and not calibration_cache:
        raise ConversionError("a TensorRT INT8 engine needs calibration data (--calib) for its calibration cache")
    engine = f"model_{precision}.engine"
    shape = "x".join(str(d) for d in input_shape)
    cmd = ["trtexec", f"--onnx={model_file}", f"--saveEngine={engine}", f"--shapes={input_name}:{shape}"]
    if precision == "fp16":
        cmd.append("--fp16")
    if precision == "int8":
        # fp16 as the fallback for layers TensorRT keeps out of int8
        cmd += ["--int8", "--fp16", f"--calib={calibration_cache}"]
    if dla_core is not None:
        cmd += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    notes = [f"build on the device with its TensorRT ({trt_version} expected); engines are not portable",
             "check the engine with: trtexec --loadEngine=" + engine]
    if precision == "int8":
        notes.append("TensorRT 10 deprecates implicit (calibration-cache) INT8; it still builds. If it refuses "
                     "the cache (version header), regenerate it on the device from the same images")
    return TensorRTRecipe(precision, model_file, [" ".join(cmd)], calibration_cache, notes)


#: the recipe stops with a reason (exit 3) where TensorRT is absent, instead of "command not found"
NEED_TRTEXEC = ('command -v trtexec >/dev/null 2>&1 || { echo "build_engine.sh: trtexec (TensorRT) is not on PATH; '
                'run this on the Jetson (JetPack puts it in /usr/src/tensorrt/bin) or a machine with an NVIDIA GPU '
                'and TensorRT" >&2; exit 3; }\n')


def write_recipe(folder: Path, rec: TensorRTRecipe) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "build_engine.sh"
    script.write_text("#!/bin/sh\n# Build the TensorRT engine on the Jetson (run from the bundle directory).\nset -e\n"
                      + NEED_TRTEXEC + "\n".join(rec.commands) + "\n")
    script.chmod(0o755)
    readme = folder / "README.md"
    readme.write_text("# TensorRT engine build\n\n" + "\n".join(f"    {c}" for c in rec.commands) + "\n\n"
                      + "\n".join(f"- {n}" for n in rec.notes) + "\n")
    return [script, readme]
