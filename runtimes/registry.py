"""Pick a backend by name or by file suffix, and say which are installed."""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from .base import Runtime
from .errors import BackendUnavailableError, ModelLoadError

@dataclass(frozen=True)
class BackendRecord:
    """Everything EdgeSDK knows about one backend, in one place: runtimes read the engine part,
    profiles the name, `convert` the precisions/layout/tools, converters register their builders
    by name (converters.variants.BUILDERS), detect the probes. A new backend is one record plus
    one runtime file (and one builder)."""

    name: str
    #: "module:Class" of our Runtime adapter; "" when no engine runs it on this kind of host
    engine: str
    #: engine modules whose presence means it is installed (first found wins)
    probes: tuple[str, ...]
    #: pip requirement that installs it
    extra: str
    #: file suffixes this backend is the default for
    suffixes: tuple[str, ...]
    #: precisions EdgeSDK's converters produce for it
    precisions: tuple[str, ...]
    #: for a backend with no local engine: the engine that checks its file here
    checked_with: str = ""
    #: "NHWC" when its converter writes channels-last models
    file_layout: str = ""
    #: the converter tool its files need ("onnx2tf"), checked before building
    needs: str = ""
    #: "module:function" in runtimes/ listing the engine's devices on this host (runtimes.devices)
    devices: str = ""
    #: other names people give it (CLI, profiles)
    aliases: tuple[str, ...] = ()
    #: INT8 without calibration data is possible (dynamic quantization)
    int8_without_calib: bool = False
    #: extra variants worth timing when measuring here: (variant precision, profile precisions it needs)
    measured_extras: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: converters.gpu_recipes writes a set-up-and-check recipe for its OpenCL GPU targets
    gpu_recipe: bool = False
    #: one engine runs several batches at once in its own streams (OpenVINO NUM_STREAMS),
    #: so `--replicas N` can be N streams of one compiled model instead of N models
    streams: bool = False
    #: True when its files must have every input dim fixed (no -1 in --input-shape)
    static_shapes: bool = False
    #: devices of this backend that need static shapes although the backend does not (OpenVINO NPU)
    static_devices: tuple[str, ...] = ()
    #: engine-specific keyword options its runtime reads (beyond device/precision/threads/...)
    options: tuple[str, ...] = ()


RECORDS: dict[str, BackendRecord] = {r.name: r for r in (
    BackendRecord("onnxruntime", "runtimes.onnxruntime:OnnxRuntime", ("onnxruntime",), "onnxruntime",
                  (".onnx", ".ort"), ("fp32", "fp16", "int8"), devices="runtimes.devices:onnxruntime_providers",
                  aliases=("ort", "onnx"), int8_without_calib=True, options=("session_config",)),
    # on AMX-class CPUs the float parts of an int8 IR can run in bf16 too, and OpenVINO also runs
    # onnxruntime's QDQ model in int8 (a smaller file than the IR): both are timed when measuring
    BackendRecord("openvino", "runtimes.openvino:OpenVINORuntime", ("openvino",), "edgesdk[openvino]",
                  (".xml",), ("fp32", "fp16", "bf16", "int8"), devices="runtimes.devices:openvino_devices",
                  aliases=("ov",), measured_extras=(("int8+bf16", ("int8", "bf16")), ("int8-qdq", ("int8",))),
                  gpu_recipe=True, streams=True, static_devices=("NPU",),
                  options=("config", "cache_dir", "direct_call", "num_requests")),
    BackendRecord("litert", "runtimes.litert:LiteRTRuntime", ("ai_edge_litert", "tflite_runtime", "tensorflow"),
                  "edgesdk[litert]", (".tflite",), ("fp32", "fp16", "int8"), file_layout="NHWC", needs="onnx2tf",
                  aliases=("tflite", "tensorflow-lite"), gpu_recipe=True, static_shapes=True,
                  options=("delegate", "xnnpack")),
    BackendRecord("tensorrt", "", ("tensorrt",), "tensorrt", (".engine", ".plan"), ("fp32", "fp16", "int8"),
                  checked_with="onnxruntime", aliases=("trt",), static_shapes=True),  # one optimization profile per engine here
    BackendRecord("edgetpu", "", ("pycoral",), "pycoral", (), ("int8",), checked_with="litert",
                  file_layout="NHWC", needs="onnx2tf", aliases=("coral",), static_shapes=True),
    # AMD Kria / Vitis AI DPU: INT8 QDQ ONNX checked here on onnxruntime, the DPU recipe unverified
    BackendRecord("vitis_ai", "", ("vai_q_onnx",), "vai_q_onnx", (), ("int8",), checked_with="onnxruntime",
                  static_shapes=True),  # the DPU compiler takes fixed shapes
)}


def record(name: str) -> BackendRecord:
    try:
        return RECORDS[name]
    except KeyError:
        raise BackendUnavailableError(f"unknown backend {name!r}; known: {', '.join(RECORDS)}") from None


# name -> (module, class, engine module to probe, pip extra): the backends with a local engine
BACKENDS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    r.name: (*r.engine.split(":"), r.probes, r.extra) for r in RECORDS.values() if r.engine}  # type: ignore[misc]
#: every record's other names (profiles also name backends with no engine here: trt, coral)
ALL_ALIASES = {alias: r.name for r in RECORDS.values() for alias in r.aliases}
#: the aliases of the backends a runtime can be loaded for
ALIASES = {alias: name for alias, name in ALL_ALIASES.items() if RECORDS[name].engine}
#: every engine option some runtime reads (a stream spec's key that is none of these is a typo)
ENGINE_OPTIONS = frozenset(opt for r in RECORDS.values() for opt in r.options)
#: the engine every variant is compared against, and whose fp32 file the speed-up and size ratios divide by
REFERENCE = "onnxruntime"
# Which backend a file suffix goes to first.
SUFFIX_BACKEND = {suffix: r.name for r in RECORDS.values() if r.engine for suffix in r.suffixes}


def canonical(name: str) -> str:
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in BACKENDS:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)} (aliases: {', '.join(ALIASES)})")
    return key


def is_available(name: str) -> bool:
    _, _, probes, _ = BACKENDS[canonical(name)]
    return any(importlib.util.find_spec(p) is not None for p in probes)


def available_backends() -> list[str]:
    return [name for name in BACKENDS if is_available(name)]


def backend_class(name: str) -> type[Runtime]:
    key = canonical(name)
    module, cls, _, extra = BACKENDS[key]
    if not is_available(key):
        raise BackendUnavailableError(f"the {key} backend is not installed: pip install '{extra}'")
    return getattr(importlib.import_module(module), cls)


@dataclass(frozen=True)
class HostDevices:
    """What one backend's host probe found: its devices here (with names where the engine gives
    them), or why there are none."""

    backend: str
    installed: bool
    devices: tuple[str, ...] = ()
    names: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()


def probe_devices(name: str) -> HostDevices:
    """Run the record's `devices` probe; a missing or broken engine is a note, never an exception."""
    rec = record(name)
    if not any(importlib.util.find_spec(p) is not None for p in rec.probes):
        return HostDevices(rec.name, False, notes=(f"{rec.name} is not installed (pip install '{rec.extra}')",))
    if not rec.devices:
        return HostDevices(rec.name, True)
    module, function = rec.devices.split(":")
    try:
        found = list(getattr(importlib.import_module(module), function)())
    except ImportError as exc:
        return HostDevices(rec.name, False, notes=(f"{rec.name} is not installed ({exc})",))
    except Exception as exc:  # an engine that is installed but broken must not stop detection
        return HostDevices(rec.name, True, notes=(f"{rec.name} failed to list its devices: {exc}",))
    return HostDevices(rec.name, True, tuple(d for d, _ in found), tuple((d, n) for d, n in found if n))


def host_probes() -> list[str]:
    """The backends whose record names a host probe, in record order."""
    return [r.name for r in RECORDS.values() if r.devices]


def backend_for(path: Union[str, Path]) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_BACKEND:
        raise ModelLoadError(
            f"cannot tell the model format of {str(path)!r} from its suffix {suffix or '(none)'}; "
            f"expected one of {', '.join(SUFFIX_BACKEND)} or pass backend=...")
    return SUFFIX_BACKEND[suffix]


#: the backend name that picks the first installed backend that loads the model (runtimes.auto)
AUTO = "auto"


def check_backend_name(name: Optional[str]) -> Optional[str]:
    """The canonical name of `name` (or "auto", or None), raising on an unknown one: for
    callers that validate options before heavy work."""
    if name is None or name.lower() == AUTO:
        return name and AUTO
    try:
        return canonical(name)
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(f"{exc}, or {AUTO} (the first installed backend that loads the model)") from None


def load(path: Union[str, Path], backend: Optional[str] = None, **kwargs: Any) -> Runtime:
    """Create (not yet activated) the runtime for a model file.

    `backend` is a name or alias; None picks by suffix. OpenVINO also runs .onnx files.
    ``backend="auto"`` returns an *activated* runtime: the first installed backend that
    loads the model, falling back (logged once) to the next and to an ONNX opset conversion.
    """
    if backend and backend.lower() == AUTO:
        from .auto import load_auto

        backend_for(path)  # an unknown suffix says so first
        return load_auto(Path(path), **kwargs)
    key = canonical(backend) if backend else backend_for(path)
    cls = backend_class(key)
    suffix = Path(path).suffix.lower()
    accepted = cls.suffixes
    if suffix not in accepted:
        raise ModelLoadError(
            f"the {key} backend cannot run {suffix} files ({Path(path).name}); it takes {', '.join(accepted)}")
    return cls(path, **kwargs)
