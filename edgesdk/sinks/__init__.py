"""Sinks: where results go. `make_sink(spec)` turns a ``--sink`` value into a `Sink`.

Accepted specs:
  - a callable ``fn(frame, result)``                          -> `CallbackSink`
  - ``out.jsonl`` (or ``.ndjson``)                            -> `JsonlSink` (live, line-atomic)
  - ``out.mp4`` / ``out.avi`` [``?fps=25&source=cam0``]        -> `VideoSink` (annotated, atomic)
  - ``mqtt://[user:pw@]host[:port]/topic[?qos=1&...]``        -> `MqttSink`
    (``mqtts://...?ca=ca.crt[&cert=c.crt&key=c.key]`` over TLS)
  - ``window`` or ``window:TITLE``                            -> `WindowSink`
  - ``metrics:PORT`` or ``prometheus://[user:pw@]HOST:PORT``  -> `PrometheusSink` (127.0.0.1 by default)
  - a `Sink` instance is returned as it is.
Keyword arguments go to the sink's constructor (``make_sink("out.mp4", fps=15)``).
The MQTT, Prometheus, video and window sinks import their libraries only when made.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Union
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import SinkError
from .base import AsyncSink, Sink, encode_result
from .callback import CallbackSink
from .jsonl import JsonlSink

SPEC_FORMS = ("out.jsonl", "out.mp4", "out.avi", "mqtt://HOST:PORT/TOPIC", "mqtts://HOST:PORT/TOPIC", "window",
              "metrics:PORT",
              "prometheus://HOST:PORT", "a callable(frame, result)")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
VIDEO_SUFFIXES = (".mp4", ".avi")
_LAZY = {"VideoSink": "video", "WindowSink": "window", "MqttSink": "mqtt", "PrometheusSink": "prometheus",
         "MetricsServer": "prometheus"}

__all__ = ["Sink", "AsyncSink", "CallbackSink", "JsonlSink", "make_sink", "encode_result", "SPEC_FORMS",
           *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _unknown(spec: Any, why: str = "") -> SinkError:
    return SinkError(f"unknown sink {spec!r}{': ' + why if why else ''}; accepted forms: {', '.join(SPEC_FORMS)}")


def _port(text: str, spec: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise _unknown(spec, f"port {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise _unknown(spec, f"port {port} is outside 0-65535")
    return port


def _video_options(query: str, spec: str) -> dict[str, Any]:
    allowed = {"fps": float, "source": str, "fourcc": str}
    out: dict[str, Any] = {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if key not in allowed:
            raise SinkError(f"video sink {spec!r}: unknown option {key!r}; accepted: {', '.join(allowed)}")
        try:
            out[key] = allowed[key](values[-1])
        except ValueError:
            raise SinkError(f"video sink {spec!r}: option {key}={values[-1]!r} is not valid") from None
    return out


def make_sink(spec: Union[str, os.PathLike, Callable[..., Any], Sink], **options: Any) -> Sink:
    """Build a sink from a spec (see the module doc). Raises `SinkError` for an unknown form."""
    if isinstance(spec, Sink):
        return spec
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        if callable(spec):
            return CallbackSink(spec, **options)
        raise _unknown(spec, f"a {type(spec).__name__} is neither a string nor a callable")
    s = spec.strip()
    low = s.lower()
    if not s:
        raise _unknown(spec, "empty")
    if low == "window" or low.startswith("window:"):
        from .window import WindowSink
        title = s.split(":", 1)[1] if ":" in s else ""
        return WindowSink(title=title or "EdgeSDK", **options)
    if low.startswith(("mqtt://", "mqtts://")):
        from .mqtt import MqttSink
        return MqttSink.from_url(s, **options)
    if "://" in low and low.split("://", 1)[0] in ("ws", "wss"):
        raise _unknown(spec, "MQTT over websockets is not supported; use mqtt:// or mqtts://")
    if low.startswith("metrics:") and not low.startswith("metrics://"):
        from .prometheus import PrometheusSink
        return PrometheusSink(_port(s.split(":", 1)[1], spec), **options)
    if low.startswith("prometheus://"):
        from .prometheus import PrometheusSink
        parts = urlsplit(s)
        try:
            port = parts.port
        except ValueError:
            raise _unknown(spec, "bad port") from None
        if port is None or parts.path not in ("", "/"):
            raise _unknown(spec, "write prometheus://HOST:PORT")
        from .prometheus import DEFAULT_HOST, auth_from_url
        auth = auth_from_url(unquote(parts.username or ""), unquote(parts.password or ""))
        return PrometheusSink(port, parts.hostname or DEFAULT_HOST, basic_auth=auth, **options)
    if Path(s).suffix.lower() in JSONL_SUFFIXES:
        return JsonlSink(s, **options)
    path, _, query = s.partition("?")
    if Path(path).suffix.lower() in VIDEO_SUFFIXES:
        from .video import VideoSink
        return VideoSink(path, **{**_video_options(query, spec), **options})
    raise _unknown(spec)
