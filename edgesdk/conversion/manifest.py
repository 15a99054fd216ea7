"""The bundle manifest of the chosen variant: the specs of the file it ships (read back with an
engine that runs it), its preprocessing in that file's layout and dtype, runtime hints, metrics
and provenance."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from runtimes.registry import record

from ..bundle import Manifest
from ..errors import EdgeSDKError
from ..preprocess import PreprocessSpec


def build_manifest(v: Any, src: Path, prof: Any, spec: Optional[PreprocessSpec], pre: Any, task: str,
                   labels: Optional[Sequence[str]], shape: list[int], input_name: str, dtype: np.dtype,
                   report: dict[str, Any], name: Optional[str], decoder: dict[str, Any]) -> Manifest:
    inputs, outputs = _shipped_specs(v, shape, input_name, dtype)
    # the layout of the file the bundle ships: its own input spec when it is clear (an NHWC ONNX
    # model stays NHWC), else the variant's (onnx2tf writes NHWC)
    shipped = inputs[0].layout if len(inputs) == 1 and inputs[0].layout in ("NCHW", "NHWC") else None
    layout = shipped or record(v.backend).file_layout or None
    if spec is not None and layout and layout != spec.layout:
        spec = replace(spec, layout=layout)
    if spec is not None and v.input_dtype and v.input_dtype != spec.dtype:
        spec = replace(spec, dtype=v.input_dtype, quantization=v.input_quantization)
    precision = v.precision if v.precision in ("fp32", "fp16", "bf16", "int8", "mixed") else "fp32"
    return Manifest(
        name=name or (pre.name if pre else src.stem), model=v.model, backend=v.backend, precision=precision,
        inputs=list(inputs), outputs=list(outputs or []), task=task, preprocess=spec,
        decoder=dict(decoder), labels=list(labels or []),
        profile=prof.name, runtime=_runtime(v, prof, report),
        provenance={"source_file": src.name, "source_sha256": report["model"]["sha256"],
                    "made_by": "edgesdk.convert", "variant": v.key, "variant_name": v.name,
                    "passes": [p["name"] for p in report["passes"]], "decision": report["decision"],
                    "calibration": report.get("calibration"), "verified": v.verified, "not_verified": v.not_verified,
                    "preprocess_sources": report["preprocess"],
                    **({"frozen_inputs": report["model"]["frozen_inputs"]} if report["model"].get("frozen_inputs")
                       else {}),
                    **({"preset": pre.name} if pre is not None else {})},
        metrics=_metrics(v, report))


def _shipped_specs(v: Any, shape: list[int], input_name: str, dtype: np.dtype) -> tuple[list[Any], list[Any]]:
    """The specs of the file the bundle ships, read here with an engine that runs it."""
    import runtimes
    from runtimes import TensorSpec

    local = record(v.backend).checked_with or v.backend
    try:
        with runtimes.load(v.files[v.model], backend=local) as rt:
            return list(rt.inputs), list(rt.outputs)
    except EdgeSDKError:
        return [TensorSpec(input_name, tuple(shape), dtype)], []


def _runtime(v: Any, prof: Any, report: dict[str, Any]) -> dict[str, Any]:
    runtime: dict[str, Any] = {"device": v.device}
    # what to ask the runtime for: OpenVINO's hint (bf16 runs an fp32 IR in bf16); engines that
    # run the file as stored (onnxruntime, litert) are only pinned for fp32 files
    if v.runtime_precision:
        runtime["precision"] = v.runtime_precision
    elif v.precision == "fp32":
        runtime["precision"] = "fp32"
    if report.get("mode", "").startswith("measured here"):
        runtime["threads"] = int(report["threads"])  # what the choice was measured with, on this machine
    elif getattr(prof, "threads", None):
        runtime["threads"] = int(prof.threads)
    return runtime


def _metrics(v: Any, report: dict[str, Any]) -> dict[str, Any]:
    metrics: dict[str, Any] = {"size_bytes": v.size_bytes}
    if report.get("over_budget"):
        metrics["over_budget"] = True  # written by --keep-best: no variant met the accuracy budget
    if v.comparison is not None:
        metrics["accuracy"] = v.comparison.to_dict()
    if v.latency is not None:
        metrics["latency_here"] = v.latency
    chosen = report["chosen"]
    if "speedup" in chosen:
        metrics["speedup_vs_onnxruntime_fp32"] = chosen["speedup"]
    if "size_ratio" in chosen:
        metrics["size_ratio_vs_onnxruntime_fp32"] = chosen["size_ratio"]
    return metrics


def jsonable(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
