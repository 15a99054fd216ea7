"""Model -> model transforms: graph preparation passes, quantization, format conversion,
pruning and factorization, and the accuracy guard.

Imports `runtimes` (to validate and measure) but nothing of `edgesdk`. Heavy engines (onnx,
onnxruntime.quantization, openvino, nncf, onnx2tf) are imported inside functions.
"""
from .errors import ConversionError

__all__ = ["ConversionError"]
