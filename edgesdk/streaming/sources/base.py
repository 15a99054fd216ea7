"""What every source is: open, read one image, close; live or lossless; and how to
find it again when it drops."""
from __future__ import annotations

import abc
from typing import Optional

import numpy as np


class Source(abc.ABC):
    """One producer of images (camera, file, stream, folder, callable).

    `read()` returns an HxWx3 uint8 BGR image, or None when there is no frame: the end
    of a file, or a dropped connection of a stream. The reader thread decides what None
    means from `reconnects` (streams and cameras: reopen with backoff) and `rewind()`
    (files and folders when looping).

    Attributes:
        source_id: the name results carry (``cam0``, or the user's ``name=`` prefix).
        live: frames happen in real time whether we read them or not: the buffer drops
            the oldest when full. Lossless sources (files) block instead.
        reconnects: reopen after a failed read instead of ending.
        fps: the native frame rate when known (pacing of files in real time).
    """

    kind = "source"
    reconnects = False

    def __init__(self, source_id: str, spec: str, live: bool = False, fps: Optional[float] = None) -> None:
        #: share of the engine under overload relative to the other sources (> 0)
        self.weight = 1.0
        self.source_id = source_id
        self.spec = spec
        self.live = live
        self.fps = fps

    @abc.abstractmethod
    def open(self) -> None:
        """Open the source; raise `SourceError` naming it if it cannot be opened."""

    @abc.abstractmethod
    def read(self) -> Optional[np.ndarray]:
        """The next image, or None (end, or connection lost)."""

    def close(self) -> None:
        """Release the device/file/connection; safe to call twice."""

    def rewind(self) -> bool:
        """Start again from the first frame (looping). False if this source cannot."""
        return False

    def position(self) -> Optional[float]:
        """Seconds into the file of the frame just read (files); None for live sources."""
        return None

    def item(self) -> Optional[str]:
        """The file the frame just read came from (image folders, globs); None otherwise."""
        return None

    def describe(self) -> str:
        return f"{self.kind} {self.spec!r} ({self.source_id})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, id={self.source_id!r}, live={self.live})"
