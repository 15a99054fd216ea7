"""Prometheus metrics: `MetricsServer` (an HTTP endpoint) and `PrometheusSink` (per-result metrics).

One `MetricsServer` per port serves ``/metrics`` from its own registry (not the global
one, so several servers and tests never collide). It exposes two things:

Per result (fed by `PrometheusSink.write`, i.e. ``--sink metrics:9100``):
  - ``edgesdk_frames_total{source}`` and ``edgesdk_detections_total{source}`` (counters)
  - ``edgesdk_e2e_latency_seconds`` (histogram): ``result.meta["e2e_ms"]`` when the pipeline
    set it, else now minus the frame's capture timestamp
  - ``edgesdk_inference_latency_seconds`` (histogram): ``result.meta["infer_ms"]``
    (or ``inference_ms``), when present
  - ``edgesdk_fps`` (results per second over the last 5 s) and ``edgesdk_batch_size``
    (``result.meta["batch_size"]`` of the latest result) (gauges)

Pipeline snapshots (``server.update(stats)``, e.g. every second): each number becomes
``edgesdk_pipeline_<key>`` (a gauge; a counter when the key ends in ``_total``); a dict of
numbers becomes one metric with a ``key`` label (``{"dropped": {"cam0": 3}}`` ->
``edgesdk_pipeline_dropped{key="cam0"} 3``); deeper dicts join their keys with ``_``.
Non-numbers are ignored. The last snapshot is what a scrape sees.

`MetricsServer.shared(port)` returns the process's server on that port (creating it), so
``--metrics-port 9100`` and ``--sink metrics:9100`` can use the same endpoint.

The endpoint binds 127.0.0.1 unless told otherwise (``host="0.0.0.0"``, or
``prometheus://0.0.0.0:9100``): a scraper on the network is a decision, not a default.
``basic_auth=(user, password)`` (or ``prometheus://user:password@HOST:PORT``; the password may
come from ``EDGESDK_METRICS_PASSWORD``) answers 401 to scrapes without those credentials.
"""
from __future__ import annotations

import base64
import collections
import hmac
import os
import re
import threading
import time
from typing import Any, Iterator, Mapping, Optional

from ..errors import SinkError
from ..results import Frame, Result
from .base import Sink

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
FPS_WINDOW_S = 5.0
DEFAULT_HOST = "127.0.0.1"
PASSWORD_ENV = "EDGESDK_METRICS_PASSWORD"
Auth = Optional[tuple[str, str]]


def _import_prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as e:
        raise SinkError("metrics need prometheus-client: pip install 'edgesdk[metrics]'") from e
    return prometheus_client


def _metric_name(*parts: str) -> str:
    name = "_".join(re.sub(r"[^a-zA-Z0-9_]", "_", str(p)) for p in parts if str(p))
    return re.sub(r"_+", "_", name).strip("_")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, complex)


class _SnapshotCollector:
    """Turns the last pipeline snapshot into metric families at scrape time."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.snapshot: Mapping[str, Any] = {}

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        seen: set[str] = set()
        for name, labelled, value in self._flatten(self.snapshot, (self.prefix,)):
            counter = name.endswith("_total")
            base = name[: -len("_total")] if counter else name
            if base in seen:
                continue  # two keys that sanitise to one name: keep the first
            seen.add(base)
            doc = f"pipeline stat {name[len(self.prefix) + 1:]}"
            if labelled:
                fam = (CounterMetricFamily if counter else GaugeMetricFamily)(base, doc, labels=["key"])
                for k, v in value.items():
                    fam.add_metric([str(k)], float(v))
            else:
                fam = (CounterMetricFamily if counter else GaugeMetricFamily)(base, doc, value=float(value))
            yield fam

    def _flatten(self, d: Mapping[str, Any], path: tuple[str, ...]) -> Iterator[tuple[str, bool, Any]]:
        for key, value in d.items():
            name = _metric_name(*path, key)
            if _is_number(value):
                yield name, False, value
            elif isinstance(value, Mapping) and value:
                if all(_is_number(v) for v in value.values()):
                    yield name, True, value
                else:
                    yield from self._flatten(value, (*path, str(key)))


class _ResultMetrics:
    def __init__(self, registry: Any, prefix: str) -> None:
        pc = _import_prometheus()
        self.frames = pc.Counter(f"{prefix}_frames", "results written", ["source"], registry=registry)
        self.detections = pc.Counter(f"{prefix}_detections", "boxes/objects in results", ["source"],
                                     registry=registry)
        self.e2e = pc.Histogram(f"{prefix}_e2e_latency_seconds", "capture to sink latency",
                                buckets=LATENCY_BUCKETS, registry=registry)
        self.infer = pc.Histogram(f"{prefix}_inference_latency_seconds", "inference time of the batch",
                                  buckets=LATENCY_BUCKETS, registry=registry)
        self.batch = pc.Gauge(f"{prefix}_batch_size", "batch size of the latest result", registry=registry)
        self._times: collections.deque[float] = collections.deque(maxlen=1024)
        self._lock = threading.Lock()
        pc.Gauge(f"{prefix}_fps", f"results per second over the last {FPS_WINDOW_S:g} s",
                 registry=registry).set_function(self.fps)

    def fps(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._times and now - self._times[0] > FPS_WINDOW_S:
                self._times.popleft()
            n = len(self._times)
            if n < 2:
                return 0.0
            return (n - 1) / max(self._times[-1] - self._times[0], 1e-6)

    def observe(self, frame: Optional[Frame], result: Result) -> None:
        source = result.source_id or (frame.source_id if frame is not None else "") or "default"
        self.frames.labels(source).inc()
        if len(result):
            self.detections.labels(source).inc(len(result))
        meta = result.meta or {}
        e2e_ms = meta.get("e2e_ms")
        if _is_number(e2e_ms):
            self.e2e.observe(float(e2e_ms) / 1000.0)
        else:
            ts = result.timestamp or (frame.timestamp if frame is not None else 0.0)
            if ts > 0:
                self.e2e.observe(max(time.time() - ts, 0.0))
        infer_ms = meta.get("infer_ms", meta.get("inference_ms"))
        if _is_number(infer_ms):
            self.infer.observe(float(infer_ms) / 1000.0)
        if _is_number(meta.get("batch_size")):
            self.batch.set(float(meta["batch_size"]))
        with self._lock:
            self._times.append(time.monotonic())


class MetricsServer:
    """Serve Prometheus metrics on ``host:port`` (port 0: any free port; see `.port`).

    Raises `SinkError` when the port is taken. Stop it with `close()` (or ``with``).
    """

    _shared: dict[tuple[str, int], "MetricsServer"] = {}
    _shared_lock = threading.Lock()

    def __init__(self, port: int = 9100, host: str = DEFAULT_HOST, prefix: str = "edgesdk",
                 basic_auth: Auth = None) -> None:
        pc = _import_prometheus()
        if not 0 <= int(port) <= 65535:
            raise SinkError(f"metrics port must be within 0-65535, got {port}")
        self.host, self.prefix = host, prefix
        self.registry = pc.CollectorRegistry()
        self._snapshot = _SnapshotCollector(f"{prefix}_pipeline")
        self.registry.register(self._snapshot)
        self._results: Optional[_ResultMetrics] = None
        self._lock = threading.Lock()
        self._users = 0
        self._key: Optional[tuple[str, int]] = None
        self._auth = basic_auth
        try:
            self._httpd, self._thread = _serve(pc, int(port), host, self.registry, basic_auth)
        except OSError as e:
            raise SinkError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}; the port is probably "
                            "in use: pick another (--metrics-port) or stop what holds it") from e
        self.port: int = self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}/metrics"

    @classmethod
    def shared(cls, port: int, host: str = DEFAULT_HOST, basic_auth: Auth = None) -> "MetricsServer":
        """The server this process runs on ``host:port``, started on first use (reference-counted:
        each caller calls `close()` once; the last one stops it)."""
        with cls._shared_lock:
            server = cls._shared.get((host, int(port))) if int(port) else None
            if server is not None and basic_auth is not None and server._auth != basic_auth:
                raise SinkError(f"metrics on {host}:{port} already run with other credentials; use one set")
            if server is None:
                server = cls(port, host, basic_auth=basic_auth)
                server._key = (host, server.port)
                cls._shared[server._key] = server
            server._users += 1
            return server

    def update(self, stats: Mapping[str, Any]) -> None:
        """Publish a pipeline stats snapshot (replaces the previous one)."""
        if not isinstance(stats, Mapping):
            raise SinkError(f"MetricsServer.update takes a dict of stats, got {type(stats).__name__}")
        self._snapshot.snapshot = dict(stats)

    def observe(self, frame: Optional[Frame], result: Result) -> None:
        """Record one result (frames, detections, latencies, fps, batch size)."""
        if self._results is None:
            with self._lock:
                if self._results is None:
                    self._results = _ResultMetrics(self.registry, self.prefix)
        self._results.observe(frame, result)

    def close(self) -> None:
        with MetricsServer._shared_lock:
            if self._key is not None:
                self._users -= 1
                if self._users > 0:
                    return
                MetricsServer._shared.pop(self._key, None)
                self._key = None
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "MetricsServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class PrometheusSink(Sink):
    """Per-result metrics on a `MetricsServer` (``metrics:PORT`` or ``prometheus://HOST:PORT``)."""

    def __init__(self, port: int = 9100, host: str = DEFAULT_HOST, server: Optional[MetricsServer] = None,
                 basic_auth: Auth = None) -> None:
        super().__init__(f"prometheus://{host}:{port}" if server is None else f"prometheus://{server.host}:{server.port}")
        self.port, self.host, self.basic_auth = int(port), host, basic_auth
        self.server: Optional[MetricsServer] = server
        self._owns_server = server is None

    def _open_impl(self) -> None:
        if self.server is None:
            self.server = MetricsServer.shared(self.port, self.host, self.basic_auth)
            self.name = f"prometheus://{self.host}:{self.server.port}"

    def _write_impl(self, frame: Optional[Frame], result: Result) -> None:
        assert self.server is not None
        self.server.observe(frame, result)

    def _close_impl(self) -> None:
        if self._owns_server and self.server is not None:
            self.server.close()


def _serve(pc: Any, port: int, host: str, registry: Any, basic_auth: Auth) -> tuple[Any, threading.Thread]:
    """prometheus_client's server, behind HTTP basic auth when credentials are given."""
    if basic_auth is None:
        return pc.start_http_server(port, addr=host, registry=registry)
    from http.server import ThreadingHTTPServer

    from prometheus_client.exposition import MetricsHandler

    user, password = basic_auth
    if not user or not password:
        raise SinkError("metrics basic auth needs a non-empty user and password")
    expected = ("Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()).encode()
    base = MetricsHandler.factory(registry)

    class _AuthHandler(base):  # type: ignore[valid-type, misc]
        def do_GET(self) -> None:
            given = (self.headers.get("Authorization") or "").encode()
            if not hmac.compare_digest(given, expected):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="edgesdk metrics"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            super().do_GET()

    httpd = ThreadingHTTPServer((host, port), _AuthHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True, name="edgesdk-metrics")
    thread.start()
    return httpd, thread


def auth_from_url(username: Optional[str], password: Optional[str]) -> Auth:
    """(user, password) from a URL's user info, the password possibly from EDGESDK_METRICS_PASSWORD."""
    if not username:
        return None
    password = password or os.environ.get(PASSWORD_ENV)
    if not password:
        raise SinkError(f"metrics user {username!r} needs a password: in the URL or in {PASSWORD_ENV}")
    return username, password
