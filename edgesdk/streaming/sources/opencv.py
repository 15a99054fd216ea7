"""Sources OpenCV decodes: video files, USB/V4L2 cameras, RTSP/HTTP streams."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Union

import cv2
import numpy as np

from ...errors import SourceError
from .base import Source

log = logging.getLogger("edgesdk.streaming")

#: how long OpenCV's FFmpeg backend may wait to open a stream / for one packet
OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 3000


def _to_bgr(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


class _CaptureSource(Source):
    """Shared code: a cv2.VideoCapture opened from `target`."""

    api = cv2.CAP_ANY
    hint = ""

    def __init__(self, source_id: str, spec: str, target: Union[str, int], live: bool,
                 fps: Optional[float] = None) -> None:
        super().__init__(source_id, spec, live=live, fps=fps)
        self.target = target
        self._cap: Optional[Any] = None

    def _params(self) -> list[int]:
        return []

    def open(self) -> None:
        self.close()
        cap = cv2.VideoCapture(self.target, self.api, self._params())
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.describe()}: OpenCV could not open it. {self.hint}".strip())
        self._cap = cap
        native = cap.get(cv2.CAP_PROP_FPS)
        if self.fps is None and native and 1.0 <= native <= 240.0:
            self.fps = float(native)

    def read(self) -> Optional[np.ndarray]:
        if self._cap is None:
            return None
        try:
            ok, img = self._cap.read()
        except cv2.error as exc:  # a broken stream can make the decoder raise
            log.warning("%s: read failed: %s", self.describe(), exc)
            return None
        if not ok or img is None:
            return None
        return _to_bgr(img)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class VideoFileSource(_CaptureSource):
    """A video file: lossless by default; with ``realtime`` paced at its native fps and live."""

    kind = "video file"
    hint = "Is it a video file OpenCV's FFmpeg backend can decode (mp4/avi/mkv...)?"

    def __init__(self, path: Union[str, Path], source_id: str, realtime: bool = False,
                 fps: Optional[float] = None) -> None:
        super().__init__(source_id, str(path), str(path), live=realtime, fps=fps)
        self.api = cv2.CAP_FFMPEG

    def position(self) -> Optional[float]:
        # POS_MSEC after a read is the time of the next frame in some backends: use the frame count
        if self._cap is None:
            return None
        index = self._cap.get(cv2.CAP_PROP_POS_FRAMES) - 1
        if self.fps and index >= 0:
            return index / self.fps
        ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        return ms / 1000.0 if ms and ms > 0 else None

    def rewind(self) -> bool:
        if self._cap is not None and self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            return True
        try:  # some containers cannot seek: reopen
            self.open()
        except SourceError:
            return False
        return True


class CameraSource(_CaptureSource):
    """A USB/V4L2 camera by index (0) or device path (/dev/video0)."""

    kind = "camera"
    reconnects = True
    hint = ("Is a camera connected (ls /dev/video*), not used by another program, and readable "
            "by this user (group 'video')?")

    def __init__(self, device: Union[int, str], source_id: str, fps: Optional[float] = None,
                 size: Optional[tuple[int, int]] = None) -> None:
        super().__init__(source_id, str(device), device, live=True, fps=fps)
        self.size = size

    def open(self) -> None:
        super().open()
        assert self._cap is not None
        if self.size:  # (width, height) asked of the driver; it may choose the closest
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        # keep the driver's own queue short: our buffer decides what is dropped
        self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)


class StreamSource(_CaptureSource):
    """A network stream (rtsp://, rtsps://, http(s)://, rtmp://, udp://, srt://) via FFmpeg."""

    kind = "stream"
    reconnects = True
    hint = "Is the server running and the URL right (try it with `ffprobe URL`)?"

    def __init__(self, url: str, source_id: str, fps: Optional[float] = None,
                 open_timeout_ms: int = OPEN_TIMEOUT_MS, read_timeout_ms: int = READ_TIMEOUT_MS) -> None:
        super().__init__(source_id, url, url, live=True, fps=fps)
        self.api = cv2.CAP_FFMPEG
        self.open_timeout_ms = open_timeout_ms
        self.read_timeout_ms = read_timeout_ms

    def _params(self) -> list[int]:
        # without these a dead server can block a read for 30 s (FFmpeg's default)
        return [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.open_timeout_ms,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.read_timeout_ms]
