"""The device-local mosquitto: results land on disk on the device, a bridge forwards them upstream.

    camera -> MqttSink (QoS 1) -> local mosquitto 127.0.0.1:1883 (persistence on disk)
           -> bridge (QoS 1, clean session off, queued while the uplink is down) -> central broker

The local broker acknowledges a result once it holds it; its bridge re-sends whatever the
central broker has not acknowledged, after an uplink outage or after the local broker itself
restarted (its queue is in `persistence_location`, saved on every change with
`autosave_on_changes`). The central side should keep its subscribers' sessions too
(mosquitto `persistence true`; subscribers QoS 1, clean session off).

`local_broker_config()` writes that config; `write_local_broker_config()` puts it in place
atomically (what `edgesdk provision` calls for a spec's `broker:` section).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import ConfigError
from ..provision.fsutil import atomic_write

PathLike = Union[str, Path]
_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass
class Uplink:
    """Where the bridge connects and how it proves who it is."""

    host: str
    port: int = 8883
    tls: bool = True
    ca: Optional[str] = None  # CA that signed the central broker's certificate (system CAs without it)
    cert: Optional[str] = None  # client certificate (central `require_certificate true`)
    key: Optional[str] = None
    username: Optional[str] = None
    password: Optional[str] = None


def _check(uplink: Uplink, device_id: str, topics: Sequence[str], listen_port: int) -> None:
    if not _ID.fullmatch(device_id):
        raise ConfigError(f"broker: device id {device_id!r} must be 1-64 of letters, digits, _ . -")
    if not uplink.host or not 0 < int(uplink.port) < 65536 or not 0 < int(listen_port) < 65536:
        raise ConfigError(f"broker: need an uplink host and ports within 1-65535 (got {uplink.host!r}:{uplink.port}, "
                          f"listen {listen_port})")
    if (uplink.cert is None) != (uplink.key is None):
        raise ConfigError("broker: a client certificate for the uplink needs both cert and key")
    if not uplink.tls and (uplink.ca or uplink.cert):
        raise ConfigError("broker: ca/cert/key are for a TLS uplink (tls: true)")
    if uplink.password is not None and uplink.username is None:
        raise ConfigError("broker: an uplink password needs a username")
    for t in topics:
        if not t or any(c in t for c in " \n\r\t"):
            raise ConfigError(f"broker: topic pattern {t!r} must be non-empty without spaces")
    if not topics:
        raise ConfigError("broker: name at least one topic pattern to forward (e.g. edgesdk/#)")


def local_broker_config(uplink: Uplink, device_id: str, persistence_dir: PathLike,
                        topics: Sequence[str] = ("edgesdk/#",), listen_port: int = 1883,
                        max_queued: int = 100000, run_as: Optional[str] = None,
                        log_file: Optional[PathLike] = None) -> str:
    """mosquitto.conf for the device: a loopback listener, persistence, and a QoS 1 bridge upstream."""
    _check(uplink, device_id, topics, listen_port)
    lines = [
        "# written by edgesdk (fleet.broker); edits are overwritten by `edgesdk provision`",
        "per_listener_settings false",
        f"listener {int(listen_port)} 127.0.0.1",  # loopback only: cameras on this device publish here
        "allow_anonymous true",
        "persistence true", f"persistence_location {Path(persistence_dir).absolute()}/",
        "autosave_on_changes true", "autosave_interval 1",  # the queue reaches the disk at once
        f"max_queued_messages {int(max_queued)}", "max_inflight_messages 20", "queue_qos0_messages false",
    ]
    if run_as:
        lines.append(f"user {run_as}")
    # stderr (the journal under systemd) unless a file is named; not every connection, which a
    # busy device would write thousands of times a day
    lines += [f"log_dest file {log_file}" if log_file else "log_dest stderr",
              "log_type error", "log_type warning", "log_type notice", "connection_messages false"]
    lines += [
        "", f"connection edgesdk-uplink-{device_id}", f"address {uplink.host}:{int(uplink.port)}",
        f"remote_clientid edgesdk-bridge-{device_id}", "cleansession false", "bridge_protocol_version mqttv311",
        "restart_timeout 1 30", "keepalive_interval 30", "try_private true", "notifications false",
        "bridge_attempt_unsubscribe false", "start_type automatic",
    ]
    lines += [f"topic {t} out 1" for t in topics]
    if uplink.tls:
        lines.append(f"bridge_cafile {uplink.ca}" if uplink.ca else "bridge_capath /etc/ssl/certs")
        if uplink.cert:
            lines += [f"bridge_certfile {uplink.cert}", f"bridge_keyfile {uplink.key}"]
        lines.append("bridge_insecure false")
    if uplink.username is not None:
        lines.append(f"remote_username {uplink.username}")
        if uplink.password is not None:
            lines.append(f"remote_password {uplink.password}")
    return "\n".join(lines) + "\n"


def write_local_broker_config(path: PathLike, uplink: Uplink, device_id: str, persistence_dir: PathLike,
                              **options) -> bool:
    """Write the config (mode 0600: it may hold the uplink password); True when it changed."""
    text = local_broker_config(uplink, device_id, persistence_dir, **options)
    p = Path(path)
    Path(persistence_dir).mkdir(parents=True, exist_ok=True)
    if p.is_file() and p.read_text() == text:
        return False
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(p, text, mode=0o600)
    return True
