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


def convert_tflite(src: Path, prof: Any, output: Path, opts: ConvertOptions, say: Callable[[str], None]) -> Any:
    """convert() for a .tflite file (see the module doc)."""
    import shutil
    import tempfile

    from converters.compare import Comparator

    from . import convert as conv
    from .calibration import load_calibration
    from .model_metadata import read_model_facts  # noqa: F401  (TFLite metadata is not read yet)
    from .preprocess_options import resolve_preprocess
    from .presets import get_preset, preset_for

    started = time.perf_counter()
    spec_in = _input_spec(src)
    pre = get_preset(opts.preset) if opts.preset else preset_for(src)
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
    labels = list(opts.labels) if isinstance(opts.labels, (list, tuple)) else (list(pre.labels) if pre else [])
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
                     "recipes) were not built; INT8 from a float .tflite needs the ONNX source")
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
