"""`MqttSink`: publish each result as JSON (``result.to_dict()``) to an MQTT broker.

URL form (what ``--sink`` takes)::

    mqtt://[user:password@]host[:port]/topic[?qos=1&client_id=cam-7&queue=1000&inflight=20&wait=5
                                             &keepalive=30&retain=0&backoff_min=0.5&backoff_max=30
                                             &close_timeout=5]
    mqtts://[user:password@]host[:8883]/topic[?ca=ca.crt&cert=client.crt&key=client.key&...]

``mqtts://`` is MQTT over TLS (port 8883 by default): the broker's certificate is verified against
``ca`` (or the system's CAs without it) including its host name; ``cert``/``key`` present a client
certificate (for brokers with ``require_certificate true``). The password can come from the
environment variable ``EDGESDK_MQTT_PASSWORD`` instead of the URL (which `ps` would show).

The topic may contain ``{source_id}`` (``mqtt://broker/cams/{source_id}/results``).

Delivery (paho-mqtt 2.x, MQTT 3.1.1, QoS 1 by default):
- A result counts as ``written`` only when the broker acknowledged it (PUBACK), not when
  it was handed to the socket.
- Every result not yet acknowledged stays in the client's bounded queue (``queue``, default
  1000: messages in flight plus messages waiting while offline). On a lost connection the
  client reconnects by itself with exponential backoff (``backoff_min`` .. ``backoff_max``
  seconds) and re-sends everything unacknowledged, in order (duplicates are possible: QoS 1
  is at-least-once). While the queue is full, new results are refused and counted as
  ``dropped`` (the oldest are kept: they may already be on the wire). So nothing is lost
  while the broker is briefly down, as long as fewer than ``queue`` results pile up.
  At most ``inflight`` (default 20, or ``queue`` if smaller) messages are on the wire
  unacknowledged at once.
- Broker unreachable at `open()`: it waits up to ``wait`` seconds (default 5) for the
  connection and then raises `SinkError`. With ``wait=0`` it returns at once and queues
  results offline until the broker appears (for devices that boot before the network).
  A broker that refuses the connection (bad credentials, not authorised) fails at once.
- `close()` waits up to ``close_timeout`` seconds for outstanding acknowledgements; what
  is still unacknowledged then is counted as ``dropped`` and logged.
- End to end, the broker must keep its subscribers' sessions across its own restart
  (mosquitto: ``persistence true``; subscribers: QoS 1, clean_session False). Without that,
  a restarted broker forgets the subscriptions, and results it acknowledged just before it
  died, or that arrive before a subscriber has subscribed again, reach nobody: measured
  with mosquitto 2.0 and persistence off, 1 to ~100 of 300 results went missing that way
  although the sink had every one acknowledged.
``stats`` adds ``pending`` (unacknowledged), ``connected`` and ``connects``.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import SinkError
from ..results import Frame, Result
from .base import Sink, encode_result

log = logging.getLogger("edgesdk.sinks")

WARN_EVERY_S = 10.0
URL_OPTIONS = ("qos", "client_id", "queue", "inflight", "wait", "keepalive", "retain", "backoff_min",
               "backoff_max", "close_timeout", "ca", "cert", "key")
PASSWORD_ENV = "EDGESDK_MQTT_PASSWORD"



def _import_paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion  # noqa: F401 (paho >= 2.0)
    except ImportError as e:
        raise SinkError("the MQTT sink needs paho-mqtt >= 2.0: pip install 'edgesdk[mqtt]'") from e
    return mqtt


class MqttSink(Sink):
    _counts_writes = False  # written = acknowledged by the broker (on_publish)

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, topic: str = "edgesdk/results", *,
                 qos: int = 1, client_id: Optional[str] = None, queue: int = 1000, inflight: Optional[int] = None,
                 wait: float = 5.0,
                 keepalive: int = 30, retain: bool = False, username: Optional[str] = None,
                 password: Optional[str] = None, backoff_min: float = 0.5, backoff_max: float = 30.0,
                 close_timeout: float = 5.0, tls: bool = False, ca: Optional[str] = None,
                 cert: Optional[str] = None, key: Optional[str] = None) -> None:
        if not topic or "+" in topic or "#" in topic:
            raise SinkError(f"MQTT sink: topic {topic!r} must be non-empty and contain no wildcards (+, #)")
        try:
            topic.format(source_id="x")
        except (KeyError, IndexError, ValueError) as e:
            raise SinkError(f"MQTT sink: topic {topic!r} may only use the placeholder {{source_id}} ({e})") from e
        if qos not in (0, 1, 2):
            raise SinkError(f"MQTT sink: qos must be 0, 1 or 2, got {qos!r} (1 gives at-least-once delivery)")
        if not 1 <= int(queue) <= 65535:  # MQTT message ids are 16-bit
            raise SinkError(f"MQTT sink: queue must be within 1-65535 messages, got {queue}")
        if not 0 < float(backoff_min) <= float(backoff_max):
            raise SinkError(f"MQTT sink: need 0 < backoff_min <= backoff_max, got {backoff_min}, {backoff_max}")
        inflight = min(20, int(queue)) if inflight is None else inflight
        if not 1 <= int(inflight) <= int(queue):
            raise SinkError(f"MQTT sink: inflight must be within 1 and queue ({queue}), got {inflight}")
        if not host or not 0 < int(port) < 65536:
            raise SinkError(f"MQTT sink: need a host and a port within 1-65535, got {host!r}:{port}")
        if float(wait) < 0 or float(close_timeout) < 0 or int(keepalive) < 1:
            raise SinkError("MQTT sink: wait and close_timeout must be >= 0 and keepalive >= 1 s")
        _check_tls_files(tls, ca, cert, key)
        super().__init__(f"{'mqtts' if tls else 'mqtt'}://{host}:{port}/{topic}")
        self.tls, self.ca, self.cert, self.key = bool(tls), ca, cert, key
        self.host, self.port, self.topic = host, int(port), topic
        self.qos, self.queue, self.inflight, self.wait = int(qos), int(queue), int(inflight), float(wait)
        self.keepalive, self.retain = int(keepalive), bool(retain)
        self.client_id = client_id or f"edgesdk-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.username, self.password = username, password
        self.backoff = (float(backoff_min), float(backoff_max))
        self.close_timeout = float(close_timeout)
        self._client: Any = None
        self._mqtt: Any = None
        self._cond = threading.Condition()
        self._connected = False
        self._connects = 0
        self._accepted = 0  # handed to the client (in flight or queued)
        self._acked = 0
        self._refused: Optional[str] = None  # CONNACK refusal (credentials, ...)
        self._last_problem = ""
        self._warned_at = -WARN_EVERY_S

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> "MqttSink":
        if "#" in url:  # urlsplit would silently cut it off as a fragment
            raise SinkError(f"MQTT sink: {url!r}: a topic to publish to cannot contain wildcards (+, #)")
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("mqtt", "mqtts"):
            raise SinkError(f"MQTT sink: {url!r} is not an mqtt:// URL (nor mqtts:// for TLS)")
        tls = parts.scheme.lower() == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as e:
            raise SinkError(f"MQTT sink: bad port in {url!r}: {e}") from e
        host = parts.hostname
        topic = unquote(parts.path.lstrip("/"))
        if not host or not topic:
            raise SinkError(f"MQTT sink: {url!r} needs a host and a topic: mqtt://HOST[:PORT]/TOPIC")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - set(URL_OPTIONS))
        if unknown:
            raise SinkError(f"MQTT sink: unknown option(s) {unknown} in {url!r}; accepted: {', '.join(URL_OPTIONS)}")
        kw: dict[str, Any] = {}
        conv = {"qos": int, "queue": int, "inflight": int, "keepalive": int, "wait": float, "backoff_min": float,
                "backoff_max": float, "close_timeout": float, "client_id": str, "ca": str, "cert": str, "key": str,
                "retain": lambda v: v.lower() in ("1", "true", "yes")}
        for key, values in query.items():
            try:
                kw[key] = conv[key](values[-1])
            except ValueError as e:
                raise SinkError(f"MQTT sink: option {key}={values[-1]!r} in {url!r} is not valid: {e}") from e
        if not tls and any(k in kw for k in ("ca", "cert", "key")):
            raise SinkError(f"MQTT sink: {url!r}: ca/cert/key are TLS options; use mqtts://")
        password = unquote(parts.password) if parts.password else os.environ.get(PASSWORD_ENV) if parts.username else None
        kw.update(username=unquote(parts.username) if parts.username else None, password=password, tls=tls)
        kw.update(overrides)
        return cls(host, port, topic, **kw)

    # ---- stats ------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, Any]:
        s = super().stats
        with self._cond:
            s.update(pending=self._accepted - self._acked, connected=self._connected, connects=self._connects)
        return s

    # ---- paho callbacks (network thread) ----------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._cond:
            if reason_code.is_failure:
                self._refused = f"the broker refused the connection: {reason_code}"
                self._last_problem = self._refused
            else:
                self._connected = True
                self._connects += 1
                if self._connects > 1:
                    log.info("MQTT sink %s: reconnected (%d unacknowledged to re-send)", self.name,
                             self._accepted - self._acked)
            self._cond.notify_all()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._cond:
            was = self._connected
            self._connected = False
            self._last_problem = f"disconnected: {reason_code}"
            self._cond.notify_all()
        if was and self.is_open:
            log.warning("MQTT sink %s: connection lost (%s); reconnecting, results are queued (up to %d)",
                        self.name, reason_code, self.queue)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        with self._cond:
            self._last_problem = "cannot connect (connection refused or host unreachable)"

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._cond:
            self._acked += 1
            self._cond.notify_all()
        self._count("written")

    # ---- sink hooks -------------------------------------------------------------------
    def _open_impl(self) -> None:
        mqtt = self._mqtt = _import_paho()
        from paho.mqtt.enums import CallbackAPIVersion

        # clean session: the unacknowledged messages live here, in the client, and are
        # re-sent by it after every reconnect (a broker restarted without persistence
        # would have forgotten a stored session anyway).
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
                             protocol=mqtt.MQTTv311)
        client.max_queued_messages_set(self.queue)
        client.max_inflight_messages_set(self.inflight)
        client.reconnect_delay_set(self.backoff[0], self.backoff[1])  # type: ignore[arg-type]
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            try:
                client.tls_set(ca_certs=self.ca, certfile=self.cert, keyfile=self.key)
            except (OSError, ValueError) as e:  # ssl.SSLError is an OSError: a file that is not PEM
                raise SinkError(f"MQTT sink: cannot use the TLS files (ca={self.ca}, cert={self.cert}, "
                                f"key={self.key}): {e}") from e
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        self._client = client
        client.connect_async(self.host, self.port, self.keepalive)  # no I/O here: the loop connects
        client.loop_start()
        if self.wait == 0:
            return
        deadline = time.monotonic() + self.wait
        with self._cond:
            while not self._connected and self._refused is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            ok, problem = self._connected, self._refused or self._last_problem or "no answer"
        if not ok:
            self._shutdown()
            if self.tls and self._refused is None:
                problem = _tls_problem(self.host, self.port, self.ca, self.cert, self.key) or problem
            raise SinkError(f"MQTT sink: cannot connect to the broker at {self.host}:{self.port} within "
                            f"{self.wait:g} s ({problem}). Check that the broker runs and the address is right, "
                            "or add ?wait=0 to start anyway and queue results until it is reachable")

    def _write_impl(self, frame: Optional[Frame], result: Result) -> None:
        mqtt = self._mqtt
        topic = self.topic.format(source_id=result.source_id or "default") if "{" in self.topic else self.topic
        info = self._client.publish(topic, encode_result(result), qos=self.qos, retain=self.retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self._count("dropped")
            now = time.monotonic()
            if now - self._warned_at >= WARN_EVERY_S:  # a full queue flaps per message: warn now and then
                self._warned_at = now
                log.warning("MQTT sink %s: queue full (%d unacknowledged, broker %s); dropping new results "
                            "(%d dropped so far)", self.name, self.queue,
                            "connected" if self._connected else "unreachable", self.stats["dropped"])
            return
        if self.qos == 0 and info.rc == mqtt.MQTT_ERR_NO_CONN:  # QoS 0 is never queued
            self._count("dropped")
            return
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise SinkError(f"MQTT sink {self.name}: publish failed: {mqtt.error_string(info.rc)}")
        with self._cond:  # QoS 0: paho calls on_publish once it is sent, QoS 1/2 on the acknowledgement
            self._accepted += 1

    def _close_impl(self) -> None:
        deadline = time.monotonic() + self.close_timeout
        with self._cond:
            while self._acked < self._accepted:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        self._shutdown()  # no callbacks after this: the count below is final
        with self._cond:
            lost = self._accepted - self._acked
        if lost > 0:
            self._count("dropped", lost)
            log.warning("MQTT sink %s: %d results were not acknowledged by the broker within %g s and are lost",
                        self.name, lost, self.close_timeout)

    def _shutdown(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()  # also ends a reconnect wait at once
        client.loop_stop()
        with self._cond:
            self._connected = False


def _check_tls_files(tls: bool, ca: Optional[str], cert: Optional[str], key: Optional[str]) -> None:
    if not tls:
        if ca or cert or key:
            raise SinkError("MQTT sink: ca/cert/key need TLS (mqtts:// or tls=True)")
        return
    if (cert is None) != (key is None):
        raise SinkError("MQTT sink: a client certificate needs both cert= and key=")
    for what, path in (("ca", ca), ("cert", cert), ("key", key)):
        if path is not None and not os.path.isfile(path):
            raise SinkError(f"MQTT sink: {what}={path}: no such file")


def _tls_problem(host: str, port: int, ca: Optional[str], cert: Optional[str], key: Optional[str]) -> str:
    """Why a TLS connection fails, from one handshake of our own (paho's loop only says 'failed')."""
    import ssl
    try:
        ctx = ssl.create_default_context(cafile=ca)
        if cert:
            ctx.load_cert_chain(cert, key)
        with socket.create_connection((host, port), timeout=3) as raw, ctx.wrap_socket(raw, server_hostname=host) as s:
            s.settimeout(1)
            try:
                s.recv(1)  # TLS 1.3 reports a refused (or missing) client certificate only here
            except socket.timeout:
                return ""
            return ""
    except ssl.SSLCertVerificationError as e:
        return (f"the broker's certificate is not trusted ({e.verify_message}); if it is self-signed or from a "
                "private CA, add ?ca=CA.crt with the certificate that signed it")
    except ssl.SSLError as e:
        hint = "" if cert else "; a broker that requires client certificates needs ?cert=...&key=..."
        return f"TLS handshake failed: {e.reason or e}{hint}"
    except OSError:
        return ""
