"""Stream sources and `make_source(spec)`, which tells them apart.

    0, "1", "/dev/video0"                 -> CameraSource (live)
    "rtsp://...", "http://...", ...       -> StreamSource (live, reconnects)
    "clip.mp4"                            -> VideoFileSource (lossless; live with realtime)
    "frames/", "frames/*.jpg", "a.png"    -> ImageFolderSource
    a callable or an iterable of images   -> ProducerSource
    "name=SPEC"                           -> the same, with source id `name`
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from ...errors import SourceError
from .base import Source
from .images import IMAGE_SUFFIXES, ImageFolderSource, is_glob
from .opencv import CameraSource, StreamSource, VideoFileSource
from .producer import ProducerSource
from .reader import Backoff, SourceReader

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
#: what a source name may be (NAME=SPEC, the control endpoint's "id")
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_NAMED = re.compile(rf"^({NAME_PATTERN.pattern})=(.+)$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def split_name(spec: str) -> tuple[Optional[str], str]:
    """``"cam1=rtsp://..."`` -> ("cam1", "rtsp://..."); no prefix -> (None, spec)."""
    m = _NAMED.match(spec)
    if m and not _SCHEME.match(spec):
        return m.group(1), m.group(2)
    return None, spec


@dataclass(frozen=True)
class SourceKind:
    """One row of the source table: the spec form shown in help, how to recognise it, how
    to build it (text: the spec without its ``name=`` prefix; sid: that name or None)."""

    form: str
    matches: Callable[[str], bool]
    build: Callable[[str, Optional[str], bool, Optional[float]], Source]
    names_file: bool = False  # the spec is a path on this machine (relative ones need a working directory)


def _is_stream(text: str) -> bool:
    m = _SCHEME.match(text)
    return bool(m) and m.group(1).lower() in STREAM_SCHEMES


def _is_images(text: str) -> bool:
    path = Path(text)
    return is_glob(text) or path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


def _stem(text: str) -> str:
    path = Path(text)
    return path.stem or path.name or "images"


#: every source form, tried in order; the first whose `matches` says yes builds it. `--help`
#: and error messages are made from this table, so they cannot drift from what is accepted.
SOURCE_KINDS: tuple[SourceKind, ...] = (
    SourceKind("camera index (0, 1...)", str.isdigit,
               lambda t, sid, rt, fps: CameraSource(int(t), sid or f"cam{t}", fps=fps)),
    SourceKind("/dev/videoN", lambda t: t.startswith("/dev/video"),
               lambda t, sid, rt, fps: CameraSource(t, sid or Path(t).name, fps=fps)),
    SourceKind(f"stream URL ({', '.join(s + '://' for s in STREAM_SCHEMES[:6])}...)", _is_stream,
               lambda t, sid, rt, fps: StreamSource(t, sid or "stream", fps=fps)),
    SourceKind("image folder, glob or image file", _is_images,
               lambda t, sid, rt, fps: ImageFolderSource(t, sid or _stem(t), realtime=rt, fps=fps), names_file=True),
    SourceKind("video file", lambda t: Path(t).is_file(),
               lambda t, sid, rt, fps: VideoFileSource(Path(t), sid or _stem(t), realtime=rt, fps=fps),
               names_file=True),
)


def source_forms() -> str:
    """The accepted source forms, for --help and error messages."""
    return ", ".join(k.form for k in SOURCE_KINDS)


def is_relative_file(spec: str) -> bool:
    """Whether a source spec names a file or folder by a relative path (cameras, devices and
    URLs do not depend on the working directory). Decided without the file existing: a spec
    that is none of the other forms is taken as a path, as `make_source` would try it."""
    text = split_name(spec)[1]
    if text.lower().startswith("file://"):
        text = text[len("file://"):]
    elif _SCHEME.match(text):
        return False
    if any(kind.matches(text) for kind in SOURCE_KINDS if not kind.names_file):
        return False
    return not text.startswith(("/", "~"))


def make_source(spec: Union[str, int, Any], source_id: Optional[str] = None, *, realtime: bool = False,
                fps: Optional[float] = None, live: Optional[bool] = None) -> Source:
    """Build the source a spec names (see module doc); `SourceError` if it names nothing."""
    if isinstance(spec, Source):
        return spec
    if not isinstance(spec, (str, int, Path)):
        if callable(spec) or hasattr(spec, "__iter__"):
            return ProducerSource(spec, source_id or "producer", live=bool(live) or realtime, fps=fps)
        raise SourceError(f"cannot make a source from {type(spec).__name__}; pass a camera index, a path, "
                          "a URL, a glob, a callable or an iterable of images")
    if isinstance(spec, int):
        return CameraSource(spec, source_id or f"cam{spec}", fps=fps)
    name, text = split_name(str(spec))
    m = _SCHEME.match(text)
    if m and m.group(1).lower() == "file":
        text = text[len("file://"):]
    elif m and m.group(1).lower() not in STREAM_SCHEMES:
        raise SourceError(f"source {text!r}: unknown scheme {m.group(1).lower()!r}; streams use one of "
                          f"{', '.join(STREAM_SCHEMES)}")
    for kind in SOURCE_KINDS:
        if kind.matches(text):
            return kind.build(text, source_id or name, realtime, fps)
    raise SourceError(f"source {text!r} is not any of: {source_forms()} (does the file exist?)")


def unique_ids(sources: list[Source]) -> None:
    """Make source ids unique in place (two files named clip.mp4 -> clip, clip-1)."""
    seen: dict[str, int] = {}
    for src in sources:
        base = src.source_id
        if base in seen:
            seen[base] += 1
            src.source_id = f"{base}-{seen[base]}"
        else:
            seen[base] = 0


__all__ = ["Source", "make_source", "SOURCE_KINDS", "SourceKind", "source_forms", "split_name", "unique_ids",
           "is_relative_file", "CameraSource", "StreamSource", "VideoFileSource",
           "ImageFolderSource", "ProducerSource", "SourceReader", "Backoff", "STREAM_SCHEMES", "NAME_PATTERN"]
