"""The sources of a pipeline: built from specs, one buffer lane and one reader thread
each, their states and weights, and sources added or removed while the pipeline runs."""
from __future__ import annotations

import logging
import math
import threading
from typing import Any, Callable, Optional, Sequence

from ..errors import ConfigError
from .buffer import FrameBuffer
from .sources import Backoff, Source, SourceReader, make_source, unique_ids
from .sources.state import STATE_CODES, SourceState
from .stats import PipelineStats

log = logging.getLogger("edgesdk.streaming")


def check_weight(source_id: Any, weight: Any) -> float:
    """A source's weight as a float; `ConfigError` unless finite and > 0."""
    try:
        w = float(weight)
    except (TypeError, ValueError):
        w = float("nan")
    if not (w > 0 and math.isfinite(w)):
        raise ConfigError(f"weight of source {source_id!r} must be a finite number > 0, got {weight!r} "
                          "(1 is an even share; 2 gets twice the frames of a 1 under overload)")
    return w


class SourceSet:
    """Args: `capacity()` gives a new lane's size (it depends on the batch limit, known late)."""

    def __init__(self, specs: Sequence[Any], buffer: FrameBuffer, stats: PipelineStats, capacity: Callable[[], int],
                 *, weights: Optional[dict[str, float]] = None, realtime: bool = False, loop: bool = False,
                 max_frames: Optional[int] = None, backoff: Optional[Backoff] = None) -> None:
        self.specs = list(specs)
        self.buffer, self.stats, self.capacity = buffer, stats, capacity
        self.weights = {str(k): check_weight(k, w) for k, w in (weights or {}).items()}
        self.realtime, self.loop, self.max_frames, self.backoff = realtime, loop, max_frames, backoff
        self.sources: list[Source] = []
        self.readers: list[SourceReader] = []
        self.states: dict[str, SourceState] = {}
        self._lock = threading.Lock()

    def build(self) -> None:
        """Make the sources from their specs (unique ids, weights applied); nothing is opened."""
        for i, spec in enumerate(self.specs):
            self.sources.append(make_source(spec, None if isinstance(spec, (str, int)) else f"src{i}",
                                            realtime=self.realtime))
        unique_ids(self.sources)
        for src in self.sources:
            src.weight = self.weights.get(src.source_id, src.weight)
        unknown = set(self.weights) - set(self.ids)
        if unknown:
            raise ConfigError(f"weight given for unknown source(s) {', '.join(sorted(unknown))}; "
                              f"sources are {', '.join(self.ids)}")

    @property
    def ids(self) -> list[str]:
        return [src.source_id for src in self.sources]

    def open(self) -> None:
        for src in self.sources:
            src.open()

    def start(self) -> None:
        """Lanes and reader threads for the sources opened by `open()`."""
        for src in self.sources:
            self._lane(src)
            self.readers.append(self._reader(src, opened=True))
        for r in self.readers:
            r.start()

    def _lane(self, src: Source) -> None:
        self.buffer.add_source(src.source_id, self.capacity(), drop_oldest=src.live, weight=src.weight)

    def _reader(self, src: Source, opened: bool) -> SourceReader:
        """A reader thread (not started) with its own stop event, so one source can be removed."""
        state = self.states[src.source_id] = SourceState(src.source_id)
        return SourceReader(src, self.buffer, self.stats, threading.Event(), loop=self.loop, realtime=self.realtime,
                            max_frames=self.max_frames, backoff=self.backoff, state=state, opened=opened)

    def add(self, spec: Any, name: Optional[str], weight: float, before_start: Callable[[str], None]) -> str:
        """Add a source and start its reader (it opens in that thread). `before_start(id)`
        runs first (per-source sinks)."""
        src = make_source(spec, name, realtime=self.realtime)
        src.weight = check_weight(src.source_id, weight)
        with self._lock:
            # a name removed before (or whose source ended) may come back; its statistics go on
            if any(r.source.source_id == src.source_id and r.is_alive() for r in self.readers):
                raise ConfigError(f"a source named {src.source_id!r} is already in the pipeline; give it "
                                  "another name (NAME=SPEC)")
            before_start(src.source_id)
            # the lane of an earlier source of this name that ended by itself (a removed one has none)
            left = self.buffer.remove_source(src.source_id)
            if left:
                self.stats.drop("removed", len(left), source=src.source_id)
            self._lane(src)
            before = [r for r in self.readers if r.source.source_id == src.source_id]
            self.sources.append(src)
            reader = self._reader(src, opened=False)
            if before:  # frame numbers go on where the earlier source of this name stopped: unique in the run
                reader.frames = before[-1].frames
            self.readers.append(reader)
        reader.start()
        log.info("source added: %s", src.describe())
        return src.source_id

    def remove(self, source_id: str, timeout: float = 10.0) -> int:
        """Stop one source; returns how many of its queued frames were dropped."""
        reader = next((r for r in self.readers if r.source.source_id == source_id and r.is_alive()), None)
        if reader is None:
            known = ", ".join(sorted(self.states)) or "none"
            raise ConfigError(f"no running source named {source_id!r} (sources: {known})")
        reader.removed = True
        reader.stop_event.set()
        reader.join(timeout)
        return len(self.buffer.remove_source(source_id))

    def stop(self) -> None:
        for r in list(self.readers):
            r.stop_event.set()

    def join(self, timeout: float = 10.0) -> None:
        for r in list(self.readers):
            r.join(timeout=timeout)
            if r.is_alive():
                log.warning("%s did not stop within %g s", r.name, timeout)

    def close(self) -> None:
        for src in self.sources:
            src.close()

    @property
    def all_ended(self) -> bool:
        return bool(self.readers) and all(not r.is_alive() for r in self.readers)

    @property
    def errors(self) -> list[BaseException]:
        return [r.error for r in self.readers if r.error is not None]

    def lossless_ids(self) -> list[str]:
        return [src.source_id for src in self.sources if not src.live]

    def describe(self) -> dict[str, dict[str, Any]]:
        """State, since, reason, state_code (a number for metrics) and weight per source."""
        weights = {src.source_id: src.weight for src in self.sources}
        return {sid: {**st.describe(), "state_code": STATE_CODES[st.state], "weight": weights.get(sid, 1.0)}
                for sid, st in list(self.states.items())}
