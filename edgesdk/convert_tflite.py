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
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .bundle import sha256_file, write_bundle
from .convert_options import ConvertOptions
from .errors import ConversionError


def _input_spec(src: Path) -> Any:
    import runtimes

    with runtimes.load(src, backend="litert") as rt:
        if len(rt.inputs) != 1:
            raise ConversionError(f"{src.name} has {len(rt.inputs)} inputs; edgesdk convert takes single-input models")
        return rt.inputs[0]


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
        custom = tflite_custom_ops(src)
        # the frontend's message often names no op; a custom op (MediaPipe's) is what it lacks then
        why = (f": unsupported op {', '.join(ops)}" if ops else
               f": custom op {', '.join(custom)} is not in OpenVINO's TFLite frontend" if custom else "")
        v.error = (f"OpenVINO cannot read {src.name}{why}; the litert route (the .tflite as given) runs it"
                   + f" ({str(exc).splitlines()[0][:160]})")
        return v
    v.model, v.files = xml.name, {xml.name: xml, xml.with_suffix(".bin").name: xml.with_suffix(".bin")}
    v.check_with = ("openvino", xml)
    v.runtime_precision = "fp32" if precision == "fp32" else None
    return v


def build_tflite_variants(src: Path, opts: ConvertOptions, comparator: Any, work: Path,
                          say: Callable[[str], None]) -> list[Any]:
    from converters.variants import Variant

    spec = _input_spec(src)
    asis = Variant("litert-asis", "litert (the .tflite as given)", "litert",
                   "int8" if spec.dtype.kind in "iu" else "fp32", model=src.name, files={src.name: src},
                   layout="NHWC", check_with=("litert", src))
    wanted = [p for p in ("fp32", "fp16") if opts.precision in ("auto", p)]
    variants = [asis] + [_openvino_variant(src, p, work) for p in wanted]
    for v in variants:
        if v.ok and comparator is not None:
            backend, path = v.check_with
            v.comparison = comparator.compare(path, backend=backend)
            v.checked = True
        say(f"  {v.name}: {v.error or (v.comparison.summary() if v.comparison else 'built')}")
    return variants


def _labels(labels: Any, pre: Any) -> list[str]:
    """--labels (a list, or a file with one class name per line), else the preset's."""
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        if not path.is_file():
            raise ConversionError(f"--labels {labels}: no such file (expected one class name per line)")
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if labels is not None:
        return [str(v) for v in labels]
    return list(pre.labels) if pre is not None else []


def _say_facts(src: Path, spec_in: Any, pre: Any, task: str, resolved: Any, say: Callable[[str], None],
               notes: list[str]) -> None:
    """What the bundle will assume about its input, said before the work (and kept in the report)."""
    say(f"{src.name}: input {spec_in.name} {list(spec_in.shape)}; preset {pre.name if pre else 'none'}; task {task}")
    if pre is None and resolved.assumed:
        from .convert import _short

        assumed = ", ".join(f"{k}={_short(getattr(resolved.spec, k))}" for k in resolved.assumed)
        note = (f"no preset: preprocessing ASSUMED, not stated: {assumed} (state --normalize/--mean/--std/--color/"
                "--resize/--pad-value to change it)")
        say(note)
        notes.append(note)


def convert_tflite(src: Path, prof: Any, output: Path, opts: ConvertOptions, say: Callable[[str], None]) -> Any:
    """convert() for a .tflite file (see the module doc)."""
    import shutil
    import tempfile

    from converters.compare import Comparator

    from . import convert as conv
    from .calibration import load_calibration
    from .model_metadata import read_model_facts  # noqa: F401  (TFLite metadata is not read yet)
    from .preprocess_options import resolve_preprocess
    from .presets import lookup_preset

    started = time.perf_counter()
    spec_in = _input_spec(src)
    pre = lookup_preset(opts.preset, src)
    resolved = resolve_preprocess(opts.preprocess_options, preset=pre.preprocess if pre else None,
                                  preset_name=pre.name if pre else "", input_shape=list(spec_in.shape),
                                  input_name=spec_in.name, dtype=spec_in.dtype.name)
    shape = [int(d or 1) for d in spec_in.shape]
    notes: list[str] = []
    conv._check_stated(pre, opts.preprocess, resolved, opts.calib, opts.assume_preprocess, opts.preprocess_options,
                       say, notes)
    spec = conv._bundle_spec(opts.preprocess or resolved.spec, shape)
    task = opts.task or (pre.task if pre else "raw")
    decoder = dict(pre.decoder) if pre is not None and pre.task == task else dict(conv.TASK_DECODERS.get(task, {}))
    labels = _labels(opts.labels, pre)
    _say_facts(src, spec_in, pre, task, resolved, say, notes)
    work = Path(tempfile.mkdtemp(prefix=".edgesdk-convert-", dir=output.parent if output.parent.exists() else None))
    try:
        comparator, cal_info = None, None
        if opts.calib is not None:
            data = load_calibration(opts.calib, spec, opts.calib_size, input_shape=shape, input_dtype=spec_in.dtype)
            fit, held = data.split(opts.holdout)
            comparator = Comparator(src, held.samples, task=task, reference_backend="litert")
            cal_info = {"source": data.source, "kind": data.kind, "calibration": len(fit), "held_out": len(held),
                        "held_out_source": "every 4th sample, never calibrated on", "shape": shape,
                        "dtype": spec_in.dtype.name}
        variants = build_tflite_variants(src, opts, comparator, work, say)
        order = [b.backend for b in prof.backends]
        good = [v for v in variants if v.ok and v.within(opts.budget) is not False]
        if not good:
            raise ConversionError("no variant of " + src.name + " is within the budget: "
                                  + "; ".join(f"{v.name}: {v.error or v.comparison.summary()}" for v in variants))
        chosen = min(good, key=lambda v: order.index(v.backend) if v.backend in order else len(order))
        decision = "first in the profile's preference order within the accuracy budget"
        notes.append("input is TFLite: ONNX-only routes (graph passes, onnxruntime INT8, TensorRT, Edge TPU "
                     "recipes) were not built; INT8 from a float .tflite needs the ONNX source (tf2onnx "
                     "--tflite makes one; convert that .onnx)"
                     + (f"; custom op {', '.join(custom)} may block that route too (tf2onnx converts builtin "
                        "ops; 1.17 rejects MediaPipe's Convolution2DTransposeBias)"
                        if (custom := tflite_custom_ops(src)) else ""))
        report = {"model": {"file": src.name, "sha256": sha256_file(src),
                            "input": {"name": spec_in.name, "shape": shape, "dtype": spec_in.dtype.name}},
                  "profile": {"name": prof.name, "is_this_host": "not measured"}, "mode": "profile preference order",
                  "budget": opts.budget, "accuracy_measure": "1 - mean cosine similarity to the original .tflite",
                  "passes": [], "calibration": cal_info, "variants": [v.to_dict(opts.budget) for v in variants],
                  "chosen": chosen.to_dict(opts.budget), "decision": decision, "notes": notes, "threads": 1,
                  "preprocess": resolved.to_dict(), "options": opts.to_dict(), "seconds": 0.0}
        manifest = conv._manifest(chosen, src, prof, spec, pre, task, labels, shape, spec_in.name,
                                  np.dtype(spec_in.dtype), report, opts.name or (pre.name if pre else src.stem),
                                  decoder)
        report["seconds"] = round(time.perf_counter() - started, 1)

        def write_reports(stage: Path) -> None:
            import json

            (stage / "report.json").write_text(json.dumps(report, indent=2, default=conv._jsonable))
            (stage / "report.md").write_text(conv._markdown(report, False))

        bundle = write_bundle(output, dict(chosen.files), manifest, overwrite=opts.force, extra_writer=write_reports)
        say(f"bundle written: {output} ({chosen.name}; {decision})")
        return conv.ConvertResult(bundle, chosen, variants, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
