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
from .state import CONNECTING, ENDED, FAILED, LIVE, RECONNECTING, SourceState

log = logging.getLogger("edgesdk.streaming")


@dataclass
class Backoff:
    """Exponential reconnect delays: initial, initial*factor, ... capped at `maximum`."""

    initial: float = 0.25
    factor: float = 2.0
    maximum: float = 5.0
    #: give up after this many failed attempts in a row (None: keep trying until stopped)
    attempts: Optional[int] = None

    @classmethod
    def from_spec(cls, value: "Optional[Backoff | dict]") -> "Backoff":
        """A Backoff, or one from a spec's table ``{initial, factor, maximum, attempts}``;
        `ConfigError` naming the key when a value is not a finite number in range."""
        import math

        from ...errors import ConfigError

        if value is None or isinstance(value, Backoff):
            return value or cls()
        if not isinstance(value, dict) or set(value) - {"initial", "factor", "maximum", "attempts"}:
            raise ConfigError(f"reconnect must be a table with initial, factor, maximum (seconds) and attempts "
                              f"(give up after that many in a row; none: keep trying), got {value!r}")
        for key in ("initial", "factor", "maximum"):
            v = value.get(key, 1.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"reconnect.{key} must be a finite number > 0, got {v!r}")
        attempts = value.get("attempts")
        if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1):
            raise ConfigError(f"reconnect.attempts must be a whole number >= 1 (or none: keep trying), got {attempts!r}")
        return cls(**{k: float(v) if k != "attempts" else v for k, v in value.items()})

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
                 on_event: Optional[Callable[[str, str], None]] = None,
                 state: Optional[SourceState] = None, opened: bool = True,
                 first_error: Optional[SourceError] = None) -> None:
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
        #: set when the source is taken out of the pipeline on purpose (not a failure to connect)
        self.removed = False
        self.state = state or SourceState(source.source_id)
        self._opened = opened  # the pipeline opened it already (the first sources, before the threads)
        #: the pipeline's own attempt to open it failed with this (retried here, not repeated at once)
        self._first_error = first_error
        #: it has been live at least once (a source that never was does not keep a run going alone)
        self.connected = opened
        if opened:
            self.state.to(LIVE, "opened")
        elif first_error is not None:
            self.state.note(f"attempt 1 failed: {first_error}")

    def _event(self, kind: str, message: str) -> None:
        log.info("%s: %s", self.source.describe(), message)
        if self.on_event is not None:
            self.on_event(kind, message)

    def _connect(self) -> bool:
        """Open a source added to a running pipeline, in this thread (connecting state);
        streams and cameras retry with the backoff, the others get one attempt (the one the
        pipeline made already at its start, when it did)."""
        src = self.source
        first, self._first_error = self._first_error, None
        if first is None:
            try:
                src.open()
                return True
            except SourceError as exc:
                first = exc
        if not src.reconnects:
            self.error = first
            return False
        return self._retry(first, "never connected")

    def _reconnect(self) -> bool:
        src = self.source
        src.close()
        self.stats.reconnect(src.source_id)
        self.reconnects += 1
        self.state.to(RECONNECTING, "stream lost")
        self._event("disconnected", "stream lost; reconnecting")
        return self._retry(None, "lost and not back")

    def _retry(self, last: Optional[BaseException], what: str) -> bool:
        src = self.source
        started, tries = time.monotonic(), 0
        if last is not None:
            self.state.note(f"attempt 1 failed: {last}")
        for delay in self.backoff.delays():
            if self.stop_event.wait(delay):
                if what == "never connected" and not self.removed:
                    # stopped before it ever delivered a frame: a failure to report, not an end
                    self.error = SourceError(f"{src.describe()}: never connected ({tries + 1} attempts in "
                                             f"{time.monotonic() - started:.0f} s; last: {last}); check the address "
                                             "and that the device or server is up")
                return False
            tries += 1
            try:
                src.open()
            except SourceError as exc:
                last = exc
                self.state.note(f"attempt {tries + 1} failed: {exc}")
                log.debug("%s: reconnect failed: %s", src.describe(), exc)
                continue
            self.state.to(LIVE, "connected")
            self._event("reconnected", "stream back")
            return True
        self.error = SourceError(f"{src.describe()}: {what} after {self.backoff.attempts} reconnect attempts ({last}); "
                                 "check the address and that the device or server is up")
        return False

    def run(self) -> None:
        src = self.source
        try:
            if not self._opened:
                if not self._connect():
                    self.ended_reason = "stopped" if self.error is None else "error"
                    return
                self.state.to(LIVE, "connected")
                self.connected = True
            # after open: a file's native rate is known only once it is open
            period = 1.0 / src.fps if self.realtime and src.fps else 0.0
            next_t = time.monotonic()
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
                frame = Frame(src.source_id, self.frames, time.time(), img, self._meta())
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
            if self.error is not None:  # the reason says what failed, for the status, report and metrics
                self.state.to(FAILED, str(self.error))
            else:  # removed: taken out on purpose (spec file, control endpoint, API)
                self.state.to(ENDED, "removed" if self.removed else self.ended_reason or "stopped")
            self._event("ended", self.ended_reason or "stopped")

    def _meta(self) -> dict:
        """What a frame says about its source: the native frame rate (a video sink writes
        at it, not at the processing rate) and, for files, the position in the video."""
        src = self.source
        meta: dict = {}
        if src.fps and not src.reconnects:
            meta["fps"] = src.fps
        pos = src.position()
        if pos is not None:
            meta["position_s"] = round(pos, 4)
        item = src.item()
        if item is not None:
            meta["path"] = item
        return meta
