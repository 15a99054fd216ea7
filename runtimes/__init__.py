"""Engine adapters: one `Runtime` API over onnxruntime, OpenVINO and LiteRT.

This package imports nothing else of EdgeSDK; engines are imported lazily.
"""
from .base import Runtime
from .errors import (BackendUnavailableError, EdgeSDKError, InferenceError, InputMismatchError,
                     ModelLoadError, OptionError)
from .registry import available_backends, backend_class, backend_for, load
from .spec import TensorSpec

__all__ = [
    "Runtime", "TensorSpec", "load", "available_backends", "backend_class", "backend_for",
    "EdgeSDKError", "ModelLoadError", "BackendUnavailableError", "InputMismatchError", "InferenceError",
    "OptionError",
]
