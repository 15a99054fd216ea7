"""Several engine instances of one model behind the one batcher (``--replicas N``): each
batch goes to the replica with the fewest batches in flight, so N engines run at once
(data parallelism on a multi-core CPU; or one per device). Preprocessing and decoding
are the first replica's (they are the same for all).
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future
from typing import Any, Callable, Optional

from ..errors import ConfigError
from .model import StreamModel

log = logging.getLogger("edgesdk.streaming")


def check_replicas(n: int, cores: Optional[int] = None) -> int:
    cores = cores or os.cpu_count() or 1
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"--replicas must be a whole number >= 1, got {n!r}")
    if n > cores:
        raise ConfigError(f"--replicas {n} is more than the {cores} CPU cores of this machine: the engines would "
                          f"only take cores from each other; use at most {cores} (with --threads 1 each)")
    return n


def threads_per_replica(n: int, asked: Optional[int], cores: Optional[int] = None) -> int:
    """Engine threads of each replica: what was asked, else the cores split evenly."""
    if asked:
        return asked
    return max(1, (cores or os.cpu_count() or 1) // n)


class Replicated:
    """Submit to the least busy of `models` (all loaded from the same bundle)."""

    def __init__(self, models: list[StreamModel]) -> None:
        self.models = models
        self.inflight = [0] * len(models)
        self.batches = [0] * len(models)
        self._lock = threading.Lock()

    def submit(self, feeds: Any) -> "Future[dict]":
        with self._lock:
            i = min(range(len(self.models)), key=lambda k: (self.inflight[k], self.batches[k]))
            self.inflight[i] += 1
            self.batches[i] += 1
        fut = self.models[i].submit(feeds)
        fut.add_done_callback(lambda _f, k=i: self._done(k))
        return fut

    def _done(self, i: int) -> None:
        with self._lock:
            self.inflight[i] -= 1

    def close(self) -> None:
        for m in self.models:
            if m.close is not None:
                m.close()


def replicate(load: Callable[[], StreamModel], n: int) -> StreamModel:
    """One StreamModel over `n` instances made by `load()`."""
    models = [load() for _ in range(n)]
    rep = Replicated(models)
    first = models[0]
    log.info("%d replicas of %s", n, first.name)
    return StreamModel(preprocess=first.preprocess, submit=rep.submit, decode=first.decode, max_batch=first.max_batch,
                       fixed_batch=first.fixed_batch, name=f"{first.name} x{n}", close=rep.close, bundle=first.bundle,
                       group_key=first.group_key)
