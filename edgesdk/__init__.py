"""EdgeSDK: take a trained model to a camera-fed edge device and keep it running there.

The names below are imported lazily so that `import edgesdk` on a device pulls in
neither build-time tools nor engines it does not use.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Bundle": "edgesdk.bundle:Bundle",
    "Manifest": "edgesdk.bundle:Manifest",
    "load_bundle": "edgesdk.bundle:Bundle.load",
    "PreprocessSpec": "edgesdk.preprocess:PreprocessSpec",
    "Preprocessor": "edgesdk.preprocess:Preprocessor",
    "EdgeSDKError": "edgesdk.errors:EdgeSDKError",
    "load_profile": "edgesdk.profiles:load_profile",
    "DeviceProfile": "edgesdk.profiles:DeviceProfile",
    "Result": "edgesdk.results:Result",
    "Frame": "edgesdk.results:Frame",
    "convert": "edgesdk.convert:convert",
    "run": "edgesdk.streaming.pipeline:run",
    "Pipeline": "edgesdk.streaming.pipeline:Pipeline",
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'edgesdk' has no attribute {name!r}")
    module, attr = target.split(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
