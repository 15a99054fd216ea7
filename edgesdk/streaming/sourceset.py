"""The sources of a pipeline: built from specs, one buffer lane and one reader thread
each, their states and weights, and sources added or removed while the pipeline runs."""
from __future__ import annotations

import logging
import math
import threading
from typing import Any, Callable, Optional, Sequence

from ..errors import ConfigError, SourceError
from .buffer import FrameBuffer
from .sources import Backoff, Source, SourceReader, make_source, unique_ids
from .sources.state import FAILED, STATE_CODES, SourceState
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


def check_name(name: Any) -> str:
    """A source name given with a source added while running (control endpoint, API): the
    form NAME=SPEC takes, so a ``{source}`` sink path cannot become ``../../x``."""
    from .sources import NAME_PATTERN

    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"source name {name!r} is not a name: use letters, digits, '_', '.' and '-', starting "
                          "with a letter or '_' (it names the source's files in {source} sinks)")
    return name


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
        #: sources the start could not open, with why (they run on as failed or retrying ones)
        self.open_errors: dict[str, SourceError] = {}
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

    def open(self, require_all: bool = False) -> None:
        """Open every source (at once: eight dead cameras must not cost eight open timeouts).

        With `require_all` the first that cannot be opened is raised (fail-fast). Otherwise
        it is kept with its error and the others run: a stream or camera goes on trying in
        its reader thread (state connecting, the last error as its reason), a file or folder
        ends as failed. None of them opening is an error either way."""
        from concurrent.futures import ThreadPoolExecutor

        def attempt(src: Source) -> Optional[SourceError]:
            try:
                src.open()
            except SourceError as exc:
                return exc
            return None

        with ThreadPoolExecutor(max_workers=max(1, min(16, len(self.sources))), thread_name_prefix="open") as pool:
            failures = list(pool.map(attempt, self.sources))
        self.open_errors = {src.source_id: exc for src, exc in zip(self.sources, failures) if exc is not None}
        first = next((exc for exc in failures if exc is not None), None)
        if first is None:
            return
        if require_all or len(self.open_errors) == len(self.sources):
            if require_all or len(self.sources) == 1:
                raise first
            raise SourceError(f"none of the {len(self.sources)} sources could be opened: "
                              + "; ".join(str(e) for e in failures))
        for src in self.sources:
            if src.source_id in self.open_errors:
                log.warning("%s (the other sources run; %s; --require-all-sources stops the run instead)",
                            self.open_errors[src.source_id],
                            "retrying in the background" if src.reconnects else "this source is marked failed")

    def start(self) -> None:
        """Lanes and reader threads for the sources `open()` opened, and for the ones it
        could not (their readers retry or fail, see `open`)."""
        for src in self.sources:
            self._lane(src)
            error = self.open_errors.get(src.source_id)
            self.readers.append(self._reader(src, opened=error is None, first_error=error))
        for r in self.readers:
            r.start()

    def _lane(self, src: Source) -> None:
        self.buffer.add_source(src.source_id, self.capacity(), drop_oldest=src.live, weight=src.weight)

    def _reader(self, src: Source, opened: bool, first_error: Optional[SourceError] = None) -> SourceReader:
        """A reader thread (not started) with its own stop event, so one source can be removed."""
        state = self.states[src.source_id] = SourceState(src.source_id)
        return SourceReader(src, self.buffer, self.stats, threading.Event(), loop=self.loop, realtime=self.realtime,
                            max_frames=self.max_frames, backoff=self.backoff, state=state, opened=opened,
                            first_error=first_error)

    def add(self, spec: Any, name: Optional[str], weight: float, before_start: Callable[[str], None]) -> str:
        """Add a source and start its reader (it opens in that thread). `before_start(id)`
        runs first (per-source sinks)."""
        if name is not None:
            check_name(name)
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

    def never_connected_left(self) -> list[str]:
        """The sources still trying to connect when every one that was ever live has ended
        (they alone would keep a run going with nothing to deliver); [] otherwise."""
        with self._lock:
            readers = list(self.readers)
        alive = [r for r in readers if r.is_alive()]
        if not alive or not any(r.connected for r in readers) or any(r.connected for r in alive):
            return []
        return [r.source.source_id for r in alive]

    def delivered(self, source_id: str) -> bool:
        """Whether a source of this name read any frame in this run."""
        with self._lock:
            return any(r.frames for r in self.readers if r.source.source_id == source_id)

    def failed_silent(self) -> list[str]:
        """Sources that failed without delivering a frame: their own sinks have nothing to publish."""
        with self._lock:
            readers = list(self.readers)
        ended = {r.source.source_id for r in readers if not r.is_alive()}
        delivered = {r.source.source_id for r in readers if r.frames}
        return sorted(sid for sid, st in list(self.states.items())
                      if st.state == FAILED and sid in ended and sid not in delivered)

    @property
    def errors(self) -> list[BaseException]:
        """The failures of the sources as they are now: one that failed and was added again
        under its name (its URL fixed through the spec or --control) is judged by the new one."""
        with self._lock:
            latest = {r.source.source_id: r for r in self.readers}
        return [r.error for r in latest.values() if r.error is not None]

    def lossless_ids(self) -> list[str]:
        return [src.source_id for src in self.sources if not src.live]

    def describe(self) -> dict[str, dict[str, Any]]:
        """State, since, reason, state_code (a number for metrics) and weight per source."""
        weights = {src.source_id: src.weight for src in self.sources}
        return {sid: {**st.describe(), "state_code": STATE_CODES[st.state], "weight": weights.get(sid, 1.0)}
                for sid, st in list(self.states.items())}
