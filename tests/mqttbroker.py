"""A real mosquitto broker for tests, on a free loopback port, plus a QoS 1 subscriber.

    with MosquittoBroker() as broker:            # 127.0.0.1:<free port>, persistence off
        broker.stop(); broker.start()            # same port again
        broker.pause(); broker.kill()            # SIGSTOP / SIGKILL: messages never acknowledged

``persistence=True`` keeps the broker's state (subscriber sessions and what is queued for
them) in the test's temporary folder across `stop()`/`start()`, like a deployed broker;
`save()` (SIGUSR1) writes it to disk now, so it survives even a `kill()`.
mosquitto comes from tools/install_system_deps.sh; `find_mosquitto()` is None without it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


def find_mosquitto() -> Optional[str]:
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((c for c in CANDIDATES if os.access(c, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class MosquittoBroker:
    def __init__(self, port: Optional[int] = None, persistence: bool = False, extra_config: str = "",
                 workdir: Optional[Path] = None, anonymous: bool = True, tls: Any = None,
                 users: Optional[dict] = None, require_certificate: bool = False, config: Optional[str] = None) -> None:
        """`tls`: (ca_cert_path, server Pair) from tests/certs.py for a TLS listener; `users`: a password
        file; `require_certificate`: clients must present a certificate signed by the CA (its CN is
        the username); `config`: a whole config of our own (e.g. edgesdk.fleet.broker's)."""
        exe = find_mosquitto()
        if exe is None:
            raise RuntimeError("mosquitto is not installed (run tools/install_system_deps.sh)")
        self.exe = exe
        self.port = port or free_port()
        self.persistence = persistence
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="mosquitto-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o777)  # mosquitto started as root drops to its own user
        self.log = self.dir / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {'true' if anonymous else 'false'}",
                 *self._security(tls, users, require_certificate),
                 "max_queued_messages 100000", "max_inflight_messages 100",
                 f"persistence {'true' if persistence else 'false'}",
                 f"persistence_location {self.dir}/", "persistence_file broker.db",
                 "autosave_interval 3600", f"log_dest file {self.log}", "log_type error",
                 "log_type warning", "log_type notice", "log_type information"]
        if os.geteuid() == 0:
            lines.append("user root")  # keep root, so the files in our folder stay writable
        self.conf = self.dir / "mosquitto.conf"
        # a config of our own logs to our file too: stderr is a pipe nobody reads, and a full pipe
        # stops mosquitto dead (seen with 50 devices connecting)
        own = config + f"\nlog_dest file {self.log}\n" if config is not None else None
        self.conf.write_text(own if own is not None else "\n".join(lines) + "\n" + extra_config)
        self.proc: Optional[subprocess.Popen] = None

    def _security(self, tls: Any, users: Optional[dict], require_certificate: bool) -> list[str]:
        lines = []
        if tls is not None:
            ca, server = tls
            lines += [f"cafile {ca}", f"certfile {server.cert}", f"keyfile {server.key}"]
            if require_certificate:
                lines += ["require_certificate true", "use_identity_as_username true"]
        if users:
            path = self.dir / "passwd"
            path.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(path)], check=True, capture_output=True)  # hashes in place
            path.chmod(0o644)
            lines.append(f"password_file {path}")
        return lines

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> "MosquittoBroker":
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._stderr = open(self.dir / "stderr.log", "ab")  # a file: a pipe nobody drains would block it
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=self._stderr)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.dir / "stderr.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}\n{self.tail_log()}")
            if port_open(self.port):
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port} within {timeout} s\n{self.tail_log()}")

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: a clean shutdown (with persistence, the state is saved)."""
        if self.proc is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap()

    def kill(self) -> None:
        """SIGKILL: the broker vanishes; whatever it had not saved is gone."""
        if self.proc is None:
            return
        self._signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reap()

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is read or acknowledged."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def save(self, timeout: float = 5.0) -> None:
        """SIGUSR1: write the persistence database now (persistence=True only)."""
        db = self.dir / "broker.db"
        before = db.stat().st_mtime_ns if db.exists() else 0
        self._signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if db.exists() and db.stat().st_mtime_ns != before:
                time.sleep(0.05)
                return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not save its database")

    def restart(self) -> None:
        self.stop()
        self.start()

    def _reap(self) -> None:
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()
            self._stderr = None
        self.proc = None
        deadline = time.monotonic() + 5
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def tail_log(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "MosquittoBroker":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Subscriber:
    """QoS 1 subscriber with a persistent session (clean_session False) that re-subscribes on
    every connect and records every JSON payload it receives."""

    def __init__(self, port: int, topic: str, client_id: str = "test-subscriber", ca: Any = None,
                 cert: Any = None, key: Any = None, username: Optional[str] = None,
                 password: Optional[str] = None, key_field: str = "frame_index") -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.topic = topic
        self.messages: list[dict] = []
        self.cond = threading.Condition()
        self.connects = 0
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                        protocol=mqtt.MQTTv311)
        c.reconnect_delay_set(0.05, 0.5)  # type: ignore[arg-type]
        if ca is not None:
            c.tls_set(ca_certs=str(ca), certfile=str(cert) if cert else None, keyfile=str(key) if key else None)
        if username is not None:
            c.username_pw_set(username, password)
        self.key_field = key_field
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self._subscribed = threading.Event()
        self.client = c
        c.connect_async("127.0.0.1", port, keepalive=10)
        c.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError(f"subscriber could not subscribe on 127.0.0.1:{port}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            self.connects += 1
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, *args: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.cond:
            self.messages.append(json.loads(msg.payload))
            self.cond.notify_all()

    def ids(self) -> list[int]:
        with self.cond:
            return [m[self.key_field] for m in self.messages]

    def wait_for(self, ids: set[int], timeout: float = 15.0) -> set[int]:
        """Wait until every id in ``ids`` arrived; returns the ones still missing."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                missing = ids - {m[self.key_field] for m in self.messages}
                left = deadline - time.monotonic()
                if not missing or left <= 0:
                    return missing
                self.cond.wait(min(left, 0.5))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
