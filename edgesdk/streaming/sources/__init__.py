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
from pathlib import Path
from typing import Any, Optional, Union

from ...errors import SourceError
from .base import Source
from .images import IMAGE_SUFFIXES, ImageFolderSource, is_glob
from .opencv import CameraSource, StreamSource, VideoFileSource
from .producer import ProducerSource
from .reader import Backoff, SourceReader

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
_NAMED = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)=(.+)$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def split_name(spec: str) -> tuple[Optional[str], str]:
    """``"cam1=rtsp://..."`` -> ("cam1", "rtsp://..."); no prefix -> (None, spec)."""
    m = _NAMED.match(spec)
    if m and not _SCHEME.match(spec):
        return m.group(1), m.group(2)
    return None, spec


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
    text = str(spec)
    name, text = split_name(text)
    sid = source_id or name
    if text.isdigit():
        return CameraSource(int(text), sid or f"cam{text}", fps=fps)
    if text.startswith("/dev/video"):
        return CameraSource(text, sid or Path(text).name, fps=fps)
    m = _SCHEME.match(text)
    if m:
        scheme = m.group(1).lower()
        if scheme == "file":
            text = text[len("file://"):]
        elif scheme in STREAM_SCHEMES:
            return StreamSource(text, sid or "stream", fps=fps)
        else:
            raise SourceError(f"source {text!r}: unknown scheme {scheme!r}; streams use one of "
                              f"{', '.join(STREAM_SCHEMES)}")
    path = Path(text)
    stem = path.stem or path.name or "images"
    if is_glob(text) or path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
        return ImageFolderSource(text, sid or stem, realtime=realtime, fps=fps)
    if path.is_file():
        return VideoFileSource(path, sid or stem, realtime=realtime, fps=fps)
    raise SourceError(f"source {text!r} is not a camera index, /dev/video device, stream URL "
                      f"({', '.join(STREAM_SCHEMES[:6])}...), existing video/image file, folder or glob")


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


__all__ = ["Source", "make_source", "split_name", "unique_ids", "CameraSource", "StreamSource", "VideoFileSource",
           "ImageFolderSource", "ProducerSource", "SourceReader", "Backoff", "STREAM_SCHEMES"]
