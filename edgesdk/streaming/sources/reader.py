"""One thread per source: read, stamp, pace, buffer; reconnect with backoff; end cleanly."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ...errors import SourceError
from ...results import Frame
from ..buffer import FrameBuffer
from ..stats import PipelineStats
from .base import Source

log = logging.getLogger("edgesdk.streaming")


@dataclass
class Backoff:
    """Exponential reconnect delays: initial, initial*factor, ... capped at `maximum`."""

    initial: float = 0.25
    factor: float = 2.0
    maximum: float = 5.0
    #: give up after this many failed attempts in a row (None: keep trying until stopped)
    attempts: Optional[int] = None

    def delays(self):
        d, n = self.initial, 0
        while self.attempts is None or n < self.attempts:
            yield d
            d = min(self.maximum, d * self.factor)
            n += 1


class SourceReader(threading.Thread):
    """Reads `source` into `buffer` until it ends, `max_frames` were read, or `stop` is set.

    - realtime pacing at `source.fps` for files/folders/producers when `realtime`;
    - looping (files, folders, lists) when `loop`;
    - live sources that fail a read are reopened with `backoff` (counted as reconnects);
      a source that cannot be reopened within the backoff's attempts ends with `error` set.
    """

    def __init__(self, source: Source, buffer: FrameBuffer, stats: PipelineStats, stop: threading.Event,
                 loop: bool = False, realtime: bool = False, max_frames: Optional[int] = None,
                 backoff: Optional[Backoff] = None,
                 on_event: Optional[Callable[[str, str], None]] = None) -> None:
        super().__init__(name=f"source-{source.source_id}", daemon=True)
        self.source = source
        self.buffer = buffer
        self.stats = stats
        self.stop_event = stop
        self.loop = loop
        self.realtime = realtime
        self.max_frames = max_frames
        self.backoff = backoff or Backoff()
        self.on_event = on_event
        self.frames = 0
        self.reconnects = 0
        self.error: Optional[BaseException] = None
        self.ended_reason = ""

    def _event(self, kind: str, message: str) -> None:
        log.info("%s: %s", self.source.describe(), message)
        if self.on_event is not None:
            self.on_event(kind, message)

    def _reconnect(self) -> bool:
        src = self.source
        src.close()
        self.stats.reconnect(src.source_id)
        self.reconnects += 1
        self._event("disconnected", "stream lost; reconnecting")
        last: Optional[BaseException] = None
        for delay in self.backoff.delays():
            if self.stop_event.wait(delay):
                return False
            try:
                src.open()
            except SourceError as exc:
                last = exc
                log.debug("%s: reconnect failed: %s", src.describe(), exc)
                continue
            self._event("reconnected", "stream back")
            return True
        self.error = SourceError(f"{src.describe()}: lost and not back after "
                                 f"{self.backoff.attempts} reconnect attempts ({last})")
        return False

    def run(self) -> None:
        src = self.source
        period = 1.0 / src.fps if self.realtime and src.fps else 0.0
        next_t = time.monotonic()
        try:
            while not self.stop_event.is_set():
                if self.max_frames is not None and self.frames >= self.max_frames:
                    self.ended_reason = "max_frames"
                    break
                img = src.read()
                if img is None:
                    if src.reconnects:
                        if self._reconnect():
                            continue
                        self.ended_reason = "stopped" if self.error is None else "lost"
                        break
                    if self.loop and src.rewind():
                        continue
                    self.ended_reason = "eof"
                    break
                if period:
                    now = time.monotonic()
                    if next_t > now:
                        if self.stop_event.wait(next_t - now):
                            break
                        next_t += period
                    else:  # fell behind (slow decode): do not burst to catch up
                        next_t = now + period
                frame = Frame(src.source_id, self.frames, time.time(), img)
                self.frames += 1
                if not self.buffer.put(frame):
                    break  # buffer closed: the pipeline is stopping (this frame was never taken in)
                self.stats.frame_in(src.source_id, frame.timestamp)
            else:
                self.ended_reason = self.ended_reason or "stopped"
        except SourceError as exc:
            self.error = exc
            self.ended_reason = "error"
        except Exception as exc:  # a producer callable's own bug: end this source, say why
            self.error = SourceError(f"{src.describe()} failed: {type(exc).__name__}: {exc}")
            self.error.__cause__ = exc
            self.ended_reason = "error"
        finally:
            src.close()
            self.buffer.end(src.source_id)
            if self.error is not None:
                log.error("%s", self.error)
            self._event("ended", self.ended_reason or "stopped")
