"""Observers of a running pipeline: each gets the statistics snapshot twice a second and
once more at the end. The status line, the Prometheus endpoint and the SLO watch are
observers; a user's own (a dashboard, a watchdog) is one more in ``observers=[...]``.

`SloWatch` makes a missed latency target impossible to overlook: it adds ``slo`` to the
snapshot (status line, run report, metrics) and logs one warning with the likely cause.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Optional, Protocol

log = logging.getLogger("edgesdk.streaming")


class Observer(Protocol):
    def update(self, snap: dict[str, Any]) -> None: ...

    def close(self, snap: dict[str, Any]) -> None: ...


class StatusLine:
    """The one-line live status on stderr."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr

    def update(self, snap: dict[str, Any]) -> None:
        from .stats import status_line

        self.stream.write("\r" + status_line(snap) + "\x1b[K")
        self.stream.flush()

    def close(self, snap: dict[str, Any]) -> None:
        self.update(snap)
        self.stream.write("\n")
        self.stream.flush()


class MetricsPublisher:
    """Pushes the snapshot to a shared Prometheus `MetricsServer` at most once a second."""

    def __init__(self, server: Any, every_s: float = 1.0) -> None:
        self.server = server
        self.every_s = every_s
        self._last = 0.0

    def update(self, snap: dict[str, Any]) -> None:
        now = time.time()
        if now - self._last >= self.every_s:
            self.server.update(snap)
            self._last = now

    def close(self, snap: dict[str, Any]) -> None:
        self.server.update(snap)
        if hasattr(self.server, "close"):
            self.server.close()


#: delivered frames before the SLO watch judges by the p99 (p99 of a handful of frames says little)
MIN_FRAMES = 50
#: ...but a median over the target on this many frames is a miss however the rest go (a
#: 40-frame clip at p50 6.5 s against --slo-ms 50 was never judged)
MIN_FRAMES_MEDIAN = 10


class SloWatch:
    """Compares the e2e p99 with the adaptive batcher's latency target and says why it is missed.

    Causes, in the order they are checked: lossless sources (files without --realtime) are
    read as fast as they decode, so frames queue behind each other by design; the engine
    is busy nearly all the time (more frames offered than it can run); otherwise the host
    (preprocess, decode, sinks, other programs) takes the time.
    """

    def __init__(self, slo_ms: float, lossless_sources: list[str]) -> None:
        self.slo_ms = float(slo_ms)
        self.lossless = list(lossless_sources)
        self.warned = False

    def judge(self, snap: dict[str, Any]) -> Optional[dict[str, Any]]:
        e2e = snap["e2e"]
        n = int(e2e["count"])
        half_late = n >= MIN_FRAMES_MEDIAN and float(e2e["p50_ms"]) > self.slo_ms
        if n < MIN_FRAMES and not half_late:
            return None
        p99 = float(e2e["p99_ms"])
        out: dict[str, Any] = {"slo_ms": self.slo_ms, "p99_ms": p99, "missed": p99 > self.slo_ms}
        if out["missed"]:
            out["cause_short"], out["cause"] = self._cause(snap)
        return out

    def _cause(self, snap: dict[str, Any]) -> tuple[str, str]:
        if self.lossless:
            return ("files read as fast as possible",
                    f"source(s) {', '.join(self.lossless)} are files read as fast as they decode (no --realtime): "
                    "every frame is kept and queues behind the others, so latency is throughput-bound by design; "
                    "add --realtime to play them like cameras, or ignore the SLO for offline runs")
        busy = snap.get("device_busy", 0.0)
        if busy >= 0.85:
            return ("engine overloaded",
                    f"the engine was busy {busy * 100:.0f}% of the time: more frames are offered than it can run "
                    "within the target; fewer/slower sources, a smaller model or input, --replicas, "
                    "or a larger --slo-ms")
        return ("host-side delay",
                f"the engine was busy only {busy * 100:.0f}%: time goes to preprocessing, decoding, sinks or other "
                "programs on this machine (see the per-stage table)")

    def update(self, snap: dict[str, Any]) -> None:
        verdict = self.judge(snap)
        if verdict is None:
            return
        snap["slo"] = verdict
        if verdict["missed"] and not self.warned:
            self.warned = True
            log.warning("latency target missed: p99 %.0f ms > --slo-ms %.0f: %s", verdict["p99_ms"], self.slo_ms,
                        verdict["cause"])

    def close(self, snap: dict[str, Any]) -> None:
        self.update(snap)


def notify(observers: list[Observer], snap: dict[str, Any]) -> None:
    """Give each observer the snapshot; one that fails is logged and dropped (its bug must
    not stop the run)."""
    for obs in list(observers):
        try:
            obs.update(snap)
        except Exception:
            log.exception("observer %r failed", obs)
            observers.remove(obs)


def close_all(observers: list[Observer], snap: dict[str, Any]) -> None:
    for obs in observers:
        try:
            obs.close(snap)
        except Exception:
            log.exception("observer %r failed at the end", obs)
