"""Host probes: what each installed engine can run on here (named by `BackendRecord.devices`).

Each probe imports its engine lazily and returns ``[(device, human name), ...]``; the name is ""
where the engine has none to give. `registry.probe_devices` calls them and turns a missing or
broken engine into a note, so host detection never stops on one.
"""
from __future__ import annotations

import importlib


def onnxruntime_providers() -> list[tuple[str, str]]:
    """onnxruntime's execution providers here (CPUExecutionProvider, CUDAExecutionProvider, ...)."""
    ort = importlib.import_module("onnxruntime")
    return [(p, "") for p in ort.get_available_providers()]


def openvino_devices() -> list[tuple[str, str]]:
    """OpenVINO's devices here (CPU, GPU.0, NPU, ...) with their FULL_DEVICE_NAME."""
    ov = importlib.import_module("openvino")
    core = ov.Core()
    out = []
    for dev in core.available_devices:
        try:
            name = str(core.get_property(dev, "FULL_DEVICE_NAME"))
        except Exception:  # one odd device must not hide the others; it is listed without a name
            name = ""
        out.append((str(dev), name))
    return out
