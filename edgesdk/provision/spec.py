"""Deployment specs: one YAML file saying what a device runs.

    profile: x86-amx-cpu              # optional; health checks use its preferred backend
    root: /var/lib/edgesdk            # each package installs into ROOT/<name>
    trusted_keys: /etc/edgesdk/keys   # directory of *.pub keys
    allow_unsigned: false             # development only
    keep: 3                           # releases kept per package
    user: edgesdk                     # the service's User= (and optional group:)
    edgesdk: /usr/local/bin/edgesdk   # optional; default: this Python's `-m edgesdk`
    systemd:
      unit_dir: /etc/systemd/system
      manage: auto                    # auto | true | false: daemon-reload/enable/restart via systemctl
    packages:
      - name: ocr-cls
        url: https://updates.example.com/ocr-cls-1.2.0.edgepkg   # or path: (relative to this file)
        sha256: 3f2a...                                          # required with url
        allow_downgrade: false
        allow_reinstall: false        # accept the current version with different content
        run:                          # optional: a systemd service running `edgesdk run --spec
                                      # ROOT/<name>/stream.yaml`, a file provision writes from this
                                      # section; sources edited there apply without a restart
          sources: [rtsp://127.0.0.1:8554/live]  # relative paths: to this file's folder (the
                                      # service's WorkingDirectory); kept verbatim
          batching: adaptive          # none | fixed | adaptive
          batch: 4
          max_wait_ms: 20
          slo_ms: 50
          sinks: [/var/lib/edgesdk/ocr.jsonl, "mqtt://127.0.0.1:1883/ocr"]
          then: [ocr-rec]             # cascade (`--then`): packages of this spec (their installed
                                      # bundle) or bundle folders (relative to this file), in order
          gate: change                # change-gated inference (with gate_threshold, gate_max_age_s)
          replicas: 2                 # engine instances (at most the CPU cores)
          require_all_sources: false  # true: a source that cannot be opened stops the start; by
                                      # default it ends as failed (exit 9 at the run's end) and the
                                      # others run
          reconnect_attempts: 10      # streams/cameras: end as failed after 10 failed attempts
                                      # in a row (default: keep trying)
          metrics_port: 9100
          args: []                    # more options for `edgesdk run --spec` (--report, --control...)
          environment: {OMP_NUM_THREADS: "2"}

Optional fleet sections, `broker:` (the device-local mosquitto bridged upstream) and `mender:`
(the edgesdk update module), are parsed by `edgesdk.fleet.provisioning`, which documents them.

Every error names the file and the key (e.g. `packages[0].run.batching`).
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union


from ..errors import ConfigError
from ..yamlfile import read_yaml

PathLike = Union[str, Path]
BATCHING = ("none", "fixed", "adaptive")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,47}$")
MAX_BATCH = 4096
#: allowed ranges of the numeric run options, in milliseconds: up to a minute of waiting, an hour of budget
NUMBER_RANGES = {"max_wait_ms": (0.0, True, 60_000.0), "slo_ms": (0.0, False, 3_600_000.0)}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: options of `edgesdk run` that may come with --spec (how to watch the run, not what it runs;
#: edgesdk.cli.run.SPEC_OVERRIDES, checked by a test): what run.args may hold
ARGS_WITH_SPEC = ("--duration", "--status", "--no-status", "--report", "--control", "--metrics-port",
                  "--max-frames", "--reload", "--no-reload", "--backend", "--profile")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\$?$")


@dataclass(frozen=True)
class RunSpec:
    sources: tuple[str, ...]
    sinks: tuple[str, ...] = ()
    batching: str = "none"
    batch: Optional[int] = None
    max_wait_ms: Optional[float] = None
    slo_ms: Optional[float] = None
    metrics_port: Optional[int] = None
    args: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    #: cascade stages: package names of this spec or bundle paths (made absolute)
    then: tuple[str, ...] = ()
    gate: Optional[str] = None
    gate_threshold: Optional[float] = None
    gate_max_age_s: Optional[float] = None
    replicas: Optional[int] = None
    #: fail-fast: one source that cannot be opened stops the start (default: it fails alone)
    require_all_sources: bool = False
    #: streams and cameras end as failed after this many failed attempts in a row (None: keep trying)
    reconnect_attempts: Optional[int] = None


@dataclass(frozen=True)
class PackageSpec:
    name: str
    path: Optional[Path] = None
    url: Optional[str] = None
    sha256: Optional[str] = None
    allow_downgrade: bool = False
    allow_reinstall: bool = False
    run: Optional[RunSpec] = None

    @property
    def source(self) -> str:
        return self.url or str(self.path)


@dataclass(frozen=True)
class DeploymentSpec:
    root: Path
    packages: tuple[PackageSpec, ...]
    trusted_keys: Optional[Path] = None
    allow_unsigned: bool = False
    profile: Optional[str] = None
    keep: int = 3
    user: str = "edgesdk"
    group: Optional[str] = None
    edgesdk: tuple[str, ...] = field(default_factory=lambda: (sys.executable, "-m", "edgesdk"))
    unit_dir: Path = Path("/etc/systemd/system")
    manage: str = "auto"
    source: Optional[Path] = None
    broker: Any = None  # edgesdk.fleet.provisioning.BrokerSection
    mender: Any = None  # edgesdk.fleet.provisioning.MenderSection
    #: what relative paths in the spec are relative to (the spec file's folder): the services'
    #: WorkingDirectory, so that relative sources and sinks, kept verbatim, mean the same there
    base: Optional[Path] = None

    def package_root(self, pkg: PackageSpec) -> Path:
        return self.root / pkg.name


class _Keys:
    """Reads one mapping, naming the key path in every error and refusing unknown keys."""

    def __init__(self, data: Any, where: str, path: str, known: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: {path or 'the top level'} must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(map(str, data)) - set(known))
        if unknown:
            raise ConfigError(f"{where}: {self._key(path, unknown[0])}: unknown key; known keys here: "
                              f"{', '.join(known)}")
        self.data, self.where, self.path = data, where, path

    @staticmethod
    def _key(path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {self._key(self.path, key)}: {message}")

    def get(self, key: str, kind: Union[type, tuple], default: Any = None, required: bool = False) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.error(key, "is required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(key, f"must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            raise self.error(key, f"must be {' or '.join(k.__name__ for k in kinds)}, got {type(value).__name__} "
                                  f"{value!r}")
        if isinstance(value, str) and _CONTROL.search(value):
            raise self.error(key, f"must be one line without control characters, got {value!r}")
        return value

    def number(self, key: str, low: float, low_ok: bool, high: float) -> Optional[float]:
        """A finite number from `low` (included when `low_ok`) to `high`: YAML's .inf and .nan are refused."""
        value = self.get(key, (int, float))
        if value is None:
            return None
        if not math.isfinite(value):
            raise self.error(key, f"must be a finite number, got {value!r}")
        if value < low or (value == low and not low_ok) or value > high:
            raise self.error(key, f"must be {'>=' if low_ok else '>'} {low:g} and <= {high:g}, got {value!r}")
        return value

    def strings(self, key: str, required: bool = False) -> tuple[str, ...]:
        value = self.get(key, (list, str), [], required)
        items = [value] if isinstance(value, str) else value
        for i, item in enumerate(items):
            if not isinstance(item, (str, int, float)) or isinstance(item, bool) or _CONTROL.search(str(item)):
                raise self.error(f"{key}[{i}]", f"must be a one-line string, got {item!r}")
        if required and not items:
            raise self.error(key, "must list at least one entry")
        return tuple(str(i) for i in items)


def _path(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def _run_extras(r: "_Keys", base: Path) -> dict[str, Any]:
    """The cascade, gate and replicas keys of a run section, checked like `edgesdk run` checks them."""
    gate = r.get("gate", str)
    if gate is not None and gate not in ("none", "change"):
        raise r.error("gate", f"must be none or change, got {gate!r}")
    threshold = r.number("gate_threshold", 0.0, True, 1.0)
    max_age = r.number("gate_max_age_s", 0.0, False, 86_400.0)
    if (threshold is not None or max_age is not None) and gate != "change":
        raise r.error("gate", "must be change when gate_threshold or gate_max_age_s is given")
    replicas = r.get("replicas", int)
    if replicas is not None and replicas < 1:
        raise r.error("replicas", f"must be >= 1, got {replicas}")
    then = tuple(t if _NAME.match(t) and not Path(t).is_absolute() and not (base / t).exists()
                 else str(_path(t, base)) for t in r.strings("then"))
    return {"gate": gate, "gate_threshold": threshold, "gate_max_age_s": max_age, "replicas": replicas,
            "then": then, "require_all_sources": r.get("require_all_sources", bool, False),
            "reconnect_attempts": _at_least_one(r, "reconnect_attempts")}


def _at_least_one(r: "_Keys", key: str) -> Optional[int]:
    value = r.get(key, int)
    if value is not None and value < 1:
        raise r.error(key, f"must be >= 1, got {value}")
    return value


def _run(data: Any, where: str, path: str, base: Optional[Path] = None) -> RunSpec:
    r = _Keys(data, where, path, ("sources", "sinks", "batching", "batch", "max_wait_ms", "slo_ms",
                                  "metrics_port", "args", "environment", "then", "gate", "gate_threshold",
                                  "gate_max_age_s", "replicas", "require_all_sources",
                                  "reconnect_attempts"))
    batching = r.get("batching", str, "none")
    if batching not in BATCHING:
        raise r.error("batching", f"must be one of {', '.join(BATCHING)}, got {batching!r}")
    batch = r.get("batch", int)
    if batch is not None and batch < 1:
        raise r.error("batch", f"must be >= 1, got {batch}")
    if batching == "fixed" and batch is None:
        raise r.error("batch", "is required when batching is 'fixed'")
    if batch is not None and batch > MAX_BATCH:
        raise r.error("batch", f"must be <= {MAX_BATCH}, got {batch}")
    numbers = {key: r.number(key, *bounds) for key, bounds in NUMBER_RANGES.items()}
    port = r.get("metrics_port", int)
    if port is not None and not 0 < port < 65536:
        raise r.error("metrics_port", f"must be a TCP port (1-65535), got {port}")
    env = r.get("environment", dict, {})
    for k, v in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(k)) or isinstance(v, (dict, list)) \
                or _CONTROL.search(str(v)):
            raise r.error(f"environment.{k}", "must be NAME: one-line value")
    args = r.strings("args")
    for i, arg in enumerate(args):
        if arg.startswith("-") and arg.split("=", 1)[0] not in ARGS_WITH_SPEC:
            raise r.error(f"args[{i}]", f"{arg!r}: the service runs `edgesdk run --spec` on the stream spec this "
                          "section becomes, which takes only " + ", ".join(ARGS_WITH_SPEC) + "; sources, sinks "
                          "and batching belong in this run section")
    return RunSpec(sources=r.strings("sources", required=True), sinks=r.strings("sinks"), batching=batching,
                   batch=batch, metrics_port=port, args=args,
                   environment=tuple((str(k), str(v)) for k, v in env.items()), **numbers,
                   **_run_extras(r, base or Path.cwd()))


def _package(data: Any, where: str, path: str, base: Path) -> PackageSpec:
    p = _Keys(data, where, path, ("name", "path", "url", "sha256", "allow_downgrade", "allow_reinstall",
                                            "run"))
    name = p.get("name", str, required=True)
    if not _NAME.match(name):
        raise p.error("name", f"{name!r} must be 1-48 of a-z 0-9 _ . - starting with a letter or digit")
    local, url = p.get("path", str), p.get("url", str)
    if (local is None) == (url is None):
        raise p.error("path", "give exactly one of path: (a package file) or url: (http/https)")
    if url is not None and not url.startswith(("http://", "https://")):
        raise p.error("url", f"must start with http:// or https://, got {url!r}")
    sha = p.get("sha256", str)
    if sha is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
        raise p.error("sha256", "must be 64 hex digits (sha256sum of the package file)")
    if url is not None and sha is None:
        raise p.error("sha256", "is required with url: (the download is checked against it)")
    run = _run(p.data["run"], where, f"{path}.run", base) if p.data.get("run") is not None else None
    return PackageSpec(name=name, path=_path(local, base) if local else None, url=url,
                       sha256=sha.lower() if sha else None,
                       allow_downgrade=p.get("allow_downgrade", bool, False),
                       allow_reinstall=p.get("allow_reinstall", bool, False), run=run)


def _check_profile(top: _Keys, profile: str, base: Path) -> str:
    """The profile as the device will name it (a file path made absolute), after loading it once."""
    from ..errors import ProfileError
    from ..profiles import load_profile
    if profile.endswith((".yaml", ".yml")):
        profile = str(_path(profile, base))
    try:
        load_profile(profile)
    except ProfileError as exc:
        raise top.error("profile", str(exc)) from exc
    return profile


def parse_spec(data: Any, where: str = "spec", base: Optional[Path] = None) -> DeploymentSpec:
    base = base or Path.cwd()
    top = _Keys(data, where, "", ("profile", "root", "trusted_keys", "allow_unsigned", "keep", "user", "group",
                                  "edgesdk", "systemd", "packages", "broker", "mender"))
    root = _path(top.get("root", str, required=True), base)
    allow_unsigned = top.get("allow_unsigned", bool, False)
    keys = top.get("trusted_keys", str)
    if keys is None and not allow_unsigned:
        raise top.error("trusted_keys", "is required (a directory of trusted *.pub keys) unless allow_unsigned: true")
    keep = top.get("keep", int, 3)
    if keep < 1:
        raise top.error("keep", f"must be >= 1, got {keep}")
    user = top.get("user", str, "edgesdk")
    group = top.get("group", str)
    for key, value in (("user", user), ("group", group)):
        if value is not None and not _USER.match(value):
            raise top.error(key, f"{value!r} is not a valid user/group name")
    edgesdk = top.get("edgesdk", (str, list))
    if isinstance(edgesdk, list) and not all(isinstance(a, str) and a and not _CONTROL.search(a) for a in edgesdk):
        raise top.error("edgesdk", "must list one-line strings (the program and its first arguments)")
    command = tuple(edgesdk) if isinstance(edgesdk, list) else ((edgesdk,) if edgesdk else
                                                                (sys.executable, "-m", "edgesdk"))
    sysd = _Keys(top.data.get("systemd") or {}, where, "systemd", ("unit_dir", "manage"))
    manage = sysd.get("manage", (bool, str), "auto")
    if manage not in (True, False, "auto"):
        raise sysd.error("manage", f"must be auto, true or false, got {manage!r}")
    packages = top.get("packages", list, required=True)
    if not packages:
        raise top.error("packages", "must list at least one package")
    pkgs = tuple(_package(d, where, f"packages[{i}]", base) for i, d in enumerate(packages))
    seen: set[str] = set()
    for i, pkg in enumerate(pkgs):
        if pkg.name in seen:
            raise ConfigError(f"{where}: packages[{i}].name: {pkg.name!r} is used twice")
        seen.add(pkg.name)
    _check_then(pkgs, where)
    profile = top.get("profile", str)
    if profile is not None:
        profile = _check_profile(top, profile, base)
    broker, mender = _fleet_sections(top.data, where, base, tuple(p.name for p in pkgs))
    return DeploymentSpec(
        broker=broker, mender=mender, root=root, packages=pkgs, trusted_keys=_path(keys, base) if keys else None, allow_unsigned=allow_unsigned,
        profile=profile, keep=keep, user=user, group=group, edgesdk=command,
        unit_dir=_path(sysd.get("unit_dir", str, "/etc/systemd/system"), base),
        manage={True: "true", False: "false"}.get(manage, manage), source=None, base=base.absolute())


def _check_then(pkgs: tuple[PackageSpec, ...], where: str) -> None:
    """Each cascade stage is another package of this spec or a bundle folder that exists."""
    names = {p.name for p in pkgs}
    for i, pkg in enumerate(pkgs):
        for j, stage in enumerate(pkg.run.then if pkg.run else ()):
            if stage == pkg.name:
                raise ConfigError(f"{where}: packages[{i}].run.then[{j}]: {stage!r} is this package itself")
            if stage not in names and not Path(stage).is_dir():
                raise ConfigError(f"{where}: packages[{i}].run.then[{j}]: {stage!r} is neither a package of this "
                                  f"spec ({', '.join(sorted(names))}) nor a bundle folder")


def _fleet_sections(data: dict, where: str, base: Path, names: tuple[str, ...]) -> tuple[Any, Any]:
    if data.get("broker") is None and data.get("mender") is None:
        return None, None
    from ..fleet.provisioning import parse_broker, parse_mender  # only specs that use them need the fleet code
    broker = parse_broker(data["broker"], where, base) if data.get("broker") is not None else None
    mender = parse_mender(data["mender"], where, base, names) if data.get("mender") is not None else None
    return broker, mender


def load_spec(path: PathLike) -> DeploymentSpec:
    path = Path(path)
    data = read_yaml(path, "deployment spec")
    spec = parse_spec(data, str(path), path.parent.absolute())
    return DeploymentSpec(**{**spec.__dict__, "source": path.absolute()})
