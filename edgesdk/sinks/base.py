"""`Sink`: where results go, and `AsyncSink`: a sink that can never stall the caller.

A sink has four methods: `open()`, `write(frame, result)`, `close()` and `abort()` (close
after a failure: sinks that write files drop their unfinished output instead of publishing
it). A subclass overrides only the `_*_impl` hooks; the public methods here check the
state, count, and turn the expected failures into `SinkError`.

`stats` is a small dict snapshot, safe to read from any thread:
``written`` (results the sink really delivered: on disk, on screen, acknowledged by the
broker), ``dropped`` (results given up on purpose, e.g. a full queue) and ``errors``.
"""
from __future__ import annotations

import abc
import collections
import json
import logging
import math
import threading
import time
from typing import Any, ClassVar, Optional

from ..errors import SinkError
from ..results import Frame, Result

log = logging.getLogger("edgesdk.sinks")

DROP_POLICIES = ("oldest", "newest", "block")


def _finite(obj: Any) -> Any:
    """NaN/inf are not JSON; replace them with null rather than write an unparsable line."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def encode_result(result: Result) -> str:
    """`result.to_dict()` as compact, strict JSON (one line, no NaN)."""
    d = result.to_dict()
    try:
        return json.dumps(d, separators=(",", ":"), allow_nan=False)
    except ValueError:  # a NaN/inf score or coordinate: rare, so only then walk the dict
        return json.dumps(_finite(d), separators=(",", ":"), allow_nan=False)


class Sink(abc.ABC):
    """Base of every sink. Use it as a context manager, or call `open()` and `close()`.

    One thread writes; `stats` may be read from any thread. To decouple a slow sink
    from the caller, wrap it in `AsyncSink`.
    """

    #: False where the subclass counts ``written`` itself (e.g. MQTT counts broker acks)
    _counts_writes: ClassVar[bool] = True

    def __init__(self, name: str) -> None:
        self.name = name
        self._stats_lock = threading.Lock()
        self._counts: dict[str, int] = {"written": 0, "dropped": 0, "errors": 0}
        self._state = "new"  # new -> open -> closed

    # ---- public API -------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            return dict(self._counts)

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    def open(self) -> "Sink":
        """Acquire what the sink needs (file, connection, port). Idempotent."""
        if self._state == "open":
            return self
        if self._state == "closed":
            raise SinkError(f"sink {self.name}: cannot reopen a closed sink; make a new one")
        self._open_impl()
        self._state = "open"
        return self

    def write(self, frame: Optional[Frame], result: Result) -> None:
        """Deliver one result. ``frame`` may be None for sinks that need no image (JSONL, MQTT)."""
        if self._state != "open":
            raise SinkError(f"sink {self.name} is {'closed' if self._state == 'closed' else 'not open'}; "
                            "call open() first (or use the sink as a context manager)")
        try:
            self._write_impl(frame, result)
        except SinkError:
            self._count("errors")
            raise
        if self._counts_writes:
            self._count("written")

    def close(self) -> None:
        """Finish the output (flush, rename into place, disconnect). Idempotent."""
        self._finish(self._close_impl)

    def abort(self) -> None:
        """Close after a failure: file sinks delete their unfinished output. Idempotent."""
        self._finish(self._abort_impl)

    def _finish(self, impl: Any) -> None:
        was_open, self._state = self._state == "open", "closed"
        if was_open:
            impl()

    def __enter__(self) -> "Sink":
        return self.open()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self._state} {self.stats}>"

    # ---- hooks ------------------------------------------------------------------------
    def _open_impl(self) -> None:  # noqa: B027 (optional hook)
        pass

    @abc.abstractmethod
    def _write_impl(self, frame: Optional[Frame], result: Result) -> None:
        ...

    def _close_impl(self) -> None:  # noqa: B027 (optional hook)
        pass

    def _abort_impl(self) -> None:
        self._close_impl()

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._counts[key] = self._counts.get(key, 0) + n


class AsyncSink(Sink):
    """Run any sink on its own thread behind a bounded queue, so `write` never blocks.

    When the queue is full a result is dropped and counted in ``stats["dropped"]``:
    ``drop="oldest"`` (default) discards the oldest queued result to make room, like
    the live sources' drop-stale buffer (a sink that falls behind shows the freshest
    results, with gaps); ``drop="newest"`` refuses the new one (keeps contiguous runs).
    ``drop="block"`` makes `write` wait for room instead (back-pressure, nothing dropped):
    only for offline runs over files, never behind a live camera.
    Memory is bounded by ``maxsize`` queued (frame, result) pairs: the queue holds
    references, so the caller must not modify a frame's image after writing it.

    `close(timeout)` lets the worker drain the queue for up to ``timeout`` seconds; what
    is still queued after that is dropped (counted) and the wrapped sink is closed.
    Write errors of the wrapped sink are counted (``errors``), logged, and kept in
    `last_error`; they do not stop the worker.
    """

    _counts_writes = False

    def __init__(self, sink: Sink, maxsize: int = 32, drop: str = "oldest", close_timeout: float = 10.0) -> None:
        if not isinstance(sink, Sink):
            raise SinkError(f"AsyncSink wraps a Sink, got {type(sink).__name__}; use make_sink(spec) first")
        if int(maxsize) < 1:
            raise SinkError(f"AsyncSink maxsize must be >= 1, got {maxsize}")
        if drop not in DROP_POLICIES:
            raise SinkError(f"AsyncSink drop={drop!r} is not one of {DROP_POLICIES}")
        super().__init__(sink.name)
        self.sink = sink
        self.maxsize = int(maxsize)
        self.drop = drop
        self.close_timeout = float(close_timeout)
        self.last_error: Optional[BaseException] = None
        self._queue: collections.deque[tuple[Optional[Frame], Result]] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = False
        self._high_water = 0
        self._thread: Optional[threading.Thread] = None

    @property
    def stats(self) -> dict[str, Any]:
        inner = self.sink.stats
        with self._stats_lock:
            own = dict(self._counts)
        with self._cond:
            queued, high = len(self._queue), self._high_water
        out = dict(inner)
        out["written"] = inner.get("written", 0)
        out["dropped"] = inner.get("dropped", 0) + own["dropped"]
        out["errors"] = inner.get("errors", 0) + own["errors"]
        out.update(queued=queued, high_water=high, maxsize=self.maxsize)
        return out

    def _open_impl(self) -> None:
        self.sink.open()  # in the caller's thread, so open errors reach the caller
        self._thread = threading.Thread(target=self._run, name=f"sink:{self.name}", daemon=True)
        self._thread.start()

    def _write_impl(self, frame: Optional[Frame], result: Result) -> None:
        with self._cond:
            if self._stopping:  # a write racing with close() from another thread: too late, counted
                self._count("dropped")
                return
            if len(self._queue) >= self.maxsize and self.drop == "block":
                while len(self._queue) >= self.maxsize and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    self._count("dropped")
                    return
            if len(self._queue) >= self.maxsize:
                self._count("dropped")
                if self.drop == "newest":
                    return
                self._queue.popleft()
            self._queue.append((frame, result))
            self._high_water = max(self._high_water, len(self._queue))
            self._cond.notify()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until the queue is empty and no write is in progress (tests, flush points)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return  # stopping and drained
                frame, result = self._queue.popleft()
                self._busy = True
                self._cond.notify_all()  # room for a writer blocked by drop="block"
            try:
                self.sink.write(frame, result)
            except SinkError as e:  # counted by the wrapped sink
                self._note_error(e)
            except Exception as e:  # a bug in a sink must not kill the worker silently
                self._count("errors")
                log.exception("sink %s raised while writing", self.name)
                self._note_error(e)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _note_error(self, e: BaseException) -> None:
        first = self.last_error is None
        self.last_error = e
        if first:
            log.warning("sink %s: %s (further errors are only counted)", self.name, e)

    def _stop(self, timeout: float, discard: bool) -> None:
        with self._cond:
            self._stopping = True
            if discard:
                self._discard_queue()
            self._cond.notify_all()
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                n = self._discard_queue()
            if n:
                log.warning("sink %s did not drain within %.1f s: %d queued results dropped", self.name, timeout, n)
            self._thread.join(1.0)  # let the write in progress finish
            if self._thread.is_alive():
                raise SinkError(f"sink {self.name}: a write did not return within {timeout + 1:.1f} s; "
                                "the sink was left open (its output may be incomplete)")

    def _discard_queue(self) -> int:
        n = len(self._queue)
        self._queue.clear()
        if n:
            self._count("dropped", n)
        return n

    def close(self, timeout: Optional[float] = None) -> None:  # type: ignore[override]
        """Drain for up to ``timeout`` s (default ``close_timeout``), then close the wrapped sink."""
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        self._stop(self.close_timeout if timeout is None else float(timeout), discard=False)
        self.sink.close()

    def _abort_impl(self) -> None:
        try:
            self._stop(min(self.close_timeout, 2.0), discard=True)
        finally:
            self.sink.abort()
