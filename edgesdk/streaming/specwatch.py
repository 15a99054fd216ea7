"""Re-reading a stream spec file while the pipeline runs (``edgesdk run --spec FILE``):
sources added to the file are added, sources gone from it are removed, a source whose uri
or weight changed is replaced; no restart, the statistics of every source are kept (a
removed one stays in the report as ``ended``).

The file is checked twice a second (its inode, modification time and size; an observer of the
pipeline; its counts are the ``spec`` gauge of the statistics). A file that does not
parse is refused with a warning naming the error and the sources keep running as they
are; other keys (model, batching, sinks...) changed in the file are named in a warning:
they need a restart.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError, EdgeSDKError
from .sources import make_source, split_name
from .spec import load_spec_file, parse_spec

log = logging.getLogger("edgesdk.streaming")


def wanted_sources(spec: dict[str, Any]) -> dict[str, tuple[str, float]]:
    """{source id: (spec string, weight)} of a stream description."""
    _, sources, _, kwargs = parse_spec(spec)
    weights = kwargs.get("weights", {})
    out: dict[str, tuple[str, float]] = {}
    for entry in sources:
        name, text = split_name(str(entry))
        sid = name or make_source(str(entry)).source_id
        if sid in out:
            raise ConfigError(f"stream spec: source id {sid!r} is used twice; give each source its own id")
        out[sid] = (str(entry), float(weights.get(sid, 1.0)))
    return out


def pipeline_from_file(path: Any, watch: bool = True, **overrides: Any) -> Any:
    """The `Pipeline` a spec file describes; with `watch`, its source changes are applied
    while it runs (a `SpecWatch` observer)."""
    from .pipeline import Pipeline

    spec = load_spec_file(path)
    try:
        pipe = Pipeline.from_spec(spec, **overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if watch:
        watcher = SpecWatch(pipe, Path(path), spec)
        pipe.add_observer(watcher)
        pipe.stats.gauge("spec", watcher.describe)  # reloads / refused edits in stats, report, metrics
    return pipe


class SpecWatch:
    """Observer: reconciles the pipeline's sources with the spec file when it changes."""

    def __init__(self, pipeline: Any, path: Path, spec: Optional[dict[str, Any]] = None) -> None:
        self.pipeline = pipeline
        self.path = Path(path)
        self._stamp = self._file_stamp()
        spec = load_spec_file(self.path) if spec is None else spec
        self._current = wanted_sources(spec)
        self._rest = self._others(spec)
        self.reloads = 0
        self.refused = 0
        self.last_error: Optional[str] = None

    def _file_stamp(self) -> Optional[tuple[int, int, int]]:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        # the inode too: a file replaced by rename (an editor, `edgesdk provision`) within the
        # modification-time granularity of the file system, at the same size, is still a change
        return st.st_ino, st.st_mtime_ns, st.st_size

    @staticmethod
    def _others(spec: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in spec.items() if k not in ("sources", "weights")}

    def update(self, snap: dict[str, Any]) -> None:
        self._check()

    def _check(self) -> None:
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            spec = load_spec_file(self.path)
            wanted = wanted_sources(spec)
        except EdgeSDKError as exc:
            self.refused += 1
            self.last_error = str(exc)
            log.warning("%s changed but was not applied (the sources keep running as they are): %s", self.path, exc)
            return
        self._apply(wanted)
        changed = sorted(k for k in set(self._others(spec)) | set(self._rest)
                         if self._others(spec).get(k) != self._rest.get(k))
        if changed:
            log.warning("%s: %s changed; only sources are applied while running, the rest needs a restart",
                        self.path, ", ".join(changed))
        self.reloads += 1

    def _apply(self, wanted: dict[str, tuple[str, float]]) -> None:
        """Add the new sources first (a pipeline whose every source is gone ends), then
        remove what is gone or changed, then add the changed ones again."""
        current = self._current
        for sid in [sid for sid in wanted if sid not in current]:
            self._add(sid, *wanted[sid])
        for sid in [sid for sid in current if current[sid] != wanted.get(sid)]:
            try:
                self.pipeline.remove_source(sid)
            except ConfigError as exc:  # it had already ended (a file at its end): nothing to stop
                log.info("spec: %s", exc)
            current.pop(sid)
            if sid in wanted:
                self._add(sid, *wanted[sid])
        log.info("spec %s re-read: %d source(s) (%s)", self.path, len(current), ", ".join(current))

    def _add(self, sid: str, text: str, weight: float) -> None:
        name, body = split_name(text)
        try:
            self.pipeline.add_source(body, name or sid, weight)
        except EdgeSDKError as exc:
            log.warning("spec: source %s not added: %s", sid, exc)
            return
        self._current[sid] = (text, weight)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "reloads": self.reloads, "refused": self.refused,
                "sources": sorted(self._current), "last_error": self.last_error}

    def close(self, snap: dict[str, Any]) -> None:
        pass
