"""LiteRT (TensorFlow Lite) backend for .tflite models.

The engine is imported from the first of ``ai_edge_litert.interpreter`` (works with numpy 2),
``tflite_runtime.interpreter`` and ``tensorflow.lite``. TFLite image models are NHWC and the
specs say so. A model whose batch dim is dynamic (shape_signature -1) gets the caller's batch
in one call through ``resize_tensor_input``; a fixed batch of 1 is looped by the base class.
The interpreter is not thread-safe, so every call holds a lock and ``submit`` runs on the
base's worker thread.
"""
from __future__ import annotations

import importlib
import re
import threading
from typing import Any, Sequence

import numpy as np

from .base import Runtime, warn_once
from .errors import BackendUnavailableError, InferenceError, ModelLoadError
from .spec import TensorSpec

INSTALL_HINT = "pip install 'edgesdk[litert]'"


def _signature_names(interp: Any) -> tuple[dict[int, str], dict[int, str]]:
    """{tensor index: name} of the inputs and outputs as the model's one signature names them, or
    empty maps. onnx2tf keeps the ONNX names only there: the tensors are "serving_default_x:0" and
    "PartitionedCall:N", in an order of their own (MTCNN's ONet: outputs 10, 4, 2 wide for ONNX's
    4, 10, 2), so by tensor names or positions an output was another's."""
    try:
        if len(interp.get_signature_list()) != 1:
            return {}, {}
        runner = interp.get_signature_runner()
        return ({int(d["index"]): name for name, d in runner.get_input_details().items()},
                {int(d["index"]): name for name, d in runner.get_output_details().items()})
    except (AttributeError, ValueError, RuntimeError, KeyError):  # an engine without signature support
        return {}, {}


def _named(detail: dict, names: dict[int, str]) -> dict:
    name = names.get(int(detail["index"]))
    return dict(detail, name=name) if name else detail


ENGINES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")
# Delegate libraries that give a TFLite interpreter a device other than the CPU, best first.
DELEGATES = {
    "NPU": ("libedgetpu.so.1", "libedgetpu.1.dylib", "edgetpu.dll"),
    "GPU": ("libtensorflowlite_gpu_delegate.so",),
}
FALLBACK = {"NPU": "GPU", "GPU": "CPU"}


def import_interpreter() -> tuple[Any, Any, str]:
    """(Interpreter class, load_delegate function, module name) of the first engine found."""
    for name in ENGINES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # also numpy-2-incompatible tflite_runtime wheels (_ARRAY_API)
            continue
        return module.Interpreter, getattr(module, "load_delegate", None), name
    raise BackendUnavailableError(
        f"the litert backend needs a TFLite interpreter (tried {', '.join(ENGINES)}): {INSTALL_HINT}")


def _loadable(library: str) -> bool:
    import ctypes

    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def _load_hint(text: str) -> str:
    """What to do about a model the interpreter refused: a custom operator is a property of the
    model (no re-download fixes it), anything else most often a cut or foreign file."""
    custom = re.search(r"unresolved custom op: (\w+)", text)
    if custom:
        return (f"The model uses the custom operator {custom.group(1)}, which is not one of LiteRT's builtin "
                "operators: it runs only where the library registering that operator is linked in (MediaPipe's "
                "graph runtime, for MediaPipe models). Use a variant of the model without it, or export the model "
                "again with builtin operators only")
    return "Is it a complete .tflite flatbuffer? Re-export or re-download it"


class LiteRTRuntime(Runtime):
    """A TFLite interpreter with XNNPACK on the CPU (or a delegate on GPU/NPU).

    Extra options: ``xnnpack`` (default True; False runs the builtin kernels without the
    default delegate), ``delegate`` (path of a delegate library to load for this device).
    ``kernels`` says what runs the model once active: "xnnpack", "builtin" (asked for, or
    because XNNPACK could not prepare the model) or "delegate".
    """

    backend = "litert"
    suffixes = (".tflite",)
    extra = "edgesdk[litert]"

    # ----------------------------------------------------------------- lifecycle
    def _delegates(self, load_delegate: Any) -> tuple[str, list]:
        device = self.requested_device
        if device in ("CPU", "AUTO"):
            return "CPU", []
        explicit = self.options.get("delegate")
        while device != "CPU":
            for lib in ((explicit,) if explicit else DELEGATES[device]):
                if load_delegate is None:
                    break
                if not _loadable(lib):  # load_delegate on a missing library leaves a broken object behind
                    continue
                try:
                    return device, [load_delegate(lib)]
                except (ValueError, OSError, RuntimeError):
                    continue
            if self.strict:
                raise BackendUnavailableError(
                    f"litert found no {device} delegate ({', '.join((explicit,) if explicit else DELEGATES[device])} "
                    "did not load); install the delegate library or pass device='CPU'")
            nxt = FALLBACK[device]
            warn_once(f"litert: no {device} delegate could be loaded; falling back to {nxt}")
            device, explicit = nxt, None
        return "CPU", []

    def _activate_impl(self) -> None:
        Interpreter, load_delegate, self.engine = import_interpreter()
        device, delegates = self._delegates(load_delegate)
        kwargs: dict[str, Any] = {"model_path": str(self.model_path), "num_threads": self.threads}
        if delegates:
            kwargs["experimental_delegates"] = delegates
        builtin = getattr(importlib.import_module(self.engine), "OpResolverType", None)
        builtin = getattr(builtin, "BUILTIN_WITHOUT_DEFAULT_DELEGATES", None)
        self.kernels = "xnnpack" if not delegates else "delegate"
        if not self.options.get("xnnpack", True) and builtin is not None:
            kwargs["experimental_op_resolver_type"] = builtin
            self.kernels = "builtin"
        try:
            interp = self._open(Interpreter, kwargs, builtin)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"litert could not load {self.model_path.name}: {_message(exc)}. "
                                 f"{_load_hint(str(exc))}") from exc
        self._interp = interp
        self.device = device
        in_names, out_names = _signature_names(interp)
        self._in_details = [_named(d, in_names) for d in interp.get_input_details()]
        self._out_details = [_named(d, out_names) for d in interp.get_output_details()]
        self._in_index = tuple((d["name"], int(d["index"])) for d in self._in_details)
        self._out_index = tuple((d["name"], int(d["index"])) for d in self._out_details)
        # Current input shapes, so a resize only happens when the caller's shape changes.
        self._shapes = {d["index"]: tuple(int(v) for v in d["shape"]) for d in self._in_details}
        self._resizable = any(-1 in d.get("shape_signature", d["shape"]) for d in self._in_details)
        self._call_lock = threading.Lock()
        self.precision = self._stored_precision()
        asked = self.requested_precision
        if asked not in (None, "native", self.precision):
            warn_once(f"litert runs a .tflite model in the precision it is stored in ({self.precision}); "
                      f"convert the model (edgesdk convert --precision {asked}) instead of asking the runtime")

    def _open(self, Interpreter: Any, kwargs: dict[str, Any], builtin: Any) -> Any:
        """The interpreter, tensors allocated. Where XNNPACK (the default CPU delegate) cannot
        prepare the model, LiteRT's builtin kernels still run it (slower), as the engine itself
        would with the delegate off: said once, and `kernels` says which ran. Seen: the INT8
        MTCNN ONet that onnx2tf + TFLiteConverter write, which XNNPACK refuses at node 25."""
        try:
            interp = Interpreter(**kwargs)
            interp.allocate_tensors()
            return interp
        except (ValueError, RuntimeError) as exc:
            if "XNNPACK" not in str(exc) or builtin is None or self.kernels != "xnnpack":
                raise
            why = re.sub(r"Node number \d+ ", "", _message(exc))  # one warning for a model's trial variants too
        interp = Interpreter(**dict(kwargs, experimental_op_resolver_type=builtin))
        interp.allocate_tensors()
        self.kernels = "builtin"
        warn_once(f"litert: XNNPACK could not prepare {self.model_path.name} ({why}); running it on LiteRT's "
                  "builtin kernels, which are slower. Pass the runtime option xnnpack=False to choose them "
                  "without trying XNNPACK first")
        return interp

    def _stored_precision(self) -> str:
        """int8 when the model computes on quantized tensors; fp32 otherwise.

        fp16-weight models dequantize their weights at load and compute in fp32 on CPUs.
        """
        for t in self._interp.get_tensor_details():
            scales = t.get("quantization_parameters", {}).get("scales")
            if t["dtype"] in (np.int8, np.uint8, np.int16) and scales is not None and len(scales):
                return "int8"
        return "fp32"

    def _deactivate_impl(self) -> None:
        self._interp = None

    @property
    def interpreter(self) -> Any:
        """The engine's Interpreter (for what this API does not cover)."""
        self.activate()
        return self._interp

    # ----------------------------------------------------------------- description
    @staticmethod
    def _spec(d: dict) -> TensorSpec:
        shape = tuple(int(v) for v in d.get("shape_signature", d["shape"]))
        scale, zero_point = d.get("quantization", (0.0, 0))
        quant = (float(scale), int(zero_point)) if scale else None
        layout = "NHWC" if len(shape) == 4 else ""
        return TensorSpec(d["name"], shape, d["dtype"], layout=layout, quantization=quant)

    def _input_specs_impl(self) -> Sequence[TensorSpec]:
        return [self._spec(d) for d in self._in_details]

    def _output_specs_impl(self) -> Sequence[TensorSpec]:
        return [self._spec(d) for d in self._out_details]

    # ----------------------------------------------------------------- running
    def _resize(self, feeds: dict[str, np.ndarray]) -> None:
        changed = False
        for name, index in self._in_index:
            shape = feeds[name].shape
            if shape != self._shapes[index]:
                self._interp.resize_tensor_input(index, list(shape), strict=True)
                self._shapes[index] = shape
                changed = True
        if changed:
            self._interp.allocate_tensors()

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interp = self._interp
        with self._call_lock:
            try:
                if self._resizable:
                    self._resize(feeds)
                for name, index in self._in_index:
                    interp.set_tensor(index, feeds[name])
                interp.invoke()
                # get_tensor copies, so the outputs survive the next call
                return {name: interp.get_tensor(index) for name, index in self._out_index}
            except (ValueError, RuntimeError) as exc:
                raise InferenceError(f"litert failed on {self.model_path.name}: {_message(exc)}") from exc
