"""Still images as a stream: a folder, a glob pattern or a single image file."""
from __future__ import annotations

import glob as _glob
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from ...errors import SourceError
from ...imageio import read_image
from .base import Source

log = logging.getLogger("edgesdk.streaming")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


class ImageFolderSource(Source):
    """Images in name order from a folder, a glob (``frames/*.jpg``) or one file.

    Lossless (never drops); with ``realtime`` it is paced at `fps` (default 10) and live.
    Files that cannot be decoded are skipped with a warning.
    """

    kind = "images"

    def __init__(self, spec: str, source_id: str, realtime: bool = False, fps: Optional[float] = None) -> None:
        super().__init__(source_id, spec, live=realtime, fps=fps if fps is not None else (10.0 if realtime else None))
        self.files: list[Path] = []
        self._pos = 0
        self._item: Optional[str] = None

    def _list(self) -> list[Path]:
        p = Path(self.spec)
        if is_glob(self.spec):
            found = [Path(f) for f in _glob.glob(self.spec, recursive=True)]
        elif p.is_dir():
            found = list(p.iterdir())
        elif p.is_file():
            found = [p]
        else:
            found = []
        return sorted(f for f in found if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)

    def open(self) -> None:
        self.files = self._list()
        if not self.files:
            raise SourceError(f"cannot open {self.describe()}: no images ({', '.join(IMAGE_SUFFIXES)}) found there")
        self._pos = 0

    def read(self) -> Optional[np.ndarray]:
        while self._pos < len(self.files):
            path = self.files[self._pos]
            self._pos += 1
            try:
                image = read_image(path)
                self._item = str(path)
                return image
            except SourceError as exc:  # also an image over the pixel cap
                log.warning("%s: skipping %s (%s)", self.describe(), path, exc)
        return None

    def rewind(self) -> bool:
        self._pos = 0
        return bool(self.files)

    def item(self) -> Optional[str]:
        return self._item
