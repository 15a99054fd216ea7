"""The fleet sections of a deployment spec, and the files `edgesdk provision` writes for them.

    broker:                                  # the device-local mosquitto, bridged upstream
      config: /etc/mosquitto/conf.d/edgesdk.conf
      persistence: /var/lib/edgesdk/mosquitto
      device_id: cam-07
      listen_port: 1883                      # loopback only
      topics: [edgesdk/#]
      service: mosquitto                     # restarted when the config changed (systemd managed)
      uplink: {host: central.example.com, port: 8883, tls: true, ca: /etc/edgesdk/ca.crt,
               cert: /etc/edgesdk/cam-07.crt, key: /etc/edgesdk/cam-07.key,
               username: cam-07, password_file: /etc/edgesdk/uplink.pass}
    mender:                                  # the edgesdk update module for the Mender client
      package: ocr-cls                       # whose install root it installs into
      modules_dir: /usr/share/mender/modules/v3
      config: /etc/edgesdk/mender.json

Parsed by `parse_broker` / `parse_mender` (errors name the file and key); `wanted_files(spec)`
is every file these sections need with its content, so drift and apply share one answer.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError
from .broker import Uplink, local_broker_config
from .mender import DEFAULT_CONFIG, DEFAULT_MODULES_DIR, MODULE_NAME, module_script

BROKER_KEYS = ("config", "persistence", "device_id", "listen_port", "topics", "service", "uplink", "run_as")
UPLINK_KEYS = ("host", "port", "tls", "ca", "cert", "key", "username", "password_file")
MENDER_KEYS = ("package", "modules_dir", "config")


@dataclass(frozen=True)
class BrokerSection:
    config: Path
    persistence: Path
    device_id: str
    uplink: Uplink
    listen_port: int = 1883
    topics: tuple[str, ...] = ("edgesdk/#",)
    service: Optional[str] = "mosquitto"
    run_as: Optional[str] = None


@dataclass(frozen=True)
class MenderSection:
    package: str
    modules_dir: Path = DEFAULT_MODULES_DIR
    config: Path = DEFAULT_CONFIG


def _mapping(data: Any, where: str, path: str, known: tuple[str, ...]) -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {path} must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - set(known))
    if unknown:
        raise ConfigError(f"{where}: {path}.{unknown[0]}: unknown key; known keys here: {', '.join(known)}")
    return data


def _need(d: dict, key: str, kind: type, where: str, path: str) -> Any:
    if not isinstance(d.get(key), kind) or isinstance(d.get(key), bool) and kind is not bool:
        raise ConfigError(f"{where}: {path}.{key}: is required ({kind.__name__})")
    return d[key]


def _read_password(path: Optional[str], where: str) -> Optional[str]:
    if path is None:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{where}: broker.uplink.password_file {path}: {exc.strerror or exc}") from exc


def parse_broker(data: Any, where: str, base: Path) -> BrokerSection:
    d = _mapping(data, where, "broker", BROKER_KEYS)
    u = _mapping(d.get("uplink"), where, "broker.uplink", UPLINK_KEYS)
    up = Uplink(_need(u, "host", str, where, "broker.uplink"), int(u.get("port", 8883)), bool(u.get("tls", True)),
                u.get("ca"), u.get("cert"), u.get("key"), u.get("username"),
                _read_password(u.get("password_file"), where))
    section = BrokerSection(base / _need(d, "config", str, where, "broker"),
                            base / _need(d, "persistence", str, where, "broker"),
                            _need(d, "device_id", str, where, "broker"), up, int(d.get("listen_port", 1883)),
                            tuple(d.get("topics") or ("edgesdk/#",)), d.get("service", "mosquitto"), d.get("run_as"))
    try:
        broker_config(section)  # every value checked now, with the file and key named
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return section


def parse_mender(data: Any, where: str, base: Path, package_names: tuple[str, ...]) -> MenderSection:
    d = _mapping(data, where, "mender", MENDER_KEYS)
    name = _need(d, "package", str, where, "mender")
    if name not in package_names:
        raise ConfigError(f"{where}: mender.package: {name!r} is not one of the spec's packages "
                          f"({', '.join(package_names)})")
    return MenderSection(name, base / d.get("modules_dir", str(DEFAULT_MODULES_DIR)),
                         base / d.get("config", str(DEFAULT_CONFIG)))


def broker_config(b: BrokerSection) -> str:
    return local_broker_config(b.uplink, b.device_id, b.persistence, topics=b.topics, listen_port=b.listen_port,
                               run_as=b.run_as)


def wanted_files(spec: Any) -> dict[Path, tuple[str, int]]:
    """path -> (content, mode) for the spec's broker and mender sections."""
    files: dict[Path, tuple[str, int]] = {}
    broker: Optional[BrokerSection] = getattr(spec, "broker", None)
    if broker is not None:
        files[broker.config] = (broker_config(broker), 0o600)
    mender: Optional[MenderSection] = getattr(spec, "mender", None)
    if mender is not None:
        pkg = next(p for p in spec.packages if p.name == mender.package)
        cfg = {"root": str(spec.package_root(pkg)), "profile": spec.profile,
               "trusted_keys": str(spec.trusted_keys) if spec.trusted_keys else None}
        files[mender.config] = (json.dumps(cfg, indent=2) + "\n", 0o644)
        python = spec.edgesdk[0] if spec.edgesdk[1:2] == ("-m",) else sys.executable
        files[mender.modules_dir / MODULE_NAME] = (module_script(python, mender.config), 0o755)
    return files


def drift(spec: Any) -> list[str]:
    out = []
    for path, (content, _mode) in wanted_files(spec).items():
        try:
            same = path.read_text() == content
        except OSError:
            out.append(f"{path} is missing")
            continue
        if not same:
            out.append(f"{path} differs from the spec")
    return out


def apply(spec: Any, dry_run: bool = False) -> tuple[list[str], bool]:
    """Write what differs; (changes, whether the broker config changed)."""
    from ..provision.fsutil import atomic_write

    changes, broker_changed = [], False
    broker: Optional[BrokerSection] = getattr(spec, "broker", None)
    for path, (content, mode) in wanted_files(spec).items():
        try:
            if path.read_text() == content:
                continue
        except OSError:
            pass
        if dry_run:
            changes.append(f"would write {path}")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, content, mode=mode)
        changes.append(f"wrote {path}")
        broker_changed |= broker is not None and path == broker.config
    if broker is not None and not dry_run:
        broker.persistence.mkdir(parents=True, exist_ok=True)
    return changes, broker_changed
