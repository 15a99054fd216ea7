"""The sinks of a pipeline, built from specs: shared ones, and one per source for a spec
with ``{source}`` (made again for a source added to a running pipeline). Each is wrapped
in an `AsyncSink` so a slow one drops (counted) and never stalls the engine.

Closing collects every sink's counters and errors: a sink that failed to write (a video
writer that could not open, say) makes the run fail after everything was closed, instead
of a run that "succeeded" with its output missing.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional

from ..errors import ConfigError, EdgeSDKError, SinkError
from ..results import Frame, Result

log = logging.getLogger("edgesdk.streaming")


class SinkSet:
    def __init__(self, specs: list[Any], queue_size: int = 64,
                 on_open: Optional[Callable[[str, Any], None]] = None) -> None:
        self.specs = list(specs)
        self.queue_size = queue_size
        self.on_open = on_open  # (name, wrapped sink): the pipeline registers drop gauges
        self._shared: list[Any] = []
        self._by_source: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        self.stats: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []

    def _open(self, spec: Any, sid: Optional[str]) -> Any:
        from ..sinks import AsyncSink, make_sink

        if isinstance(spec, str) and sid is not None:
            spec = spec.replace("{source}", sid)
        sink = make_sink(spec)
        wrapped = sink if isinstance(sink, AsyncSink) else AsyncSink(sink, self.queue_size)
        wrapped.open()
        if self.on_open is not None:
            self.on_open(getattr(sink, "name", str(spec)), wrapped)
        return wrapped

    @staticmethod
    def _per_source(spec: Any) -> bool:
        return isinstance(spec, str) and "{source}" in spec

    def open(self, source_ids: list[str]) -> None:
        for spec in self.specs:
            if not self._per_source(spec):
                self._shared.append(self._open(spec, None))
        self._check_one_camera_per_video(source_ids)
        for sid in source_ids:
            self.add_source(sid)

    def _check_one_camera_per_video(self, source_ids: list[str]) -> None:
        """A video file of all sources would interleave their frames (each at another size
        and rate) in one clip at the first one's rate: refuse it, naming the fix."""
        from ..sinks.video import VideoSink

        if len(set(source_ids)) < 2:
            return
        for sink in self._shared:
            inner = getattr(sink, "sink", sink)
            if isinstance(inner, VideoSink) and inner.source is None:
                path = inner.path
                per = path.with_name(f"{path.stem}_{{source}}{path.suffix}")
                self.close(failed=True)
                raise ConfigError(f"video sink {str(path)!r} would interleave the frames of {len(set(source_ids))} "
                                  f"sources ({', '.join(sorted(set(source_ids)))}) in one clip; write one file per "
                                  f"source with --sink '{per}'")

    def add_source(self, sid: str) -> None:
        with self._lock:
            known = list(self._by_source)
        if sid in known:
            # a source back under its name after it ended or failed (not removed): its open
            # sinks go on; new ones on the same files would write every result twice
            return
        if known and sid not in known:
            self._check_one_camera_per_video(known + [sid])
        made = [self._open(spec, sid) for spec in self.specs if self._per_source(spec)]
        with self._lock:
            self._by_source.setdefault(sid, []).extend(made)

    def remove_source(self, sid: str) -> None:
        with self._lock:
            sinks = self._by_source.pop(sid, [])
        self._close(sinks, failed=False)

    def discard_source(self, sid: str) -> None:
        """Close the sinks of one source without publishing (a source that never delivered)."""
        with self._lock:
            sinks = self._by_source.pop(sid, [])
        self._close(sinks, failed=True)

    def write(self, frame: Frame, result: Result) -> None:
        for sink in self._shared:
            sink.write(frame, result)
        for sink in self._by_source.get(frame.source_id, ()):
            sink.write(frame, result)

    def close(self, failed: bool) -> None:
        """Close all (abort: drop unfinished file output when the run failed)."""
        with self._lock:
            sinks = self._shared + [s for group in self._by_source.values() for s in group]
            self._shared, self._by_source = [], {}
        self._close(sinks, failed)

    def _close(self, sinks: list[Any], failed: bool) -> None:
        for sink in sinks:
            name = getattr(sink, "name", str(sink))
            try:
                sink.abort() if failed else sink.close()
            except EdgeSDKError as exc:
                log.error("closing sink %s failed: %s", name, exc)
                self.errors.append(f"sink {name}: {exc}")
            last = getattr(sink, "last_error", None)
            # a file sink that failed a write has lost output; a broker's hiccup is counted only
            if last is not None and hasattr(getattr(sink, "sink", sink), "path"):
                self.errors.append(f"sink {name}: {last}")
            self.stats[name] = dict(getattr(sink, "stats", {}))

    def error(self) -> Optional[SinkError]:
        """The failure to report after the run, if any sink lost output."""
        if not self.errors:
            return None
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        return SinkError(f"{self.errors[0]}{more}; the run's output is incomplete")
