"""What a finished run says: the final statistics and why it stopped."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .stats import markdown


@dataclass
class RunReport:
    """What a finished run says: the final statistics and why it stopped."""

    stats: dict[str, Any]
    stop_reason: str
    source_errors: list[str] = field(default_factory=list)
    policy: dict[str, Any] = field(default_factory=dict)
    buffer_high_water: dict[str, int] = field(default_factory=dict)
    buffer_capacity: dict[str, int] = field(default_factory=dict)
    #: each sink's own counters after it was closed: written, dropped, errors, high_water...
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: sinks that lost output (a video writer that could not open...): the run failed
    sink_errors: list[str] = field(default_factory=list)

    @property
    def failed_sources(self) -> dict[str, str]:
        """{source id: why} of the sources that ended as failed."""
        return {sid: str(s.get("reason", "")) for sid, s in (self.stats.get("sources") or {}).items()
                if s.get("state") == "failed"}

    def markdown(self) -> str:
        text = markdown(self.stats)
        text += f"\n- stopped: {self.stop_reason}\n- batching: {self.policy}\n"
        for err in self.source_errors:
            text += f"- source error: {err}\n"
        for err in self.sink_errors:
            text += f"- sink error: {err}\n"
        return text
