"""Device profiles: what a target device is, and what it runs best.

A profile is one YAML file (`device_profiles/NAME.yaml`). It states the architecture,
accelerators, memory, cores and batch limits of a device class, and an ordered list of
backend preferences (backend, device, precisions best first, layout). Converters read
it to pick a format and precision; runtimes read it to pick a backend; `edgesdk detect`
matches the host against the `detect:` hints of every shipped profile.

Profiles are searched, first hit wins, in:
  1. folders passed as `extra_dirs` (the CLI's `--profiles-dir`),
  2. folders in the environment variable EDGESDK_PROFILE_PATH (os.pathsep-separated),
  3. the shipped folder (see `shipped_dir()`).
`extends: OTHER` deep-merges this file over OTHER (mappings merge key by key, lists and
scalars replace), so a variant only states what differs. Every error names the file
and the key.
"""
from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from .errors import ProfileError
from .yamlfile import read_yaml

ENV_VAR = "EDGESDK_PROFILE_PATH"

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
from runtimes.registry import RECORDS as _BACKEND_RECORDS  # noqa: E402
BACKENDS = tuple(_BACKEND_RECORDS)  # one record per backend: runtimes.registry.RECORDS
DEVICES = ("CPU", "GPU", "NPU")
LAYOUTS = ("NCHW", "NHWC")
ARCHES = ("x86_64", "aarch64", "armv7l")

PathLike = Union[str, Path]


# --------------------------------------------------------------------------- dataclasses

@dataclass(frozen=True)
class BackendPreference:
    """One way to run a model on the device, in the profile's order of preference."""

    backend: str                     # onnxruntime | openvino | litert | tensorrt | edgetpu
    device: str                      # CPU | GPU | NPU (DLA, Edge TPU, Myriad X count as NPU)
    precisions: tuple[str, ...]      # best first, from fp32/fp16/bf16/int8
    layout: str                      # NCHW | NHWC
    options: tuple[tuple[str, Any], ...] = ()   # engine hints, e.g. dla_core, providers
    note: str = ""
    #: False when EdgeSDK emits only a recipe for this path and has never run it on the hardware
    verified: bool = True
    recipe_note: str = ""            # what "not verified" means here, for `profiles show` and reports

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.backend, "device": self.device,
                               "precisions": list(self.precisions), "layout": self.layout}
        if self.options:
            out["options"] = {k: _thaw(v) for k, v in self.options}
        if self.note:
            out["note"] = self.note
        if not self.verified:
            out["verified"] = False
        if self.recipe_note:
            out["recipe_note"] = self.recipe_note
        return out


@dataclass(frozen=True)
class DetectHints:
    """What `edgesdk detect` looks for on a host to say "this is that device".

    Required hints rule a profile out when they fail: `board` (any regex matches the
    device-tree model), `cpu_flags` (all present), `cpu_flags_absent` (none present),
    `cpu_parts` (any ARM part number), and, when any attachment hint is given, at least
    one of `usb_ids` / `dev_nodes` / `accel_drivers` / `openvino_devices`. The others
    (`vendor`, `cpu_model`, `tegra_release`, `device_names`) only add to the score.
    """

    board: tuple[str, ...] = ()
    cpu_flags: tuple[str, ...] = ()
    cpu_flags_absent: tuple[str, ...] = ()
    cpu_parts: tuple[str, ...] = ()
    vendor: tuple[str, ...] = ()
    cpu_model: tuple[str, ...] = ()
    tegra_release: tuple[str, ...] = ()
    openvino_devices: tuple[str, ...] = ()
    device_names: tuple[str, ...] = ()
    usb_ids: tuple[str, ...] = ()
    dev_nodes: tuple[str, ...] = ()
    accel_drivers: tuple[str, ...] = ()

    @property
    def attachments(self) -> bool:
        return bool(self.usb_ids or self.dev_nodes or self.accel_drivers or self.openvino_devices)

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.__dict__.items() if v}


@dataclass(frozen=True)
class DeviceProfile:
    """A resolved device profile (after `extends:` was merged)."""

    name: str
    description: str
    arch: str
    cpu: str
    accelerators: tuple[str, ...]
    cores: int
    memory_mb: int
    threads: int
    max_batch: int
    batch_sizes: tuple[int, ...]
    backends: tuple[BackendPreference, ...]
    notes: tuple[str, ...] = ()
    extends: Optional[str] = None
    source: Optional[Path] = None
    software: tuple[tuple[str, str], ...] = ()
    detect: DetectHints = field(default_factory=DetectHints)
    sources: tuple[str, ...] = ()
    chain: tuple[str, ...] = ()      # this profile, then what it extends, and so on

    def runnable_backends(self, available: Iterable[str]) -> list[BackendPreference]:
        """The preferences whose backend is installed, in the profile's order.

        `available` is a list of backend names such as `runtimes.available_backends()`
        returns (aliases like "ort" or "tflite" are accepted).
        """
        have = {_canonical_backend(a) for a in available}
        return [b for b in self.backends if b.backend in have]

    @property
    def best(self) -> BackendPreference:
        return self.backends[0]

    def precisions_for(self, backend: str, device: Optional[str] = None) -> tuple[str, ...]:
        """Precisions (best first) the profile lists for a backend (and device)."""
        key = _canonical_backend(backend)
        for pref in self.backends:
            if pref.backend == key and (device is None or pref.device == device.upper()):
                return pref.precisions
        return ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "description": self.description, "arch": self.arch, "cpu": self.cpu,
            "accelerators": list(self.accelerators), "cores": self.cores, "memory_mb": self.memory_mb,
            "threads": self.threads, "max_batch": self.max_batch, "batch_sizes": list(self.batch_sizes),
            "backends": [b.to_dict() for b in self.backends], "notes": list(self.notes),
        }
        if self.software:
            out["software"] = dict(self.software)
        if self.detect.to_dict():
            out["detect"] = self.detect.to_dict()
        if self.sources:
            out["sources"] = list(self.sources)
        out["extends"] = self.extends
        out["chain"] = list(self.chain)
        out["source"] = str(self.source) if self.source else None
        return out


# --------------------------------------------------------------------------- schema
#
# A tiny schema language: each field is (checker, required). Checkers take
# (value, where) and return the normalized value or raise _Invalid(where, message).

class _Invalid(Exception):
    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


Checker = Callable[[Any, str], Any]


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping", type(None): "empty (null)"}.get(type(value), type(value).__name__)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(where, f"expected a non-empty string, got {_type_name(value)} {value!r}")
    return value.strip()


def _pos_int(value: Any, where: str) -> int:
    # bool is an int subclass in Python; `cores: yes` must not pass as 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(where, f"expected a positive integer, got {_type_name(value)} {value!r}")
    if value < 1:
        raise _Invalid(where, f"expected a positive integer, got {value}")
    return value


def _one_of(choices: Sequence[str], upper: bool = False) -> Checker:
    def check(value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise _Invalid(where, f"expected one of {', '.join(choices)}, got {_type_name(value)} {value!r}")
        key = value.upper() if upper else value.lower()
        if key not in choices:
            raise _Invalid(where, f"{value!r} is not one of {', '.join(choices)}")
        return key
    return check


def _list_of(item: Checker, unique: bool = True, non_empty: bool = False) -> Checker:
    def check(value: Any, where: str) -> tuple:
        if isinstance(value, str) and item is _str:
            value = [value]      # a lone string where a list of strings goes is fine
        if not isinstance(value, list):
            raise _Invalid(where, f"expected a list, got {_type_name(value)} {value!r}")
        if non_empty and not value:
            raise _Invalid(where, "expected a non-empty list")
        out = [item(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if unique:
            seen: set = set()
            for i, v in enumerate(out):
                if v in seen:
                    raise _Invalid(f"{where}[{i}]", f"{v!r} is listed twice")
                seen.add(v)
        return tuple(out)
    return check


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(where, f"expected true or false, got {_type_name(value)} {value!r}")
    return value


def _scalar(value: Any, where: str) -> Any:
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value):
        return tuple(value)
    raise _Invalid(where, f"expected a string, number, boolean or list of those, got {_type_name(value)}")


def _mapping(value_checker: Checker) -> Checker:
    def check(value: Any, where: str) -> tuple:
        if not isinstance(value, dict):
            raise _Invalid(where, f"expected a mapping, got {_type_name(value)} {value!r}")
        return tuple((str(k), value_checker(v, f"{where}.{k}")) for k, v in value.items())
    return check


def _software_value(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Invalid(where, f"expected a version string, got {_type_name(value)} {value!r}")
    return str(value)


def _record(fields: Mapping[str, tuple[Checker, bool]], partial: bool = False) -> Checker:
    """A mapping with known keys only. `partial` skips the required check (for files
    that `extends:` another one; the merged result is checked in full)."""
    def check(value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            raise _Invalid(where, f"expected a mapping, got {_type_name(value)} {value!r}")
        out = {}
        for key, val in value.items():
            sub = f"{where}.{key}" if where else str(key)
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise _Invalid(sub, f"unknown key{hint}; allowed keys: {', '.join(fields)}")
            out[key] = fields[key][0](val, sub)
        if not partial:
            for key, (_, required) in fields.items():
                if required and key not in value:
                    raise _Invalid(f"{where}.{key}" if where else key, "missing required key")
        return out
    return check


_BACKEND_FIELDS: dict[str, tuple[Checker, bool]] = {
    "backend": (_one_of(BACKENDS), True),
    "device": (_one_of(DEVICES, upper=True), True),
    "precisions": (_list_of(_one_of(PRECISIONS), non_empty=True), True),
    "layout": (_one_of(LAYOUTS, upper=True), True),
    "options": (_mapping(_scalar), False),
    "note": (_str, False),
    "verified": (_bool, False),
    "recipe_note": (_str, False),
}

_DETECT_FIELDS: dict[str, tuple[Checker, bool]] = {
    name: (_list_of(_str), False) for name in DetectHints.__dataclass_fields__
}

_PROFILE_FIELDS: dict[str, tuple[Checker, bool]] = {
    "name": (_str, False),
    "description": (_str, True),
    "extends": (_str, False),
    "arch": (_one_of(ARCHES), True),
    "cpu": (_str, True),
    "accelerators": (_list_of(_str), False),
    "cores": (_pos_int, True),
    "memory_mb": (_pos_int, True),
    "threads": (_pos_int, True),
    "max_batch": (_pos_int, True),
    "batch_sizes": (_list_of(_pos_int, non_empty=True), True),
    "backends": (_list_of(_record(_BACKEND_FIELDS), unique=False, non_empty=True), True),
    "notes": (_list_of(_str, unique=False), False),
    "software": (_mapping(_software_value), False),
    "detect": (_record(_DETECT_FIELDS), False),
    "sources": (_list_of(_str), False),
}


def _check_consistency(data: dict) -> None:
    """Rules across keys, checked on the merged profile."""
    sizes = data["batch_sizes"]
    for i, size in enumerate(sizes):
        if size > data["max_batch"]:
            raise _Invalid(f"batch_sizes[{i}]", f"{size} is larger than max_batch ({data['max_batch']})")
    if list(sizes) != sorted(sizes):
        raise _Invalid("batch_sizes", f"must be ascending, got {list(sizes)}")
    if data["threads"] > data["cores"] * 2:
        raise _Invalid("threads", f"{data['threads']} threads on {data['cores']} cores makes no sense")
    seen = set()
    for i, pref in enumerate(data["backends"]):
        key = (pref["backend"], pref["device"])
        if key in seen:
            raise _Invalid(f"backends[{i}]", f"{pref['backend']}/{pref['device']} is listed twice")
        seen.add(key)


# --------------------------------------------------------------------------- search path

def shipped_dir() -> Optional[Path]:
    """The folder of shipped profiles.

    An installed wheel carries them as package data in `edgesdk/device_profiles/`; a
    source checkout (or editable install) has them at the repository root.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "device_profiles", here.parent / "device_profiles",
                      Path(sys.prefix) / "share" / "edgesdk" / "device_profiles"):
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    return None


def search_path(extra_dirs: Optional[Iterable[PathLike]] = None) -> list[tuple[Path, str]]:
    """Profile folders in search order, each with where it came from."""
    out: list[tuple[Path, str]] = []
    for d in extra_dirs or ():
        path = Path(d).expanduser()
        if not path.is_dir():
            raise ProfileError(f"profile folder {str(path)!r} (from --profiles-dir) does not exist or is "
                               "not a folder; pass a folder holding NAME.yaml files")
        out.append((path, "--profiles-dir"))
    for d in (os.environ.get(ENV_VAR) or "").split(os.pathsep):
        if not d.strip():
            continue
        path = Path(d.strip()).expanduser()
        if not path.is_dir():
            raise ProfileError(f"profile folder {str(path)!r} (from ${ENV_VAR}) does not exist or is not a "
                               f"folder; fix or unset {ENV_VAR}")
        out.append((path, ENV_VAR))
    shipped = shipped_dir()
    if shipped is not None:
        out.append((shipped, "shipped"))
    return out


def _index(dirs: list[tuple[Path, str]]) -> dict[str, Path]:
    """name -> file; earlier folders win, so users can override a shipped profile."""
    found: dict[str, Path] = {}
    for folder, _ in dirs:
        for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
            found.setdefault(path.stem, path)
    return found


def _show(path: Path) -> str:
    """A path as people want to read it: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- loading

def _read_yaml(path: Path) -> dict:
    data = read_yaml(path, "the device profile", ProfileError)
    if not isinstance(data, dict):
        raise ProfileError(f"{_show(path)}: a profile must be a YAML mapping of keys "
                           f"(name, arch, backends, ...), got {_type_name(data)}")
    return data


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class _Loader:
    def __init__(self, extra_dirs: Optional[Iterable[PathLike]] = None, first: Optional[Path] = None):
        dirs = search_path(extra_dirs)
        if first is not None:
            dirs.insert(0, (first, "file's folder"))
        self.index = _index(dirs)
        # every file per name, in search order: a user's NAME.yaml may extend the
        # NAME.yaml it shadows (override one key of a shipped profile)
        self.all: dict[str, list[Path]] = {}
        for folder, _ in dirs:
            for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
                if path.resolve() not in [p.resolve() for p in self.all.get(path.stem, [])]:
                    self.all.setdefault(path.stem, []).append(path)
        self.cache: dict[Path, DeviceProfile] = {}

    def known(self) -> list[str]:
        return sorted(self.index)

    def path_of(self, name: str) -> Path:
        path = self.index.get(name)
        if path is None:
            raise ProfileError(_unknown_message(name, self.known()))
        return path

    def raw(self, path: Path, stack: tuple[Path, ...]) -> tuple[dict, tuple[str, ...]]:
        """The merged mapping of a file and everything it extends, plus the chain."""
        path = path.resolve()        # relative --profiles-dir entries must still detect cycles
        if path in stack:
            cycle = " -> ".join(p.stem for p in stack[stack.index(path):] + (path,))
            raise ProfileError(f"{_show(stack[-1])}: extends: cycle {cycle}; a profile cannot extend itself")
        data = _read_yaml(path)
        try:
            checked = _record(_PROFILE_FIELDS, partial=True)(data, "")
        except _Invalid as exc:
            raise ProfileError(f"{_show(path)}: {exc.where}: {exc.message}") from None
        if "name" in checked and checked["name"] != path.stem:
            raise ProfileError(f"{_show(path)}: name: {checked['name']!r} does not match the file name "
                               f"{path.stem!r}; rename one of them (the file name is the profile name)")
        parent = data.get("extends")
        if parent is None:
            return data, (path.stem,)
        parent_path = self.index.get(parent)
        if parent == path.stem:
            same = [p.resolve() for p in self.all.get(parent, [])]
            later = same[same.index(path.resolve()) + 1:] if path.resolve() in same else []
            parent_path = later[0] if later else parent_path
        if parent_path is None:
            raise ProfileError(f"{_show(path)}: extends: {_unknown_message(parent, self.known())}")
        base, chain = self.raw(parent_path, stack + (path,))
        inherited = list(base.get("sources") or [])
        base = {k: v for k, v in base.items() if k not in ("name", "extends", "sources")}
        merged = _deep_merge(base, data)
        # sources accumulate: a variant's facts rest on its parent's sources too
        merged["sources"] = list(dict.fromkeys(list(data.get("sources") or []) + inherited))
        if not merged["sources"]:
            del merged["sources"]
        return merged, (path.stem,) + chain

    def load(self, path: Path) -> DeviceProfile:
        path = path.resolve()
        if path in self.cache:
            return self.cache[path]
        merged, chain = self.raw(path, ())
        merged.setdefault("name", path.stem)
        merged["name"] = path.stem
        try:
            checked = _record(_PROFILE_FIELDS)(merged, "")
            _check_consistency(checked)
        except _Invalid as exc:
            via = f" (merged with {' -> '.join(chain[1:])})" if len(chain) > 1 else ""
            raise ProfileError(f"{_show(path)}: {exc.where}: {exc.message}{via}") from None
        profile = _build(checked, path, chain)
        self.cache[path] = profile
        return profile


def _build(d: dict, path: Path, chain: tuple[str, ...]) -> DeviceProfile:
    backends = tuple(
        BackendPreference(backend=b["backend"], device=b["device"], precisions=b["precisions"],
                          layout=b["layout"], options=b.get("options", ()), note=b.get("note", ""),
                          verified=b.get("verified", True), recipe_note=b.get("recipe_note", ""))
        for b in d["backends"])
    detect = DetectHints(**(d.get("detect") or {}))
    return DeviceProfile(
        name=d["name"], description=d["description"], arch=d["arch"], cpu=d["cpu"],
        accelerators=d.get("accelerators", ()), cores=d["cores"], memory_mb=d["memory_mb"],
        threads=d["threads"], max_batch=d["max_batch"], batch_sizes=d["batch_sizes"],
        backends=backends, notes=d.get("notes", ()), extends=d.get("extends"), source=path,
        software=d.get("software", ()), detect=detect, sources=d.get("sources", ()), chain=chain)


def _unknown_message(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (f"unknown device profile {name!r}.{hint} Known profiles: {', '.join(known) or '(none found)'}. "
            f"Add folders with --profiles-dir or ${ENV_VAR}.")


def _canonical_backend(name: str) -> str:
    # every backend record's aliases, also of engines with no runtime here (trt, coral)
    from runtimes.registry import ALL_ALIASES
    key = str(name).lower()
    return ALL_ALIASES.get(key, key)


def _thaw(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# --------------------------------------------------------------------------- public API

def load_profile(name_or_path: Union[str, Path, DeviceProfile],
                 extra_dirs: Optional[Iterable[PathLike]] = None) -> DeviceProfile:
    """Load and validate one profile by name (searched) or by path to a YAML file.

    Raises ProfileError naming the file and key for invalid profiles, and listing the
    known names for an unknown one.
    """
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path
    text = str(name_or_path)
    as_path = Path(text).expanduser()
    if as_path.suffix in (".yaml", ".yml") or os.sep in text or (os.altsep and os.altsep in text):
        if not as_path.is_file():
            raise ProfileError(f"device profile file {text!r} does not exist; pass a profile name "
                               "(see `edgesdk profiles list`) or a path to a .yaml file")
        loader = _Loader(extra_dirs, first=as_path.resolve().parent)
        return loader.load(as_path)
    loader = _Loader(extra_dirs)
    return loader.load(loader.path_of(text))


def list_profiles(extra_dirs: Optional[Iterable[PathLike]] = None) -> list[DeviceProfile]:
    """Every profile on the search path, resolved and validated, sorted by name."""
    loader = _Loader(extra_dirs)
    return [loader.load(loader.index[name]) for name in loader.known()]


def profile_names(extra_dirs: Optional[Iterable[PathLike]] = None) -> list[str]:
    """Names on the search path without loading them (cheap; for completion and messages)."""
    return sorted(_index(search_path(extra_dirs)))


__all__ = ["BackendPreference", "DetectHints", "DeviceProfile", "load_profile", "list_profiles",
           "profile_names", "search_path", "shipped_dir", "PRECISIONS", "BACKENDS", "DEVICES", "LAYOUTS",
           "ARCHES", "ENV_VAR"]
