"""Sinks: where results go. `make_sink(spec)` turns a ``--sink`` value into a `Sink`.

Accepted specs:
  - a callable ``fn(frame, result)``                          -> `CallbackSink`
  - ``out.jsonl`` (or ``.ndjson``)                            -> `JsonlSink` (live, line-atomic)
  - ``out.mp4`` / ``out.avi`` [``?fps=25&source=cam0``]        -> `VideoSink` (annotated, atomic)
  - ``mqtt://[user:pw@]host[:port]/topic[?qos=1&...]``        -> `MqttSink`
  - ``window`` or ``window:TITLE``                            -> `WindowSink`
  - ``metrics:PORT`` or ``prometheus://HOST:PORT``            -> `PrometheusSink`
  - a `Sink` instance is returned as it is.
Keyword arguments go to the sink's constructor (``make_sink("out.mp4", fps=15)``).
The MQTT, Prometheus, video and window sinks import their libraries only when made.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import SinkError
from .base import AsyncSink, Sink, encode_result
from .callback import CallbackSink
from .jsonl import JsonlSink

JSONL_SUFFIXES = (".jsonl", ".ndjson")
VIDEO_SUFFIXES = (".mp4", ".avi")
_LAZY = {"VideoSink": "video", "WindowSink": "window", "MqttSink": "mqtt", "PrometheusSink": "prometheus",
         "MetricsServer": "prometheus"}

__all__ = ["Sink", "AsyncSink", "CallbackSink", "JsonlSink", "make_sink", "encode_result", "SPEC_FORMS", "SINK_KINDS",
           "SinkKind", "sink_forms", "is_relative_file",
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


def _window(s: str, spec: str, options: dict[str, Any]) -> Sink:
    from .window import WindowSink
    title = s.split(":", 1)[1] if ":" in s else ""
    return WindowSink(title=title or "EdgeSDK", **options)


def _mqtt(s: str, spec: str, options: dict[str, Any]) -> Sink:
    from .mqtt import MqttSink
    return MqttSink.from_url(s, **options)


def _unsupported_mqtt(s: str, spec: str, options: dict[str, Any]) -> Sink:
    raise _unknown(spec, "MQTT over websockets is not supported; use mqtt:// or mqtts://")


def _metrics(s: str, spec: str, options: dict[str, Any]) -> Sink:
    from .prometheus import PrometheusSink
    return PrometheusSink(_port(s.split(":", 1)[1], spec), **options)


def _prometheus(s: str, spec: str, options: dict[str, Any]) -> Sink:
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


def _video(s: str, spec: str, options: dict[str, Any]) -> Sink:
    from .video import VideoSink
    path, _, query = s.partition("?")
    return VideoSink(path, **{**_video_options(query, spec), **options})


@dataclass(frozen=True)
class SinkKind:
    """One row of the sink table: the form shown in help, how to recognise a spec (given
    it lower-cased), and how to build it."""

    form: str
    matches: Callable[[str], bool]
    build: Callable[[str, str, dict[str, Any]], Sink]
    listed: bool = True  # False: a row that only explains a refusal
    names_file: bool = False  # the spec is a path on this machine (relative ones need a working directory)


#: every string sink form, tried in order; `--help` and errors are made from it.
SINK_KINDS: tuple[SinkKind, ...] = (
    SinkKind("out.jsonl", lambda low: "://" not in low and Path(low).suffix in JSONL_SUFFIXES,
             lambda s, spec, o: JsonlSink(s, **o), names_file=True),
    SinkKind("out.mp4|out.avi[?fps=F&source=ID&fourcc=XXXX]",
             lambda low: "://" not in low and Path(low.partition("?")[0]).suffix in VIDEO_SUFFIXES, _video,
             names_file=True),
    SinkKind("window[:TITLE]", lambda low: low == "window" or low.startswith("window:"), _window),
    SinkKind("mqtt://[USER:PW@]HOST[:PORT]/TOPIC", lambda low: low.startswith("mqtt://"), _mqtt),
    SinkKind("mqtts://[USER:PW@]HOST[:PORT]/TOPIC[?ca=F&cert=F&key=F]", lambda low: low.startswith("mqtts://"), _mqtt),
    SinkKind("ws", lambda low: "://" in low and low.split("://", 1)[0] in ("ws", "wss"),
             _unsupported_mqtt, listed=False),
    SinkKind("metrics:PORT", lambda low: low.startswith("metrics:") and not low.startswith("metrics://"), _metrics),
    SinkKind("prometheus://[USER:PW@]HOST:PORT", lambda low: low.startswith("prometheus://"), _prometheus),
)
SPEC_FORMS = tuple(k.form for k in SINK_KINDS if k.listed) + ("a callable(frame, result)",)


def sink_forms() -> str:
    """The accepted sink forms, for --help and error messages."""
    return ", ".join(SPEC_FORMS)


def is_relative_file(spec: str) -> bool:
    """Whether a sink spec names a file by a relative path (windows, brokers and metrics
    ports do not depend on the working directory); a spec of no known form counts as a path."""
    s = spec.strip()
    kind = next((k for k in SINK_KINDS if k.matches(s.lower())), None)
    if kind is not None and not kind.names_file:
        return False
    return "://" not in s and not s.startswith(("/", "~"))


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
    if not s:
        raise _unknown(spec, "empty")
    for kind in SINK_KINDS:
        if kind.matches(s.lower()):
            return kind.build(s, spec, options)
    raise _unknown(spec)
