"""`VideoSink`: an annotated video file (.mp4 with mp4v, .avi with MJPG).

No half-written output: frames go to a hidden temporary file beside the target
(``.NAME.XXXX.partial.mp4``) that is renamed into place by `close()`. `abort()` (or leaving
a ``with`` block by an exception) deletes it, and a run that wrote no frame leaves no file.

Size: the first frame's; later frames of another size are resized to it.
Frame rate, first that applies: the ``fps`` argument; ``frame.meta["fps"]`` (a source's
native rate, e.g. a video file read as fast as possible); the capture timestamps of the
first frames (up to 30 frames or 1 s are held back to measure it); 30.
"""
from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

from ..annotate import Annotator, default_annotator
from ..errors import SinkError
from ..results import Frame, Result
from .base import Sink

log = logging.getLogger("edgesdk.sinks")

FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}
DEFAULT_FPS = 30.0
PROBE_FRAMES = 30  # frames held back at most to measure the frame rate
PROBE_SECONDS = 1.0


def _to_bgr(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise SinkError(f"video sink: frames must be uint8 images, got dtype {img.dtype}")
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return np.ascontiguousarray(img).copy()  # annotators draw in place: never on the source's buffer
    raise SinkError(f"video sink: frames must be HxW, HxWx3 or HxWx4 images, got shape {img.shape}")


class VideoSink(Sink):
    """Write annotated frames to ``path``.

    Args:
        path: .mp4 or .avi (another suffix needs ``fourcc``).
        fps: frames per second of the file (None: see the module doc).
        fourcc: four-character codec code (default by suffix: mp4v, MJPG).
        annotator: what to draw (default: `edgesdk.annotate.default_annotator`); False: raw frames.
        source: only write frames of this source id (one file per camera).
    """

    def __init__(self, path: Union[str, Path], fps: Optional[float] = None, fourcc: Optional[str] = None,
                 annotator: Union[Annotator, None, bool] = None, source: Optional[str] = None) -> None:
        super().__init__(str(path))
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if fourcc is None and suffix not in FOURCC:
            raise SinkError(f"video sink {str(path)!r}: unknown video suffix {suffix!r}; use one of "
                            f"{sorted(FOURCC)} or pass fourcc=")
        if fourcc is not None and len(fourcc) != 4:
            raise SinkError(f"video sink: fourcc must be 4 characters (e.g. 'mp4v'), got {fourcc!r}")
        if fps is not None and not (0 < float(fps) <= 1000):
            raise SinkError(f"video sink: fps must be within (0, 1000], got {fps}")
        self.fps = float(fps) if fps is not None else None
        self.fourcc = fourcc or FOURCC[suffix]
        self.annotator: Optional[Annotator] = (None if annotator is False
                                               else default_annotator() if annotator in (None, True)
                                               else annotator)  # type: ignore[assignment]
        self.source = source
        self.size: Optional[tuple[int, int]] = None  # (width, height)
        self.frames = 0
        self._tmp: Optional[Path] = None
        self._writer: Optional[cv2.VideoWriter] = None
        self._pending: list[tuple[float, np.ndarray]] = []  # held back while measuring fps

    def _open_impl(self) -> None:
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"video sink: cannot create folder {str(parent)!r}: {e.strerror or e}") from e
        if self.path.is_dir():
            raise SinkError(f"video sink: {str(self.path)!r} is a folder; give a file name like out.mp4")
        if not os.access(parent, os.W_OK):
            raise SinkError(f"video sink: folder {str(parent)!r} is not writable")
        self._tmp = parent / f".{self.path.stem}.{uuid.uuid4().hex[:8]}.partial{self.path.suffix}"

    def _write_impl(self, frame: Optional[Frame], result: Result) -> None:
        if frame is None or getattr(frame, "image", None) is None:
            raise SinkError(f"video sink {self.name} needs the frame image; write(frame, result) got no frame")
        if self.source is not None and frame.source_id != self.source:
            return
        img = _to_bgr(frame.image)
        if self.annotator is not None:
            try:
                img = self.annotator.annotate(img, result)
            except Exception as e:  # a user annotator or odd result must not end the run unexplained
                raise SinkError(f"video sink {self.name}: drawing failed: {type(e).__name__}: {e}") from e
        if self.size is None:
            self.size = (img.shape[1], img.shape[0])
        elif (img.shape[1], img.shape[0]) != self.size:
            img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
        if self._writer is None:
            fps = self.fps or _positive(frame.meta.get("fps") if frame.meta else None)
            if fps is not None:
                self._start(fps)
            else:
                self._pending.append((float(frame.timestamp), img))
                span = self._pending[-1][0] - self._pending[0][0]
                if len(self._pending) >= PROBE_FRAMES or span >= PROBE_SECONDS:
                    self._start(self._measured_fps())  # writes the held-back frames, this one included
                return
        self._put(img)

    def _measured_fps(self) -> float:
        ts = [t for t, _ in self._pending]
        span = ts[-1] - ts[0] if ts else 0.0
        if len(ts) >= 2 and span > 0:
            return float(min(max((len(ts) - 1) / span, 1.0), 240.0))
        if len(ts) >= 2:
            log.warning("video sink %s: frame timestamps do not advance; writing at %.0f fps", self.name, DEFAULT_FPS)
        return DEFAULT_FPS

    def _start(self, fps: float) -> None:
        assert self._tmp is not None and self.size is not None
        self.fps = round(fps, 3)
        writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self.size)
        if not writer.isOpened():
            writer.release()
            self._remove_tmp()
            raise SinkError(f"video sink: OpenCV could not open a {self.fourcc!r} writer for {str(self.path)!r} "
                            f"({self.size[0]}x{self.size[1]} at {self.fps} fps); try .avi (MJPG) or another fourcc")
        self._writer = writer
        pending, self._pending = self._pending, []
        for _, img in pending:
            self._put(img)

    def _put(self, img: np.ndarray) -> None:
        assert self._writer is not None
        self._writer.write(img)
        self.frames += 1

    def _close_impl(self) -> None:
        if self._writer is None and self._pending:
            self._start(self._measured_fps())
        if self._writer is None:
            self._remove_tmp()
            log.warning("video sink %s: no frames were written; the file was not created", self.name)
            return
        self._writer.release()
        self._writer = None
        assert self._tmp is not None
        if not self._tmp.is_file() or self._tmp.stat().st_size == 0:
            self._remove_tmp()
            raise SinkError(f"video sink: OpenCV produced no output for {str(self.path)!r}; "
                            f"the codec {self.fourcc!r} may be unavailable in this OpenCV build")
        try:
            os.replace(self._tmp, self.path)
        except OSError as e:
            self._remove_tmp()
            raise SinkError(f"video sink: cannot move the finished video to {str(self.path)!r}: "
                            f"{e.strerror or e}") from e

    def _abort_impl(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._pending = []
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            try:
                self._tmp.unlink()
            except FileNotFoundError:
                pass


def _positive(value: object) -> Optional[float]:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if 0 < v <= 1000 else None
