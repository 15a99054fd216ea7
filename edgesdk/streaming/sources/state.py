"""The life of a source as explicit states with allowed transitions (after Roboflow's
VideoSource): stats, the status line and metrics show each source's state, and a source
that never connects ends as ``failed`` with its error, never as a silent zombie.

    connecting -> live | failed | ended
    live -> reconnecting | ended | failed
    reconnecting -> live | failed | ended
    ended, failed: final
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional

log = logging.getLogger("edgesdk.streaming")

CONNECTING, LIVE, RECONNECTING, ENDED, FAILED = "connecting", "live", "reconnecting", "ended", "failed"
STATES = (CONNECTING, LIVE, RECONNECTING, ENDED, FAILED)
#: numeric code of each state for metrics (a Prometheus gauge per source)
STATE_CODES = {s: i for i, s in enumerate(STATES)}
TRANSITIONS = {
    CONNECTING: {LIVE, FAILED, ENDED},
    LIVE: {RECONNECTING, ENDED, FAILED},
    RECONNECTING: {LIVE, FAILED, ENDED},
    ENDED: set(),
    FAILED: set(),
}


class IllegalTransition(RuntimeError):
    """A bug: a source moved between states the table does not allow."""


class SourceState:
    """The current state of one source, thread-safe, with the time it was entered and why."""

    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        self._lock = threading.Lock()
        self.state = CONNECTING
        self.since = time.time()
        self.reason = ""

    def to(self, new: str, reason: str = "") -> None:
        with self._lock:
            if new == self.state:
                return
            if new not in TRANSITIONS[self.state]:
                raise IllegalTransition(f"source {self.source_id}: {self.state} -> {new} is not allowed")
            log.info("source %s: %s -> %s%s", self.source_id, self.state, new, f" ({reason})" if reason else "")
            self.state, self.since, self.reason = new, time.time(), reason

    def note(self, reason: str) -> None:
        """Say why the source is still in its state (a reconnect attempt that failed, say)."""
        with self._lock:
            self.reason = reason

    @property
    def final(self) -> bool:
        return self.state in (ENDED, FAILED)

    def describe(self) -> dict[str, object]:
        with self._lock:
            out: dict[str, object] = {"state": self.state, "since": round(self.since, 3)}
            if self.reason:
                out["reason"] = self.reason
            return out


def state_of(states: dict[str, SourceState], source_id: str) -> Optional[str]:
    st = states.get(source_id)
    return st.state if st is not None else None
