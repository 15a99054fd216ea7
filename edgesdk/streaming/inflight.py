"""What the dispatcher and the completion thread share about batches in the engine: the
in-flight slots (at most `max_inflight` batches submitted at once), the queue of
submitted batches in submission order, when the engine is predicted to be free, and the
run of consecutive failures.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Optional

from ..results import Frame

#: consecutive failed batches after which the pipeline stops with the error
MAX_CONSECUTIVE_ERRORS = 10


@dataclass
class Batch:
    frames: list[Frame]
    transforms: list
    future: Future
    size: int  # after padding
    t_take: float
    t_pre: float  # preprocess seconds
    t_submit: float
    t_done: Optional[float] = None
    #: per frame: True if the engine ran on it, False if the change gate reuses a result
    inferred: Optional[list[bool]] = None
    #: the engine time the batcher expected for it (0: not known)
    predicted_s: float = 0.0
    #: when the batcher planned its results to be out (None: not planned)
    expect_done: Optional[float] = None

    @property
    def count(self) -> int:
        """Frames the engine ran on."""
        return len(self.frames) if self.inferred is None else sum(self.inferred)

    @property
    def ran(self) -> list[Frame]:
        """The frames the engine ran on, in order."""
        if self.inferred is None:
            return self.frames
        return [f for f, r in zip(self.frames, self.inferred) if r]


def done_future() -> "Future[dict]":
    fut: "Future[dict]" = Future()
    fut.set_result({})
    return fut


class Inflight:
    """Slots, the submission-order queue, the engine's predicted free time, failures."""

    def __init__(self, max_inflight: int) -> None:
        self.queue: "queue.Queue[Optional[Batch]]" = queue.Queue()
        self.slots = threading.BoundedSemaphore(max_inflight)
        self.progress = threading.Event()  # a batch completed (wakes a just-in-time wait)
        self._lock = threading.Lock()
        self.busy_until = 0.0
        self.count = 0
        self._errors = 0

    def acquire(self, abort: threading.Event) -> bool:
        """A slot, or False once `abort` is set."""
        while not self.slots.acquire(timeout=0.1):
            if abort.is_set():
                return False
        return True

    def state(self) -> tuple[float, int]:
        """(predicted engine free time, batches in flight)."""
        with self._lock:
            return self.busy_until, self.count

    def put(self, batch: Batch, predicted_s: float) -> None:
        """A submitted batch: it keeps the engine busy `predicted_s` more."""
        batch.predicted_s = predicted_s
        with self._lock:
            self.count += 1
            self.busy_until = max(self.busy_until, batch.t_submit) + predicted_s
        self.queue.put(batch)

    def done(self, t_done: float) -> None:
        """A batch left the engine; its slot is free again."""
        with self._lock:
            self.count -= 1
            if self.count == 0:
                self.busy_until = t_done
        self.slots.release()
        self.progress.set()

    def ok(self) -> None:
        with self._lock:
            self._errors = 0

    def failed(self) -> int:
        """One more failed batch; returns how many failed in a row."""
        with self._lock:
            self._errors += 1
            return self._errors
