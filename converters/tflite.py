"""ONNX -> TFLite (LiteRT) with onnx2tf, offline, in a subprocess.

onnx2tf is an optional build-host extra (`make tflite`, ~1.7 GB with TensorFlow). What this
module does around it, and why:

* dynamic input dims are made static from the calibration data's shape (onnx2tf needs it;
  some real models carry -1 or symbolic dims);
* every node gets a valid unique name and tensor names lose characters like '@' (TF 2.21
  crashes on them);
* onnx2tf downloads a sample image set from the internet for its own output checks and for
  INT8 calibration. We replace `download_test_image_data` in both `onnx2tf.onnx2tf` and
  `onnx2tf.utils.common_functions` with a function returning OUR calibration images (NHWC,
  scaled to [0, 1]), and pass the calibration data explicitly through
  `custom_input_op_name_np_data_path`, so nothing is ever fetched;
* onnx2tf runs in a child process: TensorFlow's memory and threads stay out of the caller,
  and a crash is contained and reported as a ConversionError with the log's tail;
* the TFLite model's input is NHWC: the result says so, and the caller must transpose NCHW
  data (`x.transpose(0, 2, 3, 1)`). onnx2tf may give 4-D outputs either layout (the PP-OCR
  detector's [1, 1, H, W] map comes out as it went in): `output_shapes` tells which.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from .errors import ConversionError

PRECISIONS = ("fp32", "fp16", "int8")
INSTALL_HINT = ("the ONNX -> TFLite converter (onnx2tf + TensorFlow) is not installed; run `make tflite` "
                "(tools/install_tflite_converter.sh .venv/bin/python), about 1.7 GB")
# onnx2tf output file suffix per variant
_VARIANT_FILES = {
    "float32": "_float32.tflite",
    "float16": "_float16.tflite",
    "dynamic_range_quant": "_dynamic_range_quant.tflite",
    "integer_quant": "_integer_quant.tflite",                       # int8 inside, float32 in/out
    "full_integer_quant": "_full_integer_quant.tflite",             # int8 in/out too (Edge TPU, MCUs)
    "integer_quant_with_int16_act": "_integer_quant_with_int16_act.tflite",
}
_MAIN_VARIANT = {"fp32": "float32", "fp16": "float16", "int8": "integer_quant"}


@dataclass
class TFLiteResult:
    path: Path                                  # the model for the asked precision
    precision: str
    layout: str = "NHWC"                        # input layout of the TFLite model
    input_name: str = ""
    input_shape: list[int] = field(default_factory=list)          # NHWC
    output_shapes: dict[str, list[int]] = field(default_factory=dict)
    variants: dict[str, Path] = field(default_factory=dict)       # every file onnx2tf made, by kind
    seconds: float = 0.0
    log_path: Optional[Path] = None
    changes: list[str] = field(default_factory=list)              # what was changed in the ONNX first
    saved_model: Optional[Path] = None          # onnx2tf's TF SavedModel, when asked to keep it



def log_reason(log: str, limit: int = 300) -> str:
    """The line of a child process's log that says what went wrong, for a one-line error: the
    last exception or ERROR line (colour codes removed), else the last line."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", log).splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^(\w+\.)*\w*(Error|Exception)\b|^ERROR\b", ln)]
    return (errors or lines or ["(empty log)"])[-1][:limit]


def is_available() -> bool:
    return importlib.util.find_spec("onnx2tf") is not None and importlib.util.find_spec("tensorflow") is not None


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", name)


def _prepare_onnx(onnx_path: Path, calib: np.ndarray) -> tuple[object, str, list[str]]:
    """Static input shape from `calib`, valid node and tensor names. Returns (model, input name, changes)."""
    import onnx

    from .graphedit import name_nodes

    try:
        model = onnx.load(str(onnx_path))
    except Exception as e:  # protobuf raises several types for a bad file
        raise ConversionError(f"cannot read ONNX model {onnx_path}: {e}") from e
    changes: list[str] = []
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ConversionError(f"TFLite conversion takes single-input models; {onnx_path.name} has {len(inputs)} inputs")
    inp = inputs[0]
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != calib.ndim:
        raise ConversionError(f"calibration data has rank {calib.ndim} but input {inp.name!r} has rank {len(dims)}")
    static = [1] + list(calib.shape[1:])
    for i, (d, v) in enumerate(zip(dims, static)):
        if d.HasField("dim_value") and d.dim_value > 0:
            if i > 0 and d.dim_value != v:
                raise ConversionError(
                    f"calibration data shape {list(calib.shape)} does not fit input {inp.name!r} "
                    f"(axis {i} is {d.dim_value}, data has {v}); preprocess the data as the model expects (NCHW)")
            continue
        was = d.dim_param or "?"
        d.Clear()
        d.dim_value = int(v)
        changes.append(f"input {inp.name} axis {i}: {was} -> {v}")
    # outputs: drop symbolic dims so onnx2tf re-infers them from the now static input
    for out in model.graph.output:
        for d in out.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.Clear()
    del model.graph.value_info[:]
    renamed = name_nodes(model)
    if renamed:
        changes.append(f"{renamed} nodes (re)named")
    # tensor names with characters TF rejects; the graph input/output names are kept if valid
    mapping = {}
    keep = {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    for node in model.graph.node:
        for o in node.output:
            if o and o not in keep and _sanitize(o) != o:
                mapping[o] = _sanitize(o)
    taken = {o for n in model.graph.node for o in n.output} | inits | keep
    for old, new in list(mapping.items()):
        base, k = new, 1
        while new in taken:
            new, k = f"{base}_{k}", k + 1
        taken.add(new)
        mapping[old] = new
    if mapping:
        for node in model.graph.node:
            for i, x in enumerate(node.input):
                if x in mapping:
                    node.input[i] = mapping[x]
            for i, x in enumerate(node.output):
                if x in mapping:
                    node.output[i] = mapping[x]
        changes.append(f"{len(mapping)} tensor names sanitized")
    if _sanitize(inp.name) != inp.name:
        raise ConversionError(f"input name {inp.name!r} has characters TensorFlow rejects; rename the input")
    return model, inp.name, changes


_WORKER = r'''
import json, sys
import numpy as np
cfg = json.load(open(sys.argv[1]))
images = np.load(cfg["images_nhwc"])

def _our_images():
    # replaces onnx2tf's download of sample images: our own real calibration images, NHWC, [0, 1]
    return images

import onnx2tf.onnx2tf as _o2t
import onnx2tf.utils.common_functions as _cf
_o2t.download_test_image_data = _our_images
_cf.download_test_image_data = _our_images
print("[edgesdk] onnx2tf start", flush=True)
_o2t.convert(
    input_onnx_file_path=cfg["onnx"],
    output_folder_path=cfg["out"],
    copy_onnx_input_output_names_to_tflite=True,
    output_integer_quantized_tflite=cfg["int8"],
    custom_input_op_name_np_data_path=[[cfg["input_name"], cfg["calib_nhwc"], 0.0, 1.0]],
    not_use_onnxsim=cfg["no_onnxsim"],
    # a SavedModel with a serving signature: what converters.tflite_int8 calibrates and quantizes
    output_signaturedefs=cfg["signatures"],
    disable_model_save=False,
    verbosity="info",
)
print("[edgesdk] onnx2tf done", flush=True)
'''


def _stream(proc: subprocess.Popen, log, progress: Optional[Callable[[str], None]], start: float) -> None:
    last_report = 0.0
    for raw in proc.stdout:  # type: ignore[union-attr]
        line = raw.decode("utf-8", "replace")
        log.write(line)
        if progress is None:
            continue
        text = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
        now = time.monotonic()
        if text and (now - last_report > 3.0 or "[edgesdk]" in text or "complete" in text.lower()):
            progress(f"[tflite] {now - start:5.0f}s {text[:110]}")
            last_report = now


def _default_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def onnx_to_tflite(onnx_path: Union[str, os.PathLike], out_dir: Union[str, os.PathLike], precision: str,
                   calib_nchw: np.ndarray, *, timeout: float = 1800.0, use_onnxsim: bool = True,
                   progress: Optional[Callable[[str], None]] = _default_progress,
                   saved_model_dir: Optional[Union[str, os.PathLike]] = None) -> TFLiteResult:
    """Convert an ONNX model to TFLite with onnx2tf, offline.

    Args:
        onnx_path: the ONNX model (single input, NCHW for images).
        out_dir: where the .tflite file(s) go (created). Nothing is left there on failure.
        precision: "fp32", "fp16" or "int8" (int8: int8 weights and activations, float32 in/out;
            `variants["full_integer_quant"]` has int8 in/out for Edge TPU-like targets).
        calib_nchw: real preprocessed inputs, float32 (N, C, H, W), N >= 1 — the TFLite input
            shape is taken from it (batch 1) and INT8 is calibrated on it. Never random noise.
        timeout: seconds before the converter process is killed.
        progress: callable for progress lines (stderr by default; None for silence).
        saved_model_dir: keep onnx2tf's TF SavedModel (with its serving signature) in this
            folder (replaced if it exists): converters.tflite_int8 quantizes from it with layers
            kept float.

    Returns TFLiteResult; the model's input is NHWC (`layout`).
    """
    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir)
    if precision not in PRECISIONS:
        raise ConversionError(f"unknown TFLite precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if not is_available():
        raise ConversionError(INSTALL_HINT)
    if not onnx_path.is_file():
        raise ConversionError(f"ONNX model not found: {onnx_path}")
    calib = np.asarray(calib_nchw)
    if calib.ndim != 4 or calib.shape[0] < 1 or calib.dtype.kind != "f":
        raise ConversionError(f"calib_nchw must be float (N, C, H, W) real preprocessed images with N >= 1, "
                              f"got {calib.dtype} {list(calib.shape)}")
    if not np.all(np.isfinite(calib)):
        raise ConversionError("calibration data contains NaN or infinite values")
    calib = np.ascontiguousarray(calib, dtype=np.float32)
    model, input_name, changes = _prepare_onnx(onnx_path, calib)

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _sanitize(onnx_path.stem)
    # absolute: the worker runs with it as its working directory and is handed paths inside it
    work = Path(tempfile.mkdtemp(prefix=".tflite-", dir=out_dir)).resolve()
    start = time.monotonic()
    try:
        import onnx

        src = work / f"{stem}.onnx"
        onnx.save(model, str(src))
        nhwc = calib.transpose(0, 2, 3, 1).copy()
        np.save(work / "calib_nhwc.npy", nhwc)
        lo, hi = float(nhwc.min()), float(nhwc.max())
        np.save(work / "images_nhwc.npy", ((nhwc - lo) / (hi - lo) if hi > lo else np.zeros_like(nhwc)).astype(np.float32))
        cfg = {"onnx": str(src), "out": str(work / "out"), "int8": precision == "int8", "input_name": input_name,
               "calib_nhwc": str(work / "calib_nhwc.npy"), "images_nhwc": str(work / "images_nhwc.npy"),
               "no_onnxsim": not use_onnxsim, "signatures": saved_model_dir is not None}
        (work / "cfg.json").write_text(json.dumps(cfg))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1", PYTHONUNBUFFERED="1")
        log_path = work / "onnx2tf.log"
        if progress:
            progress(f"[tflite] converting {onnx_path.name} -> TFLite {precision} with onnx2tf (subprocess)")
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(work / "cfg.json")], cwd=work, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            reader = threading.Thread(target=_stream, args=(proc, log, progress, start), daemon=True)
            reader.start()
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise ConversionError(f"onnx2tf did not finish within {timeout:.0f} s converting {onnx_path.name}")
            reader.join(timeout=10)
        produced = {k: work / "out" / f"{stem}{suffix}" for k, suffix in _VARIANT_FILES.items()}
        produced = {k: p for k, p in produced.items() if p.is_file()}
        main = _MAIN_VARIANT[precision]
        if rc != 0 or main not in produced:
            why = f"exit code {rc}" if rc != 0 else f"no {main} model was written"
            raise ConversionError(f"onnx2tf failed to convert {onnx_path.name} to TFLite {precision} ({why}): "
                                  f"{log_reason(log_path.read_text(errors='replace'))}")
        # move results into out_dir atomically, one file at a time
        variants: dict[str, Path] = {}
        wanted = [main] if precision != "int8" else [k for k in produced if k not in ("float32", "float16")]
        for kind in wanted:
            dest = out_dir / (f"{stem}_{precision}.tflite" if kind == main else f"{stem}_{kind}.tflite")
            os.replace(produced[kind], dest)
            variants[kind] = dest
        kept_log = out_dir / f"{stem}_{precision}_onnx2tf.log"
        os.replace(log_path, kept_log)
        saved = _keep_saved_model(work / "out", Path(saved_model_dir)) if saved_model_dir is not None else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - start
    result = TFLiteResult(path=variants[main], precision=precision, input_name=input_name, variants=variants,
                          seconds=seconds, log_path=kept_log, changes=changes, saved_model=saved)
    _describe(result)
    if progress:
        progress(f"[tflite] wrote {result.path} in {seconds:.0f} s (input {result.input_shape}, NHWC)")
    return result


def _keep_saved_model(folder: Path, dest: Path) -> Path:
    """Move onnx2tf's SavedModel (saved_model.pb, variables/, assets/, fingerprint.pb) to `dest`."""
    if not (folder / "saved_model.pb").is_file():
        raise ConversionError(f"onnx2tf wrote no SavedModel in {folder} (needed for TFLite INT8 with layers kept float)")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("saved_model.pb", "variables", "assets", "fingerprint.pb"):
        if (folder / name).exists():
            os.replace(folder / name, tmp / name)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def _describe(result: TFLiteResult) -> None:
    """Fill input/output shapes from the written model (LiteRT interpreter, if installed)."""
    interp_cls = None
    for mod in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            interp_cls = importlib.import_module(mod).Interpreter
            break
        except ImportError:
            continue
    if interp_cls is None:
        return
    it = interp_cls(model_path=str(result.path))
    ins = it.get_input_details()
    if ins:
        result.input_shape = [int(d) for d in ins[0]["shape"]]
        result.input_name = str(ins[0]["name"]) or result.input_name
    result.output_shapes = {str(o["name"]): [int(d) for d in o["shape"]] for o in it.get_output_details()}
