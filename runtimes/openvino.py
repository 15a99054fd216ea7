"""OpenVINO backend: runs OpenVINO IR (.xml + .bin) and ONNX files.

Precision is pinned on purpose: on CPUs with AVX-512 BF16/AMX the CPU plugin otherwise runs
an fp32 model in bf16 without saying so. ``precision=None``/``"fp32"`` sets
INFERENCE_PRECISION_HINT=f32; ``"bf16"``/``"fp16"`` ask for those, and after compiling
``self.precision`` is read back from the compiled model (a CPU without fp16 compute runs bf16
when asked for fp16, and says so).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .base import Runtime, log, warn_once
from .errors import BackendUnavailableError, InferenceError, ModelLoadError, first_line
from .load_errors import load_failure
from .spec import TensorSpec

INSTALL_HINT = "pip install 'edgesdk[openvino]'"
# Our device names -> the next one to try when a device is missing.
FALLBACK = {"NPU": "GPU", "GPU": "CPU"}
# Our precision names -> INFERENCE_PRECISION_HINT values, and back.
HINTS = {None: "f32", "native": "f32", "fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
FROM_OV = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
# Ops that mean the model carries its own int8 quantization (NNCF IR, or ONNX QDQ).
QUANT_OPS = {"FakeQuantize", "QuantizeLinear", "DequantizeLinear"}


def _import_ov() -> Any:
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the openvino backend needs the 'openvino' package: {INSTALL_HINT}") from exc
    return ov


#: OpenVINO's messages are multi-line C++ traces: these lines say where, the others what went wrong
OV_TRACE_LINES = ("Exception from", "Caught exception: Exception from", "Check '")


def ov_error_line(exc: BaseException) -> str:
    """An OpenVINO exception in one line for a message: its first line that is not a trace line."""
    return first_line(exc, skip=OV_TRACE_LINES)


class OpenVINORuntime(Runtime):
    """OpenVINO on CPU/GPU/NPU/AUTO.

    Extra options: ``num_requests`` (size of the async request pool; default the compiled
    model's OPTIMAL_NUMBER_OF_INFER_REQUESTS, at least 2), ``config`` (more compile properties,
    passed as they are), ``cache_dir`` (OpenVINO's model cache).
    """

    backend = "openvino"
    suffixes = (".xml", ".onnx")
    extra = "edgesdk[openvino]"

    # ----------------------------------------------------------------- device and config
    @staticmethod
    def _available_devices(core: Any) -> list[str]:
        """OpenVINO's device names here, e.g. ['CPU', 'GPU.0', 'NPU'] (a seam for tests)."""
        return list(core.available_devices)

    def _choose_device(self, available: Sequence[str]) -> str:
        device = self.requested_device
        if device == "AUTO":
            return "AUTO"  # OpenVINO's AUTO plugin picks among the devices present
        while True:
            if any(d == device or d.startswith(device + ".") for d in available):
                return device
            if self.strict or device not in FALLBACK:
                raise BackendUnavailableError(
                    f"openvino has no {device} device here (available: {', '.join(available) or 'none'}); "
                    "install the device's driver/plugin or pass device='CPU' (or strict=False to fall back)")
            nxt = FALLBACK[device]
            warn_once(f"openvino: no {device} device (have {', '.join(available)}); falling back to {nxt}")
            device = nxt

    def _config(self, core: Any, device: str) -> dict[str, Any]:
        if self.requested_precision not in HINTS:
            raise ValueError(f"precision {self.requested_precision!r} is not one of fp32, fp16, bf16, int8")
        config: dict[str, Any] = {"PERFORMANCE_HINT": self.performance_hint.upper()}
        supported: Optional[set] = None
        if device != "AUTO":  # AUTO forwards these to the device it picks
            try:
                supported = set(core.get_property(device, "SUPPORTED_PROPERTIES"))
            except RuntimeError:
                supported = None
        if supported is None or "INFERENCE_PRECISION_HINT" in supported:
            config["INFERENCE_PRECISION_HINT"] = HINTS[self.requested_precision]
        elif self.requested_precision not in (None, "native"):
            warn_once(f"openvino: the {device} device takes no precision hint; it runs its own precision")
        if self.threads and (supported is None or "INFERENCE_NUM_THREADS" in supported):
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        config.update(self.options.get("config", {}))
        return config

    # ----------------------------------------------------------------- lifecycle
    def _read_model(self, core: Any) -> Any:
        path = self.model_path
        if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
            raise ModelLoadError(
                f"{path.name} is an OpenVINO IR but its weights file {path.with_suffix('.bin').name} "
                "is missing next to it; keep the .xml and .bin together")
        try:
            return core.read_model(str(path))
        except Exception as exc:  # openvino raises RuntimeError/GeneralFailure with C++ traces
            raise load_failure(
                "openvino", path, str(exc),
                f"openvino could not read {path.name}: {ov_error_line(exc)}. Is it a complete OpenVINO IR "
                "(.xml with matching .bin) or ONNX model? Re-export or re-download it", exc) from exc

    def _activate_impl(self) -> None:
        ov = _import_ov()
        core = ov.Core()
        if self.options.get("cache_dir"):
            core.set_property({"CACHE_DIR": str(self.options["cache_dir"])})
        device = self._choose_device(self._available_devices(core))
        config = self._config(core, device)
        model = self._read_model(core)
        quantized = any(op.get_type_name() in QUANT_OPS for op in model.get_ops())
        if self.requested_precision == "int8" and not quantized:
            warn_once(f"openvino: {self.model_path.name} holds no int8 quantization; it runs in fp32. "
                      "Quantize it first (edgesdk convert --precision int8)")
        self._core = core  # kept to recompile after an engine failure (see _recover)
        self._compiled = self._compile(model, device, config)
        self.device = device
        self.config = config
        #: the floating-point precision the compiled model computes in (fp32/bf16/fp16)
        self.inference_precision = self._read_precision(config)
        self.precision = "int8" if quantized else self.inference_precision
        self._in_ports = list(self._compiled.inputs)
        self._out_ports = list(self._compiled.outputs)
        self._output_names = tuple(self._port_name(p, i, "output") for i, p in enumerate(self._out_ports))
        self._input_order = tuple(self._port_name(p, i, "input") for i, p in enumerate(self._in_ports))
        self._single = len(self._in_ports) == 1
        self._request = self._compiled.create_infer_request()
        self._request_infer = self._request.infer
        # Off unless asked for: it goes through the private openvino._pyopenvino module and
        # saves ~7 us per call; the public path is the one we trust on a device.
        direct = self.options.get("direct_call", os.environ.get("EDGESDK_OPENVINO_DIRECT") == "1")
        self._direct = _direct_infer() if direct else None
        self._held: Any = None  # the arrays the request's shared input Tensors point into
        self._sync_lock = threading.Lock()
        self._pool: Optional[_RequestPool] = None
        self._retired: list[_RequestPool] = []  # pools of compiled models replaced by _recover
        self._pool_lock = threading.Lock()
        self._recover_lock = threading.Lock()
        self._generation = 0  # counts recompiles, so one failure recompiles once
        #: how many times the model was recompiled after an engine failure
        self.recoveries = 0

    def _compile(self, model: Any, device: str, config: dict[str, Any]) -> Any:
        try:
            return self._core.compile_model(model, device, config)
        except Exception as exc:
            raise load_failure(
                "openvino", self.model_path, str(exc),
                f"openvino could not compile {self.model_path.name} for {device}: {ov_error_line(exc)}", exc) from exc

    def _read_precision(self, config: dict[str, Any]) -> str:
        try:
            value = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        except RuntimeError:  # AUTO and some NPU plugins do not report it; they got our hint
            value = config.get("INFERENCE_PRECISION_HINT", "f32")
        name = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
        got = FROM_OV.get(name, name)
        asked = self.requested_precision
        if asked in ("fp16", "bf16") and got != asked:
            warn_once(f"openvino: {self.device} was asked for {asked} but runs {got}")
        return got

    def _deactivate_impl(self) -> None:
        with self._pool_lock:
            pools = self._retired + ([self._pool] if self._pool is not None else [])
            self._pool, self._retired = None, []
        for pool in pools:
            pool.close()  # waits for the batches in flight
        self._request = None  # before _held: the request's Tensors point into those arrays
        self._request_infer = None
        self._compiled = None
        self._core = None
        self._held = None

    @property
    def compiled_model(self) -> Any:
        """The engine's CompiledModel (for what this API does not cover)."""
        self.activate()
        return self._compiled

    # ----------------------------------------------------------------- description
    @staticmethod
    def _port_name(port: Any, index: int, kind: str) -> str:
        """The name the model declares. Compiling merges tensors (an input feeding an Identity
        or Cast carries both names) and get_any_name() may then return the inner one; the
        Parameter's (or Result's, less "/sink_port_N") friendly name is the declared one."""
        node_name = port.get_node().get_friendly_name()
        try:
            names = port.get_names()
        except RuntimeError:
            names = set()
        for candidate in (node_name, node_name.rsplit("/sink_port_", 1)[0]):
            if candidate in names:
                return candidate
        try:
            return port.get_any_name()
        except RuntimeError:  # an IR tensor without names: fall back to the node's name
            return node_name or f"{kind}{index}"

    def _spec(self, port: Any, index: int, kind: str) -> TensorSpec:
        shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
        try:
            dtype = _numpy_dtype(port.get_element_type())
        except (RuntimeError, TypeError) as exc:
            raise ModelLoadError(f"tensor {self._port_name(port, index, kind)!r} has element type "
                                 f"{port.get_element_type()}, which EdgeSDK does not handle") from exc
        return TensorSpec(self._port_name(port, index, kind), shape, dtype)

    def _input_specs_impl(self) -> Sequence[TensorSpec]:
        return [self._spec(p, i, "input") for i, p in enumerate(self._in_ports)]

    def _output_specs_impl(self) -> Sequence[TensorSpec]:
        return [self._spec(p, i, "output") for i, p in enumerate(self._out_ports)]

    # ----------------------------------------------------------------- running
    def _ordered(self, feeds: dict[str, np.ndarray]) -> Any:
        if self._single:
            return next(iter(feeds.values()))
        return [feeds[name] for name in self._input_order]

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # The caller's arrays are shared with the request (no copy) while we block; outputs
        # are copied (share_outputs=False) because the request reuses its output buffers.
        with self._sync_lock:  # an InferRequest is not thread-safe
            generation = self._generation
            try:
                if self._direct is not None:
                    values = self._infer_direct(feeds)
                else:
                    values = self._request_infer(self._ordered(feeds), True).to_tuple()
                return dict(zip(self._output_names, values))
            except Exception as exc:
                error = InferenceError(f"openvino failed on {self.model_path.name}: {ov_error_line(exc)}")
                error.__cause__ = exc
        self._recover(generation)  # outside the sync lock: _recover takes it itself
        raise error

    def _recover(self, generation: int) -> None:
        """Recompile after an engine failure.

        OpenVINO 2026.4's CPU plugin keeps stale shapes after a call fails during shape
        inference: every later call with the input shape of the last good call then fails
        too, on every request of that compiled model (seen with an image too small for the
        PP-OCR classifier's pooling). A stream of same-size frames would never recover, so
        one failure costs one recompile instead. Jobs already in flight finish on the old one.
        """
        with self._recover_lock:
            if generation != self._generation or self._core is None:
                return  # another failure of the same generation recompiled already
            warn_once(f"openvino: recompiling {self.model_path.name} after an engine failure "
                      "(a failed call leaves stale shapes behind in OpenVINO)")
            try:
                compiled = self._compile(self._read_model(self._core), self.device, self.config)
            except ModelLoadError as exc:  # keep the old one; the caller still gets its own error
                log.warning("openvino: recompiling %s failed: %s", self.model_path.name, exc)
                return
            with self._sync_lock:
                self._compiled = compiled
                self._request = compiled.create_infer_request()
                self._request_infer = self._request.infer
                self._held = None
                self._generation += 1
                self.recoveries += 1
            with self._pool_lock:
                if self._pool is not None:
                    # not closed here: a submit may still be handing it a job; its waiters
                    # finish what is in flight, and deactivate closes it
                    self._retired.append(self._pool)
                self._pool = None

    def _infer_direct(self, feeds: dict[str, np.ndarray]) -> Any:
        """The engine call without OpenVINO's Python input dispatcher (~7 us of isinstance
        checks per call, which check_feeds has already done): wrap the checked arrays as
        shared Tensors and call the C++ infer. Its result dict is ordered like the outputs."""
        infer, tensor = self._direct
        # A shared Tensor does not keep its numpy array alive, and the request keeps using the
        # Tensor after the call: hold the arrays until the next call (as OpenVINO's own
        # dispatcher does with request._inputs_data), or freed memory gets read and written.
        if self._single:
            self._held = np.ascontiguousarray(next(iter(feeds.values())))
            inputs = tensor(self._held, shared_memory=True)
        else:
            self._held = [np.ascontiguousarray(feeds[n]) for n in self._input_order]
            inputs = {i: tensor(a, shared_memory=True) for i, a in enumerate(self._held)}
        try:
            return infer(self._request, inputs, False, True).values()
        except TypeError:  # a future OpenVINO changed this signature: use the public path for good
            self._direct = None
            return self._request_infer(self._ordered(feeds), True).to_tuple()

    def _make_pool(self) -> "_RequestPool":
        jobs = self.options.get("num_requests")
        if not jobs:
            try:
                jobs = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            except RuntimeError:
                jobs = 2
            jobs = max(2, jobs)
        generation = self._generation
        return _RequestPool(self._compiled, int(jobs), self._output_names, self.model_path.name,
                            on_failure=lambda: self._recover(generation))

    def _submit_impl(self, feeds: dict[str, np.ndarray]) -> Future:
        with self._pool_lock:
            if self._pool is None:
                self._pool = self._make_pool()
            pool = self._pool
        # outside the lock: submit blocks while all requests are busy
        return pool.submit(self._ordered(feeds))

    @property
    def num_requests(self) -> int:
        """How many submitted batches can be in flight at once (0 before the first submit)."""
        return self._pool.size if self._pool is not None else 0


# OpenVINO element types whose to_dtype() is only a same-size stand-in (bf16 -> float16,
# f8 -> uint8); ml_dtypes (which onnx's numpy_helper uses) has the real ones.
_ML_DTYPES = {"bf16": "bfloat16", "f8e4m3": "float8_e4m3fn", "f8e5m2": "float8_e5m2"}


def _numpy_dtype(element_type: Any) -> np.dtype:
    name = _ML_DTYPES.get(element_type.get_type_name())
    if name is not None:
        try:
            import ml_dtypes
            return np.dtype(getattr(ml_dtypes, name))
        except (ImportError, AttributeError):  # no ml_dtypes on this device: the stand-in it is
            pass
    return element_type.to_dtype()


def _direct_infer() -> Optional[tuple[Any, Any]]:
    """(C++ InferRequest.infer, Tensor) when this OpenVINO exposes them, else None."""
    try:
        from openvino._pyopenvino import InferRequest, Tensor
    except ImportError:
        return None
    return InferRequest.infer, Tensor


class _RequestPool:
    """Infer requests running natively async, each finished by a waiter thread.

    Not OpenVINO's AsyncInferQueue: its callbacks are not called when a request fails (the
    error only comes back from a later call, tied to no request), so a failed job's future
    would never resolve. Here a waiter blocks in ``request.wait()`` (which releases the GIL
    and raises the request's own error) and resolves exactly that request's future; futures
    complete in the order the engine finishes them.
    """

    def __init__(self, compiled: Any, size: int, names: tuple[str, ...], model: str,
                 on_failure: Callable[[], None]) -> None:
        import queue
        from concurrent.futures import ThreadPoolExecutor

        self.size = size
        self._names, self._model = names, model
        self._on_failure = on_failure
        self._idle: "queue.Queue[Any]" = queue.Queue()
        for _ in range(size):
            self._idle.put(compiled.create_infer_request())
        self._waiters = ThreadPoolExecutor(max_workers=size, thread_name_prefix="openvino-wait")

    def submit(self, inputs: Any) -> Future:
        request = self._idle.get()  # blocks while every request is busy: back-pressure
        future: Future = Future()
        future.set_running_or_notify_cancel()
        try:
            # share_inputs=False copies the inputs: the caller may reuse its array at once
            request.start_async(inputs, share_inputs=False)
        except Exception as exc:
            self._idle.put(request)
            raise InferenceError(f"openvino could not start {self._model}: {ov_error_line(exc)}") from exc
        self._waiters.submit(self._finish, request, future)
        return future

    def _finish(self, request: Any, future: Future) -> None:
        try:
            request.wait()
            values = [request.get_output_tensor(i).data.copy() for i in range(len(self._names))]
        except Exception as exc:  # the request's own failure, raised by wait()
            self._idle.put(request)  # first: a submit may be waiting for a free request
            self._on_failure()  # recompile, so later jobs do not inherit the failure
            future.set_exception(InferenceError(f"openvino failed on {self._model}: {ov_error_line(exc)}"))
            return
        self._idle.put(request)  # outputs are copied: the request can take the next job
        future.set_result(dict(zip(self._names, values)))

    def close(self) -> None:
        self._waiters.shutdown(wait=True)
