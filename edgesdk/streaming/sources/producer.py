"""A Python producer as a source: a callable returning images, or an iterable of them."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional, Union

import numpy as np

from ...errors import SourceError
from .base import Source

Producer = Union[Callable[[], Optional[np.ndarray]], Iterable[np.ndarray]]


class ProducerSource(Source):
    """Images from ``producer()`` (None ends the source) or from iterating ``producer``.

    Lossless unless ``live=True`` (say, a callable that grabs from a camera SDK).
    With `fps`, the reader paces it (`realtime`).
    """

    kind = "producer"

    def __init__(self, producer: Producer, source_id: str, live: bool = False, fps: Optional[float] = None,
                 name: Optional[str] = None) -> None:
        label = name or getattr(producer, "__name__", type(producer).__name__)
        super().__init__(source_id, label, live=live, fps=fps)
        self.producer = producer
        self._iter: Optional[Iterator[Any]] = None
        self._call: Optional[Callable[[], Any]] = None

    def open(self) -> None:
        if callable(self.producer) and not hasattr(self.producer, "__iter__"):
            self._call = self.producer
        elif hasattr(self.producer, "__iter__"):
            self._iter = iter(self.producer)
        else:
            raise SourceError(f"cannot open {self.describe()}: a producer must be a callable returning "
                              "images or an iterable of images")

    def read(self) -> Optional[np.ndarray]:
        if self._call is not None:
            img = self._call()
        else:
            assert self._iter is not None
            img = next(self._iter, None)
        if img is None:
            return None
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim not in (2, 3):
            raise SourceError(f"{self.describe()} produced {type(img).__name__} "
                              f"{getattr(img, 'dtype', '')} {getattr(img, 'shape', '')}; expected an "
                              "HxWx3 uint8 BGR image (as cv2.imread returns) or None to end")
        return img

    def rewind(self) -> bool:
        # a list/tuple can start again; a generator or callable cannot
        if isinstance(self.producer, (list, tuple)):
            self._iter = iter(self.producer)
            return True
        return False
