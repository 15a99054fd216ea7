"""`CallbackSink`: hand each result to a Python function."""
from __future__ import annotations

from typing import Any, Callable, Optional

from ..errors import SinkError
from ..results import Frame, Result
from .base import Sink

SinkCallback = Callable[[Optional[Frame], Result], Any]


class CallbackSink(Sink):
    """Calls ``fn(frame, result)`` for every result, on the writing thread.

    An exception from ``fn`` becomes a `SinkError` naming the callback (the original is
    chained as ``__cause__``) and is counted in ``stats["errors"]``. A slow callback stalls
    the writer: wrap the sink in `AsyncSink` if it may take long.
    """

    def __init__(self, fn: SinkCallback, name: Optional[str] = None) -> None:
        if not callable(fn):
            raise SinkError(f"CallbackSink needs a callable(frame, result), got {type(fn).__name__}")
        super().__init__(name or f"callback:{getattr(fn, '__qualname__', type(fn).__name__)}")
        self.fn = fn

    def _write_impl(self, frame: Optional[Frame], result: Result) -> None:
        try:
            self.fn(frame, result)
        except Exception as e:  # user code: anything may come out of it
            raise SinkError(f"sink {self.name}: the callback raised {type(e).__name__}: {e}") from e
