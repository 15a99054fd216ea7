"""ONNX Runtime backend."""
from __future__ import annotations

from concurrent.futures import Future
from typing import Sequence

import numpy as np

from .base import Runtime, warn_once
from .errors import BackendUnavailableError, InferenceError, ModelLoadError
from .load_errors import load_failure
from .spec import TensorSpec

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
    "tensor(uint16)": np.uint16, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
    "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,  # ORT takes object or str_ arrays; check_feeds accepts both
}

# Execution providers per device, best first.
PROVIDERS = {
    "CPU": ["CPUExecutionProvider"],
    "GPU": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider",
            "DmlExecutionProvider", "CoreMLExecutionProvider"],
    "NPU": ["QNNExecutionProvider", "OpenVINOExecutionProvider", "VitisAIExecutionProvider"],
}
FALLBACK = {"NPU": "GPU", "GPU": "CPU", "AUTO": "CPU"}


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:  # a base dependency, but a device may have stripped it
        raise BackendUnavailableError(
            "the onnxruntime backend needs the 'onnxruntime' package: pip install onnxruntime "
            "(or onnxruntime-gpu on CUDA devices)") from exc
    return ort


# Ops that mean integer (int8/uint8) compute: QDQ, QOperator and dynamic quantization.
_INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
             "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "MatMulIntegerToFloat",
             "DynamicQuantizeMatMul"}


def stored_precision(path) -> str:
    """What an ONNX model computes in: int8 (quantized ops), fp16 (float16 weights or
    inputs), fp32, or "native" when the onnx package is not here to look (device installs)."""
    try:
        import onnx
    except ImportError:
        return "native"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # ORT loaded it, so this is an exotic file; do not fail over a label
        return "native"
    graphs, ops, fp16 = [model.graph], set(), False
    while graphs:  # subgraphs (If/Loop bodies) too
        g = graphs.pop()
        for node in g.node:
            ops.add(node.op_type)
            graphs += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
        fp16 = fp16 or any(t.data_type == onnx.TensorProto.FLOAT16 for t in g.initializer) or any(
            v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 for v in g.input)
    if ops & _INT8_OPS:
        return "int8"
    return "fp16" if fp16 else "fp32"


def _dim(d: object) -> object:
    return d if isinstance(d, int) else None


class OnnxRuntime(Runtime):
    backend = "onnxruntime"
    suffixes = (".onnx", ".ort")
    extra = "onnxruntime"

    def _choose_providers(self, available: Sequence[str]) -> tuple[str, list[str]]:
        device = self.requested_device
        if device == "AUTO":
            order = PROVIDERS["GPU"] + PROVIDERS["NPU"] + PROVIDERS["CPU"]
            return "AUTO", [p for p in order if p in available]
        while True:
            found = [p for p in PROVIDERS[device] if p in available]
            if found:
                return device, found + (["CPUExecutionProvider"] if device != "CPU" else [])
            if self.strict:
                raise BackendUnavailableError(
                    f"onnxruntime has no execution provider for {self.requested_device} here "
                    f"(available: {', '.join(available)}); install the matching onnxruntime build "
                    "or pass device='CPU'")
            nxt = FALLBACK[device]
            warn_once(f"onnxruntime: no {device} execution provider (have {', '.join(available)}); "
                      f"falling back to {nxt}")
            device = nxt

    _sync_only = False  # set when ORT's intra-op pool turned out to have no worker thread

    def _activate_impl(self) -> None:
        ort = _import_ort()
        device, providers = self._choose_providers(ort.get_available_providers())
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        if self.performance_hint == "throughput":
            opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        opts.log_severity_level = 3
        for key, value in self.options.get("session_config", {}).items():
            opts.add_session_config_entry(key, str(value))
        try:
            self._session = ort.InferenceSession(str(self.model_path), sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise load_failure(
                "onnxruntime", self.model_path, str(exc),
                f"onnxruntime could not load {self.model_path}: {lines[0][:300]}. "
                "Is the file a complete ONNX model? (re-export or re-download it)", exc) from exc
        self.device = device
        self.providers = self._session.get_providers()
        self.precision = stored_precision(self.model_path)
        if self.requested_precision not in (None, "native", self.precision):
            warn_once(f"onnxruntime runs a model in the precision it is stored in ({self.precision}); convert "
                      f"the model (edgesdk convert --precision {self.requested_precision}) instead of asking the runtime")
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._run = self._session.run

    def _deactivate_impl(self) -> None:
        self._session = None
        self._run = None

    @property
    def session(self):
        """The engine's InferenceSession (for what this API does not cover)."""
        self.activate()
        return self._session

    @staticmethod
    def _spec(node) -> TensorSpec:
        dtype = _ORT_TYPES.get(node.type)
        if dtype is None:
            raise ModelLoadError(f"tensor {node.name!r} has type {node.type}, which EdgeSDK does not handle")
        return TensorSpec(node.name, tuple(_dim(d) for d in node.shape), dtype)

    def _input_specs_impl(self) -> Sequence[TensorSpec]:
        return [self._spec(n) for n in self._session.get_inputs()]

    def _output_specs_impl(self) -> Sequence[TensorSpec]:
        return [self._spec(n) for n in self._session.get_outputs()]

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self._run(self._output_names, feeds)
        except Exception as exc:
            raise InferenceError(f"onnxruntime failed on {self.model_path.name}: {exc}") from exc
        return dict(zip(self._output_names, values))

    def _submit_impl(self, feeds: dict[str, np.ndarray]) -> Future:
        # run_async runs on ORT's intra-op pool, which does not exist with one thread
        if self.threads == 1 or self._sync_only or not hasattr(self._session, "run_async"):
            return super()._submit_impl(feeds)
        future: Future = Future()
        names = self._output_names

        def done(values, _user_data, error: str, _feeds: dict = feeds) -> None:
            # `_feeds` keeps the inputs alive until ORT is done with them: onnxruntime < 1.24 (what
            # Python 3.10 gets) holds no reference, and a freed input turned results into garbage
            if error:
                future.set_exception(InferenceError(f"onnxruntime failed on {self.model_path.name}: {error}"))
            else:
                future.set_result(dict(zip(names, values)))

        future.set_running_or_notify_cancel()  # before run_async: `done` may run before it returns
        try:
            self._session.run_async(names, feeds, done, None)
        except Exception as exc:  # ORT's own error types
            # threads=None lets ORT size its pool; with one core, or cores it cannot count (cpuinfo
            # fails under qemu-user), the pool has no worker and run_async refuses: run in our thread
            if "thread pool" not in str(exc):
                raise InferenceError(f"onnxruntime failed on {self.model_path.name}: {exc}") from exc
            self._sync_only = True
            return super()._submit_impl(feeds)
        return future
