"""Live statistics of a streaming run: what a status line, a Prometheus endpoint and a
final report are made from.

Per-stage latency (p50/p99 over a window of recent samples), end-to-end latency,
frames in and out per second (overall and over the last few seconds), frames dropped
by reason, batch-size histogram and reconnects. All methods are thread-safe: source
threads, the dispatcher and the completion thread record here concurrently.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import numpy as np

#: stages in pipeline order; others may be added by name
STAGES = ("queue", "preprocess", "infer", "decode", "sink")


@dataclass(frozen=True)
class BatchRecord:
    """When one batch went through the pipeline (time.time() seconds)."""

    size: int  # frames the engine ran on
    oldest_capture: float  # capture time of the batch's oldest frame
    t_take: float  # taken from the buffer
    t_submit: float  # handed to the engine (after preprocess)
    t_start: float  # the engine could start it (submitted, and the batch before it done)
    t_done: float  # the engine finished it
    t_out: float  # its results were delivered (decode, cascade, sinks)
    predicted_s: float  # the engine time the batcher expected (0: not known)


class Window:
    """The most recent `size` samples of one quantity (seconds), for percentiles."""

    def __init__(self, size: int = 4096) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self.count = 0
        self.total = 0.0

    def add(self, value: float) -> None:
        self._samples.append(value)
        self.count += 1
        self.total += value

    def extend(self, values: Iterable[float]) -> None:
        for v in values:
            self.add(v)

    def summary_ms(self) -> dict[str, float]:
        if not self._samples:
            return {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0, "max_ms": 0.0}
        a = np.fromiter(self._samples, dtype=np.float64) * 1000.0
        p50, p99 = np.percentile(a, [50, 99])
        return {"count": self.count, "p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3),
                "mean_ms": round(float(a.mean()), 3), "max_ms": round(float(a.max()), 3)}

    def values(self) -> np.ndarray:
        return np.fromiter(self._samples, dtype=np.float64)


class RateMeter:
    """Events per second over the last `horizon` seconds (and the total count)."""

    def __init__(self, horizon: float = 3.0) -> None:
        self.horizon = horizon
        self._times: deque[float] = deque()
        self.total = 0

    def add(self, n: int = 1, now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        self.total += n
        for _ in range(n):
            self._times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.horizon:
            self._times.popleft()

    def rate(self, now: Optional[float] = None, since: Optional[float] = None) -> float:
        now = time.time() if now is None else now
        self._trim(now)
        span = self.horizon if since is None else min(self.horizon, max(now - since, 1e-9))
        return len(self._times) / span if span > 0 else 0.0


class PipelineStats:
    """Everything a pipeline counts. `snapshot()` gives a plain dict (JSON-ready)."""

    def __init__(self, window: int = 4096) -> None:
        self._lock = threading.Lock()
        self._window = window
        self.started = time.time()
        self.stopped: Optional[float] = None
        self._stages: dict[str, Window] = {s: Window(window) for s in STAGES}
        self._e2e = Window(window)
        self._e2e_by_source: dict[str, Window] = {}
        self._in = RateMeter()
        self._out = RateMeter()
        self._in_by_source: Counter[str] = Counter()
        self._out_by_source: Counter[str] = Counter()
        self._drops: Counter[str] = Counter()
        self._drops_by_source: dict[str, Counter[str]] = {}
        self._cached_by_source: Counter[str] = Counter()
        self._batches: Counter[int] = Counter()
        self._reconnects: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._gauges: dict[str, Callable[[], Any]] = {}
        self._device = Window(window)
        self._device_busy = 0.0
        #: one record per batch (bounded): what a benchmark needs to see where time went
        self._timeline: deque[BatchRecord] = deque(maxlen=window)

    # ------------------------------------------------------------------ recording
    def frame_in(self, source_id: str, now: Optional[float] = None) -> None:
        with self._lock:
            self._in.add(1, now)
            self._in_by_source[source_id] += 1

    def frame_out(self, source_id: str, e2e_s: float, now: Optional[float] = None) -> None:
        with self._lock:
            self._out.add(1, now)
            self._out_by_source[source_id] += 1
            self._e2e.add(e2e_s)
            w = self._e2e_by_source.get(source_id)
            if w is None:
                w = self._e2e_by_source[source_id] = Window(self._window)
            w.add(e2e_s)

    def stage(self, name: str, seconds: float, n: int = 1) -> None:
        """Record a stage time; `n` > 1 records the same time for n frames (a batch)."""
        with self._lock:
            w = self._stages.get(name)
            if w is None:
                w = self._stages[name] = Window(self._window)
            for _ in range(n):
                w.add(seconds)

    def device(self, seconds: float) -> None:
        """Time the engine was busy with one batch (its utilization is busy time / elapsed)."""
        with self._lock:
            self._device_busy += seconds
            self._device.add(seconds)

    def batch_done(self, record: "BatchRecord") -> None:
        """A batch left the pipeline (engine and sinks): its timeline entry."""
        with self._lock:
            self._timeline.append(record)

    def timeline(self) -> list["BatchRecord"]:
        """The recent batches, in completion order (for benchmarks and diagnosis)."""
        with self._lock:
            return list(self._timeline)

    def drop(self, reason: str, n: int = 1, source: Optional[str] = None) -> None:
        """Count dropped frames. Reasons: buffer_full, stale, superseded, removed, aborted,
        sink_full:<sink>, error:<stage>. With `source` the total is kept as
        ``reason:source`` and the source's own table gets ``reason``."""
        if n:
            with self._lock:
                self._drops[f"{reason}:{source}" if source is not None else reason] += n
                if source is not None:
                    self._drops_by_source.setdefault(source, Counter())[reason] += n

    def cached(self, source_id: str, n: int = 1) -> None:
        """Results re-emitted from the cache (change gate) instead of a fresh inference."""
        with self._lock:
            self._cached_by_source[source_id] += n

    def batch(self, size: int) -> None:
        with self._lock:
            self._batches[size] += 1

    def reconnect(self, source_id: str) -> None:
        with self._lock:
            self._reconnects[source_id] += 1

    def error(self, where: str) -> None:
        with self._lock:
            self._errors[where] += 1

    def gauge(self, name: str, fn: Callable[[], Any]) -> None:
        """A value read at snapshot time (queue sizes, sink drops, the batcher's state)."""
        with self._lock:
            self._gauges[name] = fn

    def stop(self) -> None:
        self.stopped = time.time()

    def _sources(self, elapsed: float, states: dict[str, Any]) -> dict[str, Any]:
        """Per-source counters (lock held): in, out, fps out, e2e, drops by reason, cached, state."""
        ids = set(self._in_by_source) | set(self._out_by_source) | set(self._reconnects) | set(states)
        out: dict[str, Any] = {}
        for sid in sorted(ids):
            row: dict[str, Any] = {
                "frames_in": self._in_by_source[sid], "frames_out": self._out_by_source[sid],
                "fps_out": round(self._out_by_source[sid] / elapsed, 2),
                "e2e": self._e2e_by_source[sid].summary_ms() if sid in self._e2e_by_source else None,
                "reconnects": self._reconnects[sid],
                "drops": dict(sorted(self._drops_by_source.get(sid, Counter()).items())),
                "cached": self._cached_by_source[sid]}
            if sid in states:
                row.update(states[sid])
            out[sid] = row
        return out

    # ------------------------------------------------------------------ reading
    @property
    def frames_in(self) -> int:
        return self._in.total

    @property
    def frames_out(self) -> int:
        return self._out.total

    def e2e_values(self) -> np.ndarray:
        """Recent end-to-end latencies in seconds (for benchmarks)."""
        with self._lock:
            return self._e2e.values()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            gauges = dict(self._gauges)
        gauge_values: dict[str, Any] = {}
        for name, fn in gauges.items():
            gauge_values[name] = fn()  # outside the lock: gauges may take other locks
        with self._lock:
            now = self.stopped or time.time()
            elapsed = max(now - self.started, 1e-9)
            drops = Counter(self._drops)
            for name, value in gauge_values.items():
                # sinks report their own drops as gauges named drops.<reason>
                if name.startswith("drops.") and isinstance(value, (int, float)) and value:
                    drops[name[len("drops."):]] += int(value)
            batches = dict(sorted(self._batches.items()))
            n_batches = sum(batches.values())
            return {
                "elapsed_s": round(elapsed, 3),
                "frames_in": self._in.total,
                "frames_out": self._out.total,
                "fps_in": round(self._in.total / elapsed, 2),
                "fps_out": round(self._out.total / elapsed, 2),
                "fps_in_now": round(self._in.rate(now, self.started), 2),
                "fps_out_now": round(self._out.rate(now, self.started), 2),
                "e2e": self._e2e.summary_ms(),
                "stages": {name: w.summary_ms() for name, w in self._stages.items()},
                "sources": self._sources(elapsed, gauge_values.get("source_states") or {}),
                "drops": dict(sorted(drops.items())),
                "dropped": sum(drops.values()),
                "batch_sizes": batches,
                "device_batch": self._device.summary_ms(),
                "device_busy": round(min(1.0, self._device_busy / elapsed), 3),
                "batch_mean": round(sum(b * n for b, n in batches.items()) / n_batches, 2) if n_batches else 0.0,
                "reconnects": sum(self._reconnects.values()),
                "errors": dict(self._errors),
                "cached": sum(self._cached_by_source.values()),
                "gauges": {k: v for k, v in gauge_values.items()
                           if not k.startswith("drops.") and k != "source_states"},
            }


def status_line(snap: dict[str, Any], width: int = 160) -> str:
    """One terminal line: time, fps in/out, e2e p50/p99, infer p50, mean batch, drops, then the
    flags (reconnects, cached, source states, failed sources, SLO missed). Past `width` the drops' breakdown,
    the infer p50, the padding and the SLO miss's cause go first, so a flag is never cut off."""
    by_kind: Counter[str] = Counter()
    for reason, n in snap["drops"].items():
        by_kind[reason.split(":")[0]] += n
    kinds = by_kind.most_common(3)
    e2e, infer = snap["e2e"], snap["stages"].get("infer", {})
    head = (f"{snap['elapsed_s']:7.1f}s | in {snap['fps_in_now']:6.1f} fps | out {snap['fps_out_now']:6.1f} fps"
            f" | e2e p50 {e2e['p50_ms']:6.1f} p99 {e2e['p99_ms']:6.1f} ms")
    compact = (f"{snap['elapsed_s']:.1f}s | in {snap['fps_in_now']:.1f} | out {snap['fps_out_now']:.1f} fps"
               f" | e2e p50 {e2e['p50_ms']:.1f} p99 {e2e['p99_ms']:.1f} ms")
    infer_txt = f" | infer p50 {infer.get('p50_ms', 0):6.1f} ms"
    batch_txt = f" | batch {snap['batch_mean']:4.1f} | dropped {snap['dropped']}"
    flags, short_flags = _status_flags(snap), _status_flags(snap, short=True)
    lines = [head + infer_txt + batch_txt + _breakdown(kinds[:k]) + flags for k in range(len(kinds), -1, -1)]
    lines += [head + batch_txt + flags, compact + batch_txt + flags, compact + batch_txt + short_flags]
    for line in lines:
        if len(line) <= width:
            return line
    return lines[-1][:width]


def _breakdown(kinds: list[tuple[str, int]]) -> str:
    return f" ({', '.join(f'{k} {n}' for k, n in kinds)})" if kinds else ""


def _status_flags(snap: dict[str, Any], short: bool = False) -> str:
    """The status line's flags: what is unusual about the run right now; `short` leaves out the
    live sources' count and the SLO miss's cause (both also in the run report and log)."""
    flags = ""
    if snap["reconnects"]:
        flags += f" | reconnects {snap['reconnects']}"
    if snap.get("cached"):
        flags += f" | cached {snap['cached']}"
    states = Counter(s.get("state") for s in snap["sources"].values() if s.get("state"))
    if states and set(states) != {"live"}:
        shown = [(st, n) for st, n in sorted(states.items()) if not (short and st == "live")]
        flags += " | sources " + ", ".join(f"{n} {st}" for st, n in shown)
    # which sources failed, not only how many: the one thing to act on (reasons: log, report)
    failed = sorted(sid for sid, s in snap["sources"].items() if s.get("state") == "failed")
    if failed:
        flags += f" | FAILED: {', '.join(failed)}"[:60]
    slo = snap.get("slo")
    if slo and slo.get("missed"):
        flags += f" | SLO MISSED p99 {slo['p99_ms']:.0f} > {slo['slo_ms']:.0f} ms"
        flags += "" if short else f" ({slo['cause_short']})"
    return flags


def markdown(snap: dict[str, Any]) -> str:
    """A summary of a run as Markdown (what `edgesdk run` prints at the end)."""
    lines = [
        f"## Streaming run: {snap['elapsed_s']:.1f} s, {snap['frames_in']} frames in, {snap['frames_out']} out",
        "",
        f"- fps in {snap['fps_in']:.1f}, fps out {snap['fps_out']:.1f}",
        f"- end-to-end latency p50 {snap['e2e']['p50_ms']:.1f} ms, p99 {snap['e2e']['p99_ms']:.1f} ms",
        f"- batches: mean size {snap['batch_mean']:.2f}, histogram {snap['batch_sizes']}",
        f"- engine busy {snap['device_busy'] * 100:.0f}% of the time (per batch p50 {snap['device_batch']['p50_ms']:.1f} ms)",
        f"- dropped {snap['dropped']}" + (f": {snap['drops']}" if snap["drops"] else ""),
    ]
    if snap["reconnects"]:
        lines.append(f"- reconnects: {snap['reconnects']}")
    if snap["errors"]:
        lines.append(f"- errors: {snap['errors']}")
    slo = snap.get("slo")
    if slo and slo.get("missed"):
        lines.append(f"- **latency target missed**: p99 {slo['p99_ms']:.0f} ms > {slo['slo_ms']:.0f} ms: "
                     f"{slo['cause']}")
    if snap.get("cached"):
        lines.append(f"- results re-emitted from the change gate's cache: {snap['cached']}")
    gate = snap.get("gauges", {}).get("gate")
    if isinstance(gate, dict):
        lines.append(f"- change gate: threshold {gate['threshold']:g}, a fresh inference at least every "
                     f"{gate['max_age_s']:g} s; {gate['measure']}")
    lines += ["", "| stage | count | p50 ms | p99 ms |", "|---|---:|---:|---:|"]
    for name, s in list(snap["stages"].items()) + [("end-to-end", snap["e2e"])]:
        if s["count"]:
            lines.append(f"| {name} | {s['count']} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} |")
    if len(snap["sources"]) > 1:
        lines += ["", "| source | in | out | e2e p99 ms | reconnects | dropped | state |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for sid, s in snap["sources"].items():
            p99 = f"{s['e2e']['p99_ms']:.1f}" if s["e2e"] and s["e2e"].get("count") else "-"  # no result yet
            lines.append(f"| {sid} | {s['frames_in']} | {s['frames_out']} | {p99} | {s['reconnects']} "
                         f"| {sum(s['drops'].values())} | {s.get('state', '')} |")
    return "\n".join(lines) + "\n"
