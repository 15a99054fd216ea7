"""A stand-in model for pipeline and batching unit tests: controllable latency t(b) = a + c*b.

Real-model evidence lives in tests/test_stream_real.py; this only exercises the plumbing.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional, Sequence

import numpy as np

from edgesdk.results import Result


class FakeModel:
    """preprocess: mean pixel per image; submit: sleeps a + c*b on one worker (a serial device);
    decode: one Result per image whose score is the image's mean pixel / 255 and
    meta['mean'] the mean (so tests can tell which frame a result belongs to)."""

    def __init__(self, a_ms: float = 2.0, c_ms: float = 1.0, max_batch: Optional[int] = None,
                 fixed_batch: Optional[int] = None, fail_after: Optional[int] = None) -> None:
        # fail_after: every engine run after this many raises InferenceError
        self.a = a_ms / 1000.0
        self.c = c_ms / 1000.0
        self.max_batch = max_batch
        self.fixed_batch = fixed_batch
        self.fail_after = fail_after
        self.name = "fake"
        self.sizes: list[int] = []
        self.runs = 0
        self.closed = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-device")
        self._lock = threading.Lock()

    def set_latency(self, a_ms: float, c_ms: float) -> None:
        with self._lock:
            self.a, self.c = a_ms / 1000.0, c_ms / 1000.0

    def preprocess(self, images: Sequence[np.ndarray]):
        x = np.array([float(img.mean()) for img in images], np.float32)
        return x, [None] * len(images)

    def _run(self, x: np.ndarray) -> dict:
        with self._lock:
            t = self.a + self.c * len(x)
        time.sleep(t)
        self.runs += 1
        if self.fail_after is not None and self.runs > self.fail_after:
            from runtimes.errors import InferenceError
            raise InferenceError("fake device failure")
        return {"mean": x.copy()}

    def submit(self, feeds) -> "Future[dict]":
        self.sizes.append(len(feeds))
        return self._pool.submit(self._run, feeds)

    def decode(self, outputs: dict, transforms: list) -> list[Result]:
        return [Result(scores=[], meta={"mean": float(m)}) for m in outputs["mean"]]

    def close(self) -> None:
        self.closed = True
        self._pool.shutdown(wait=True)


def numbered_frames(n: int, shape=(8, 8, 3)) -> list[np.ndarray]:
    """Frames whose mean pixel is their index (mod 256): results say which frame they are."""
    return [np.full(shape, i % 256, np.uint8) for i in range(n)]
