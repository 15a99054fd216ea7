"""Several engines behind the one batcher (``--replicas N``), in one of two ways:

- ``engines``: N instances of the model, each batch to the one with the fewest batches in
  flight (data parallelism on a multi-core CPU; or one per device). Preprocessing and
  decoding are the first instance's (they are the same for all).
- ``streams``: one compiled model running N batches at once in the backend's own streams
  (OpenVINO: NUM_STREAMS = N with the throughput hint, N infer requests, the threads of
  all N in one pool), where the backend's record says it can (runtimes/registry.py).

``auto`` (the default) takes streams where the backend has them, else engines; the
statistics (``gauges.engine``) and the start log say which ran, with its threads.
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import ConfigError, EdgeSDKError
from .model import StreamModel

log = logging.getLogger("edgesdk.streaming")

MODES = ("auto", "engines", "streams")


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


def model_backend(spec: Any, backend: Optional[str]) -> Optional[str]:
    """The backend a bundle / model file will run on (None if it cannot be told)."""
    if backend:
        return backend
    path = Path(str(spec))
    try:
        if path.is_dir():
            from ..bundle import Bundle

            return Bundle.load(path, verify=False).manifest.backend
        from runtimes.registry import backend_for

        return backend_for(path)
    except EdgeSDKError:
        return None


def resolve_mode(mode: str, backend: Optional[str]) -> str:
    """``engines`` or ``streams`` for `mode` on `backend`; refuses streams a backend lacks."""
    if mode not in MODES:
        raise ConfigError(f"--replica-mode must be one of {', '.join(MODES)}, got {mode!r}")
    from runtimes.registry import RECORDS

    record = RECORDS.get(backend or "")
    has = bool(record is not None and record.streams)
    if mode == "streams" and not has:
        capable = ", ".join(r.name for r in RECORDS.values() if r.streams)
        raise ConfigError(f"--replica-mode streams needs a backend that runs several batches in one engine "
                          f"({capable}); {backend or 'this model'}'s runs one at a time: use --replica-mode "
                          "engines, or --backend openvino")
    if mode == "auto":
        return "streams" if has else "engines"
    return mode


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


def replicate(load: Callable[[], StreamModel], n: int, threads: Optional[int] = None) -> StreamModel:
    """One StreamModel over `n` instances made by `load()`."""
    models = [load() for _ in range(n)]
    rep = Replicated(models)
    first = models[0]
    log.info("%d engine replicas of %s (%s thread(s) each)", n, first.name, threads or "default")

    def describe() -> dict[str, Any]:
        return {"replicas": n, "mode": "engines", "threads_each": threads, "batches": list(rep.batches)}

    return StreamModel(preprocess=first.preprocess, submit=rep.submit, decode=first.decode, max_batch=first.max_batch,
                       fixed_batch=first.fixed_batch, name=f"{first.name} x{n}", close=rep.close, bundle=first.bundle,
                       group_key=first.group_key, describe=describe)


def streams_options(n: int, total_threads: int) -> dict[str, Any]:
    """Runtime options for one engine running `n` streams with `total_threads` in all."""
    return {"threads": total_threads, "performance_hint": "throughput", "config": {"NUM_STREAMS": n},
            "num_requests": n}


def with_streams(model: StreamModel, runtime: Any, n: int, total_threads: int) -> StreamModel:
    """`model` (one engine compiled for `n` streams) saying so in the statistics."""
    seen = {"requests": 0}  # the request pool goes when the engine closes: keep what it had
    submit = model.submit

    def counted(feeds: Any) -> "Future[dict]":
        fut = submit(feeds)
        if not seen["requests"]:  # the pool exists from the first submit on
            seen["requests"] = int(getattr(runtime, "num_requests", 0) or 0)
        return fut

    def describe() -> dict[str, Any]:
        config = getattr(runtime, "config", {}) or {}
        return {"replicas": n, "mode": "streams", "backend": getattr(runtime, "backend", None),
                "num_streams": config.get("NUM_STREAMS", n),
                "threads_total": config.get("INFERENCE_NUM_THREADS", total_threads),
                "requests": seen["requests"]}

    model.describe = describe
    model.submit = counted
    model.name = f"{model.name} ({n} streams)"
    log.info("%s: one engine, %d streams, %d thread(s) in all", model.name, n, total_threads)
    return model
