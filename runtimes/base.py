"""The `Runtime` base: one API over every engine.

Like Polygraphy's runners, the public methods (`activate`, `infer`, `submit`,
`deactivate`) do the checking and the batching once, here; a backend overrides only the
`_*_impl` methods. A wrong input is refused before it reaches the engine.
"""
from __future__ import annotations

import abc
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence, Union

import numpy as np

from .dims import show_dims
from .errors import InputMismatchError, ModelLoadError, OptionError
from .spec import TensorSpec

log = logging.getLogger("runtimes")

Feeds = Union[np.ndarray, Mapping[str, np.ndarray]]
DEVICES = ("CPU", "GPU", "NPU", "AUTO")
PERFORMANCE_HINTS = ("latency", "throughput")
#: what `precision=` may ask for (None and "native": the model's own, pinned)
PRECISIONS = ("native", "fp32", "fp16", "bf16", "int8")
_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Log a fallback once per process, not once per model or frame."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def check_runtime_options(device: str = "CPU", precision: Optional[str] = None, threads: Optional[int] = None,
                          performance_hint: str = "latency") -> str:
    """Raise OptionError for a value no backend takes; returns the device upper-cased.
    Callers that do heavy work first (the CLI) call it before they start."""
    device = str(device).upper()
    if device not in DEVICES:
        raise OptionError(f"device {device!r} is not one of {', '.join(DEVICES)}; pass one of those")
    if precision is not None and precision not in PRECISIONS:
        raise OptionError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}; "
                          "leave it out to run the model in the precision it is stored in")
    if performance_hint not in PERFORMANCE_HINTS:
        raise OptionError(f"performance_hint {performance_hint!r} is not one of {', '.join(PERFORMANCE_HINTS)}")
    if threads is not None and threads < 1:
        raise OptionError(f"threads must be >= 1, got {threads}; leave it out for the engine's default")
    return device


class Runtime(abc.ABC):
    """Load a model, describe its tensors, run batches synchronously or asynchronously.

    Args:
        model_path: the model file (.onnx, .xml, .tflite, ...).
        device: CPU, GPU, NPU or AUTO. A missing device falls back to the next one
            (logged once) unless ``strict`` is set, in which case it raises.
        precision: the execution precision to ask the engine for (``fp32``, ``fp16``,
            ``bf16``, ``int8``); None keeps the model's own precision *pinned* (no
            silent down-casting). After `activate`, `precision` says what really runs.
        threads: engine threads (None: engine default).
        performance_hint: ``latency`` or ``throughput``.
        strict: raise instead of falling back.
    """

    backend: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: the pip extra that installs this backend's engine
    extra: ClassVar[str] = ""

    def __init__(
        self,
        model_path: Union[str, Path],
        *,
        device: str = "CPU",
        precision: Optional[str] = None,
        threads: Optional[int] = None,
        performance_hint: str = "latency",
        strict: bool = False,
        **options: Any,
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelLoadError(
                f"model file {str(self.model_path)!r} does not exist or is not a file; "
                "check the path (bundles: pass the bundle directory to edgesdk.load_bundle)"
            )
        device = check_runtime_options(device, precision, threads, performance_hint)
        self.requested_device = device
        self.requested_precision = precision
        self.device = device
        self.precision: Optional[str] = precision
        self.threads = threads
        self.performance_hint = performance_hint
        self.strict = strict
        self.options = dict(options)
        self._active = False
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        self._input_names: tuple[str, ...] = ()
        self._single_input: Optional[str] = None
        self._loop_batch = False
        self._checks: tuple = ()
        self._executor: Optional[ThreadPoolExecutor] = None
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- lifecycle
    def activate(self) -> "Runtime":
        """Load and compile the model; idempotent."""
        if self._active:
            return self
        self._activate_impl()
        self._inputs = list(self._input_specs_impl())
        self._outputs = list(self._output_specs_impl())
        self._input_names = tuple(s.name for s in self._inputs)
        self._single_input = self._input_names[0] if len(self._inputs) == 1 else None
        # A model whose inputs are all fixed at batch 1 is looped over the caller's batch,
        # but only when the caller's inputs share axis 0 (checked per call).
        self._loop_batch = bool(self._inputs) and all(s.rank and s.shape[0] == 1 for s in self._inputs)
        # What check_feeds compares on every call, worked out once: (name, dtype, rank,
        # ((axis, size), ...) for the fixed axes). The looped batch axis is not fixed.
        self._checks = tuple(
            (s.name, s.dtype, s.rank,
             tuple((axis, want) for axis, want in enumerate(s.shape)
                   if want is not None and not (axis == 0 and self._loop_batch)))
            for s in self._inputs)
        self._active = True
        return self

    def deactivate(self) -> None:
        """Release the engine; the runtime can be activated again."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._active:
            self._deactivate_impl()
        self._active = False

    close = deactivate

    def __enter__(self) -> "Runtime":
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.model_path)!r}, device={self.device!r}, "
                f"precision={self.precision!r})")

    # ----------------------------------------------------------------- description
    @property
    def inputs(self) -> list[TensorSpec]:
        self.activate()
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        self.activate()
        return list(self._outputs)

    @property
    def max_batch(self) -> Optional[int]:
        """Largest batch one engine call takes (None: unbounded). Looped models say 1."""
        self.activate()
        dims = [s.batch_dim for s in self._inputs]
        fixed = [d for d in dims if d is not None]
        return min(fixed) if fixed else None

    # ----------------------------------------------------------------- running
    def infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """Run one batch; returns the outputs by name as numpy arrays."""
        return self._run_checked(self.check_feeds(feeds))

    def submit(self, feeds: Feeds) -> "Future[dict[str, np.ndarray]]":
        """Start one batch and return a future of its outputs.

        The feeds are checked now, so a bad input raises here, not in the future.
        """
        checked = self.check_feeds(feeds)
        if self._loop_batch and self._batch_of(checked) > 1:
            return self._executor_submit(self._run_checked, checked)
        return self._submit_impl(checked)

    def check_feeds(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """Normalize feeds to a dict and check each input against its own declared dtype and shape.

        Inputs are not compared with each other: a model may take `X [N, ...]` next to
        `shape [k]`, or two matrices [3, 4] and [4, 2], and 0-size and scalar inputs go to the
        engine as they would without us. This runs on every call, so the common case costs a
        few attribute compares; only a failing feed goes through the explaining slow path.
        """
        if not self._active:
            self.activate()
        if isinstance(feeds, np.ndarray) and self._single_input is not None:
            checked = {self._single_input: feeds}
        elif isinstance(feeds, Mapping) and len(feeds) == len(self._checks):
            checked = dict(feeds)  # a copy: the caller may reuse its dict while a submit runs
        else:
            return self._check_slow(feeds)
        for name, dtype, rank, fixed in self._checks:
            arr = checked.get(name)
            if (type(arr) is not np.ndarray and not isinstance(arr, np.ndarray)) \
                    or arr.dtype != dtype or arr.ndim != rank:
                return self._check_slow(feeds)
            shape = arr.shape
            for axis, want in fixed:
                if shape[axis] != want:
                    return self._check_slow(feeds)
        if self._loop_batch and self._shared_batch(checked) is None:
            return self._check_slow(feeds)
        return checked

    @staticmethod
    def _shared_batch(feeds: Mapping[str, Any]) -> Optional[int]:
        """The caller's batch when every input is an array with the same axis 0 >= 1, else None."""
        sizes = {a.shape[0] if isinstance(a, np.ndarray) and a.ndim else None for a in feeds.values()}
        size = sizes.pop() if len(sizes) == 1 else None
        return size if size else None

    def _check_slow(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """Check feeds one rule at a time and raise InputMismatchError saying what is wrong."""
        feeds = self._as_named(feeds)
        looped = self._loop_batch and self._shared_batch(feeds) is not None
        for spec in self._inputs:
            self._check_one(spec, feeds[spec.name], looped)
        return dict(feeds)

    def _as_named(self, feeds: Feeds) -> Mapping[str, Any]:
        if isinstance(feeds, np.ndarray):
            if self._single_input is None:
                raise InputMismatchError(
                    f"{self.model_path.name} has {len(self._inputs)} inputs "
                    f"({', '.join(self._input_names)}); pass a dict name -> array, not one array"
                )
            return {self._single_input: feeds}
        if not isinstance(feeds, Mapping):
            raise InputMismatchError(
                f"feeds must be a numpy array or a dict name -> array, got {type(feeds).__name__}"
            )
        missing = [n for n in self._input_names if n not in feeds]
        extra = [n for n in feeds if n not in self._input_names]
        if missing or extra:
            raise InputMismatchError(
                f"{self.model_path.name}: inputs expected {list(self._input_names)}, got {list(feeds)}"
                + (f"; missing {missing}" if missing else "") + (f"; unknown {extra}" if extra else "")
            )
        return feeds

    def _check_one(self, spec: TensorSpec, arr: Any, looped: bool) -> None:
        if not isinstance(arr, np.ndarray):
            raise InputMismatchError(
                f"input {spec.name!r} must be a numpy array, got {type(arr).__name__}")
        # strings: onnxruntime declares object, OpenVINO bytes; both take object, str_ and bytes_ arrays
        if arr.dtype != spec.dtype and not (spec.dtype.kind in "OS" and arr.dtype.kind in "OUS"):
            raise InputMismatchError(
                f"input {spec.name!r} expects dtype {spec.dtype.name}, got {arr.dtype.name}; "
                f"convert it with .astype(np.{spec.dtype.name})"
            )
        if arr.ndim != spec.rank:
            raise InputMismatchError(
                f"input {spec.name!r} expects rank {spec.rank} {show_dims(spec.shape, bracketed=True)}, "
                f"got shape {tuple(arr.shape)}"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
            if axis == 0 and looped:
                continue
            if want is not None and want != got:
                hint = ("; a model fixed at batch 1 is looped over a batch only when every input "
                        "has the same axis 0 (>= 1)") if axis == 0 and self._loop_batch else ""
                raise InputMismatchError(
                    f"input {spec.name!r} expects shape {show_dims(spec.shape, bracketed=True)}, "
                    f"got {tuple(arr.shape)} "
                    f"(axis {axis}: {want} != {got}){hint}"
                )

    # ----------------------------------------------------------------- internals
    def _batch_of(self, feeds: Mapping[str, np.ndarray]) -> int:
        first = next(iter(feeds.values()))
        return first.shape[0] if first.ndim else 1

    def _run_checked(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._loop_batch:
            n = self._batch_of(feeds)  # checked: every input shares this axis 0
            if n > 1:
                parts = [self._infer_impl({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(n)]
                return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
        return self._infer_impl(feeds)

    def _executor_submit(self, fn: Any, *args: Any) -> Future:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.backend}-submit")
        return self._executor.submit(fn, *args)

    # ----------------------------------------------------------------- backend hooks
    @abc.abstractmethod
    def _activate_impl(self) -> None:
        """Load/compile the model; set self.device / self.precision to what really runs."""

    @abc.abstractmethod
    def _deactivate_impl(self) -> None: ...

    @abc.abstractmethod
    def _input_specs_impl(self) -> Sequence[TensorSpec]: ...

    @abc.abstractmethod
    def _output_specs_impl(self) -> Sequence[TensorSpec]: ...

    @abc.abstractmethod
    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run checked feeds whose batch the engine accepts in one call."""

    def _submit_impl(self, feeds: dict[str, np.ndarray]) -> Future:
        """Backends with native async override this; the default runs on a worker thread."""
        return self._executor_submit(self._infer_impl, feeds)
