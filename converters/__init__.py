"""Model -> model transforms: graph preparation passes, quantization, format conversion,
pruning and factorization, and the accuracy guard.

Modules (engines are imported inside functions, never here):
  passes        graph preparation passes (static shapes, opset, names, folding, shape inference)
  onnx_quant    ONNX fp16, INT8 dynamic, INT8 static QDQ per-channel (onnxruntime)
  openvino_ir   OpenVINO IR fp32/fp16, INT8 with NNCF (bf16 is a runtime hint, see variants)
  tflite        ONNX -> TFLite with onnx2tf (optional extra)
  tensorrt      trtexec recipe and INT8 calibration cache for Jetson targets
  edgetpu       full-integer TFLite + edgetpu_compiler step for Coral
  compare       Comparator: the accuracy guard's measure, through the runtime interface only
  sensitivity   keep the most quantization-sensitive layers float until the budget holds
  variants      build/check/time one (backend, precision) candidate
  pruning, lowrank, flops, torch_export   structured pruning, low-rank factorization, cost, PyTorch export

Imports `runtimes` (to validate and measure) but nothing of `edgesdk`.
"""
from .blas_threads import limit_blas_threads
from .errors import ConversionError
from .torch_threads import passive_omp_wait

limit_blas_threads()
passive_omp_wait()

__all__ = ["ConversionError"]
