"""The streaming pipeline: sources -> buffer -> batcher/preprocess -> engine (async,
several batches in flight) -> decode -> sinks, each stage in its own thread(s), joined
by bounded queues.

    source threads --(FrameBuffer: per-source lanes, live ones drop oldest)--> dispatcher
    dispatcher: plan a batch (policy), take frames, preprocess, runtime.submit -> Future
    --(in-flight queue, bounded by max_inflight)--> completion thread:
    wait the Future in submission order, decode, hand each (frame, result) to the sinks
    (each an AsyncSink: a slow sink drops, counted, and never stalls capture).

Results of one source come out in capture order: frames are taken oldest first and the
completion thread handles batches in the order they were submitted.

Shutdown (Ctrl-C, SIGTERM, `stop()`, `duration`, every source at its end): sources stop,
what is queued and in flight is finished and delivered, sinks are flushed and closed.
A second Ctrl-C abandons the queued frames (in-flight ones still complete).
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from ..errors import ConfigError, EdgeSDKError
from ..results import Frame, Result
from .batching import AdaptiveBatching, BatchPolicy, QueueView, batch_limit, make_policy
from .buffer import FrameBuffer
from .cascade import Cascade, load_stage
from .gate import ChangeGate, make_gate
from .model import StreamModel, load_stream_model
from .replicas import check_replicas, replicate, threads_per_replica
from .observers import MetricsPublisher, Observer, SloWatch, StatusLine
from .sinkset import SinkSet
from .sourceset import SourceSet, check_weight  # noqa: F401 (check_weight: part of this module's API)
from .sources import Backoff, Source, SourceReader
from .sources.state import SourceState
from .stats import PipelineStats, markdown

log = logging.getLogger("edgesdk.streaming")

#: default buffer capacity per source (frames); live sources drop the oldest beyond it
DEFAULT_BUFFER = 8
#: consecutive failed batches after which the pipeline stops with the error
MAX_CONSECUTIVE_ERRORS = 10

ResultCallback = Callable[[Frame, Result], None]


@dataclass
class _Batch:
    frames: list[Frame]
    transforms: list
    future: Future
    size: int  # after padding
    t_take: float
    t_pre: float  # preprocess seconds
    t_submit: float
    t_done: Optional[float] = None
    #: per frame: True if the engine ran on it, False if the change gate reuses a result
    inferred: Optional[list[bool]] = None

    @property
    def count(self) -> int:
        """Frames the engine ran on."""
        return len(self.frames) if self.inferred is None else sum(self.inferred)


def _done_future() -> "Future[dict]":
    fut: "Future[dict]" = Future()
    fut.set_result({})
    return fut


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

    def markdown(self) -> str:
        text = markdown(self.stats)
        text += f"\n- stopped: {self.stop_reason}\n- batching: {self.policy}\n"
        for err in self.source_errors:
            text += f"- source error: {err}\n"
        for err in self.sink_errors:
            text += f"- sink error: {err}\n"
        return text


class Pipeline:
    """Run a model over one or more sources, delivering results to sinks.

    Args:
        model: a bundle directory or model file, a `Predictor`, or a `StreamModel`.
        sources: specs for `make_source` (camera index, path, URL, glob, ``name=spec``),
            `Source` objects, callables or iterables of images.
        sinks: specs for `edgesdk.sinks.make_sink` ("out.jsonl", "out.mp4",
            "mqtt://host:port/topic", a callable(frame, result), or a Sink). A string with
            ``{source}`` makes one sink per source ("out_{source}.mp4").
        batching: "none" | "fixed" | "adaptive", or a `BatchPolicy`.
        batch: fixed batch size; for adaptive the upper bound.
        max_wait_ms: fixed batching: send a partial batch when its oldest frame waited this long.
        slo_ms: adaptive batching: end-to-end latency target.
        max_inflight: batches submitted to the engine at once.
        loop / realtime: files and folders: start again at the end / pace at native fps (live).
        buffer_size: frames buffered per source.
        max_frames: stop each source after this many frames.
        duration: stop after this many seconds.
        metrics_port: serve Prometheus metrics on this port.
        status: print a one-line status to stderr every half second.
        on_result: called in the completion thread for each result, in order (keep it fast).
        sink_queue: frames each sink may hold before dropping.
        profile: a device profile (or name) whose max_batch limits batching.
        reconnect: backoff for streams/cameras that drop.
        weights: source id -> share of the engine under overload (> 0; default 1 each).
        observers: more `Observer`s of the live statistics (see observers.py).
        gate / gate_threshold / gate_max_age_s: ``"change"`` skips the engine for frames
            that barely changed and re-emits the last result marked cached (see gate.py).
        then: cascade bundles run on the crops of the first bundle's detections, results in
            ``result.then[stage]`` (see cascade.py).
        control_port: serve add/remove/states of sources on 127.0.0.1:PORT (see control.py).
        replicas: engine instances of the model behind the batcher (a bundle or model path;
            at most the CPU cores; each gets cores / replicas threads unless `threads` is given).

    Sources can be added and removed while it runs (`add_source`, `remove_source`); each
    has a state (connecting, live, reconnecting, ended, failed) in the statistics.
    `Pipeline.from_spec(dict)` builds one from a provisioning-style description.
    """

    def __init__(
        self,
        model: Any,
        sources: Union[Any, Sequence[Any]],
        sinks: Iterable[Any] = (),
        *,
        batching: Union[str, BatchPolicy] = "none",
        batch: Optional[int] = None,
        max_wait_ms: Optional[float] = None,
        slo_ms: Optional[float] = None,
        max_inflight: int = 2,
        loop: bool = False,
        realtime: bool = False,
        buffer_size: Optional[int] = None,
        max_frames: Optional[int] = None,
        duration: Optional[float] = None,
        metrics_port: Optional[int] = None,
        status: bool = False,
        on_result: Optional[ResultCallback] = None,
        sink_queue: int = 64,
        backend: Optional[str] = None,
        profile: Any = None,
        reconnect: Optional[Backoff] = None,
        weights: Optional[dict[str, float]] = None,
        observers: Sequence[Observer] = (),
        gate: Union[None, str, ChangeGate] = None,
        gate_threshold: Optional[float] = None,
        gate_max_age_s: Optional[float] = None,
        replicas: int = 1,
        then: Sequence[Any] = (),
        control_port: Optional[int] = None,
        **runtime_kw: Any,
    ) -> None:
        if isinstance(sources, (str, int, Source)) or callable(sources):
            sources = [sources]
        self._source_specs = list(sources)
        if not self._source_specs:
            raise ConfigError("a pipeline needs at least one source (--source)")
        if max_inflight < 1:
            raise ConfigError(f"max_inflight must be >= 1, got {max_inflight}")
        self.replicas = check_replicas(replicas)
        if self.replicas > 1:
            if not isinstance(model, (str, Path)):
                raise ConfigError("replicas need a bundle directory or model file to load several times")
            # every replica busy and one batch ready behind them
            max_inflight = max(max_inflight, self.replicas + 1)
        if buffer_size is not None and buffer_size < 1:
            raise ConfigError(f"buffer size must be >= 1, got {buffer_size}")
        self.gate = gate if isinstance(gate, ChangeGate) else make_gate(gate, gate_threshold, gate_max_age_s)
        self._last_result: dict[str, tuple[int, Result]] = {}
        self._then_specs = list(then)
        self.control_port = control_port
        self.control: Any = None
        self.cascade: Optional[Cascade] = None
        self.policy = batching if isinstance(batching, BatchPolicy) else make_policy(batching, batch, max_wait_ms, slo_ms)
        self._model_spec = model
        self._backend = backend
        self._runtime_kw = runtime_kw
        self._sink_specs = list(sinks)
        self.max_inflight = max_inflight
        self.loop = loop
        self.realtime = realtime
        self.buffer_size = buffer_size
        self.max_frames = max_frames
        self.duration = duration
        self.metrics_port = metrics_port
        self.show_status = status
        self.on_result = on_result
        self.sink_queue = sink_queue
        self.profile = profile
        self.reconnect = reconnect

        self.stats = PipelineStats()
        self.buffer = FrameBuffer(on_drop=lambda sid, n: self.stats.drop("buffer_full", n, source=sid))
        self.source_set = SourceSet(self._source_specs, self.buffer, self.stats, self._lane_capacity,
                                    weights=weights, realtime=realtime, loop=loop, max_frames=max_frames,
                                    backoff=reconnect)
        self.model: Optional[StreamModel] = None
        self._owns_model = False
        self.sinks = SinkSet(self._sink_specs, sink_queue, on_open=self._sink_opened)
        self._observers: list[Observer] = list(observers)
        self._slo: Optional[SloWatch] = None
        self._stop = threading.Event()  # sources stop reading
        self._abort = threading.Event()  # abandon queued frames
        self._done = threading.Event()  # everything finished and closed
        self._inflight_q: "queue.Queue[Optional[_Batch]]" = queue.Queue()
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._busy_lock = threading.Lock()
        self._progress = threading.Event()  # a batch completed (wakes a just-in-time wait)
        self._busy_until = 0.0
        self._inflight = 0
        self._consecutive_errors = 0
        self._threads: list[threading.Thread] = []
        self._fatal: Optional[BaseException] = None
        self._last_index: dict[str, int] = {}
        self.stop_reason = ""
        self._started = False
        self._closed = False
        self._finish_lock = threading.Lock()

    # ------------------------------------------------------------------ setup
    def _sink_opened(self, name: str, wrapped: Any) -> None:
        self.stats.gauge(f"drops.sink_full:{name}", lambda w=wrapped: w.stats.get("dropped", 0))

    @classmethod
    def from_spec(cls, spec: dict[str, Any], **overrides: Any) -> "Pipeline":
        """A pipeline from a provisioning-style description::

            {"model": "bundle/", "sources": ["cam0=0", {"id": "door", "uri": "rtsp://...", "weight": 2}],
             "sinks": ["out_{source}.jsonl"], "batching": "adaptive", "slo_ms": 200, ...}

        Other keys are `Pipeline` keyword arguments; `overrides` win over the spec."""
        from .spec import parse_spec

        model, sources, sinks, kwargs = parse_spec(spec)
        kwargs.update(overrides)
        return cls(model, sources, sinks, **kwargs)

    def _profile_limit(self) -> Optional[int]:
        prof = self.profile
        if prof is None and self.model is not None and self.model.bundle is not None:
            prof = self.model.bundle.manifest.profile
        if prof is None:
            return None
        if isinstance(prof, dict):
            return prof.get("max_batch")
        if isinstance(prof, str):
            try:
                from ..profiles import load_profile
            except ImportError:
                return None
            try:
                prof = load_profile(prof)
            except EdgeSDKError as exc:
                log.warning("profile %r named by the bundle is not available here (%s); no profile batch limit",
                            prof, exc)
                return None
        return getattr(prof, "max_batch", None)

    def start(self) -> "Pipeline":
        """Open sources, sinks and the model, and start the threads. Raises SourceError /
        SinkError / BundleError naming what could not be opened (nothing is left running)."""
        if self._started:
            return self
        self._started = True
        try:
            self.source_set.build()
            self.model, self._owns_model = self._load_model()
            self.policy.limit(batch_limit(self.model.max_batch, self._profile_limit()))
            if self._then_specs:
                self.cascade = Cascade([], self.stats)
                self.cascade.check_first(self.model)
                for spec in self._then_specs:
                    self.cascade.stages.append(load_stage(spec, self._backend, **self._runtime_kw))
            self.sinks.open(self.source_set.ids)
            self._make_observers()
            # sources last: a camera or stream opened before a slow model load would
            # start with seconds of stale frames
            self.source_set.open()
        except BaseException:
            self._close_all()
            self._done.set()
            raise
        self.stats.gauge("source_states", self.source_set.describe)
        self.stats.gauge("queued", lambda: self.buffer.sizes())
        self.stats.gauge("inflight", lambda: self._inflight)
        self.stats.gauge("batching", self.policy.describe)
        if self.gate is not None:
            self.stats.gauge("gate", self.gate.describe)
        self.stats.started = time.time()
        # lanes before the dispatcher: a buffer without lanes counts as exhausted
        self.source_set.start()
        self._threads = [threading.Thread(target=self._dispatch_loop, name="dispatcher", daemon=True),
                         threading.Thread(target=self._complete_loop, name="completion", daemon=True),
                         threading.Thread(target=self._monitor_loop, name="monitor", daemon=True)]
        for t in self._threads:
            t.start()
        if self.control_port is not None:
            from .control import ControlServer

            try:
                self.control = ControlServer(self, self.control_port)
            except EdgeSDKError:
                self.abort("control endpoint")
                self.wait(10)
                raise
        log.info("pipeline started: %d source(s), batching %s", len(self.sources), self.policy.describe())
        return self

    def _load_model(self) -> tuple[StreamModel, bool]:
        if self.replicas == 1:
            return load_stream_model(self._model_spec, self._backend, **self._runtime_kw)
        kw = dict(self._runtime_kw, threads=threads_per_replica(self.replicas, self._runtime_kw.get("threads")))
        return replicate(lambda: load_stream_model(self._model_spec, self._backend, **kw)[0], self.replicas), True

    def _make_observers(self) -> None:
        if self.metrics_port is not None:
            from ..sinks.prometheus import MetricsServer

            self._observers.append(MetricsPublisher(MetricsServer.shared(self.metrics_port)))
        if self.show_status:
            self._observers.append(StatusLine())
        if isinstance(self.policy, AdaptiveBatching):
            self._slo = SloWatch(self.policy.slo_s * 1000.0, self.source_set.lossless_ids())

    def _lane_capacity(self) -> int:
        return self.buffer_size or max(DEFAULT_BUFFER, 2 * self.policy.max_batch)

    @property
    def sources(self) -> list[Source]:
        return self.source_set.sources

    @property
    def readers(self) -> list[SourceReader]:
        return self.source_set.readers

    @property
    def states(self) -> dict[str, SourceState]:
        return self.source_set.states

    @property
    def weights(self) -> dict[str, float]:
        return self.source_set.weights

    # ------------------------------------------------------------------ control
    def add_source(self, spec: Any, name: Optional[str] = None, weight: float = 1.0) -> str:
        """Add a source to the running pipeline; returns its id. It is opened in its own
        thread (state ``connecting``, then ``live``, or ``failed`` with the reason)."""
        if not self.running or self._stop.is_set():
            raise ConfigError("add_source needs a running pipeline (call start() first; it has not stopped)")
        return self.source_set.add(spec, name, weight, before_start=self.sinks.add_source)

    def remove_source(self, source_id: str, timeout: float = 10.0) -> None:
        """Stop one source of the running pipeline; its queued frames are dropped (counted as
        ``removed``), its statistics are kept, its per-source sinks are closed."""
        self.stats.drop("removed", self.source_set.remove(source_id, timeout), source=source_id)
        self.sinks.remove_source(source_id)
        if self.gate is not None:
            self.gate.forget(source_id)
        log.info("source removed: %s", source_id)

    def stop(self, reason: str = "stopped") -> None:
        """Stop capturing; queued and in-flight frames are finished and delivered."""
        if not self._stop.is_set():
            self.stop_reason = self.stop_reason or reason
            log.info("stopping: %s", reason)
            self._stop.set()
            self.source_set.stop()

    def abort(self, reason: str = "aborted") -> None:
        """Stop now: queued frames are dropped (counted); in-flight batches still finish."""
        self.stop(reason)
        self._abort.set()
        self.buffer.close()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until the run has finished and everything is closed."""
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        return self._started and not self._done.is_set()

    def snapshot(self) -> dict[str, Any]:
        """The live statistics, with the SLO verdict when batching has a latency target."""
        snap = self.stats.snapshot()
        if self._slo is not None:
            self._slo.update(snap)
        return snap

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop("context exit")
        self.wait()

    def run(self, handle_signals: bool = True) -> RunReport:
        """Start, wait until done (sources ended, duration, stop(), Ctrl-C/SIGTERM), return the report.

        Raises the error that stopped the run (engine failing repeatedly), or the first
        source error, after everything was shut down cleanly.
        """
        restore: dict[int, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            def handler(signum: int, _frame: Any) -> None:
                name = signal.Signals(signum).name
                if self._stop.is_set():
                    self.abort(f"{name} (second)")
                else:
                    self.stop(name)

            for sig in (signal.SIGINT, signal.SIGTERM):
                restore[sig] = signal.signal(sig, handler)
        try:
            self.start()
            while not self.wait(0.2):
                pass
        finally:
            for sig, old in restore.items():
                signal.signal(sig, old)
            if not self._done.is_set():  # an exception in start() or here
                self.abort("error")
                self.wait(10)
        report = self.report()
        if self._fatal is not None:
            raise self._fatal
        errors = self.source_set.errors
        if errors:
            raise errors[0]
        sink_error = self.sinks.error()
        if sink_error is not None:
            raise sink_error
        return report

    def report(self) -> RunReport:
        return RunReport(
            stats=self.snapshot(), stop_reason=self.stop_reason or "running",
            source_errors=[str(e) for e in self.source_set.errors],
            policy=self.policy.describe(), buffer_high_water=self.buffer.high_water(),
            buffer_capacity=self.buffer.capacities(), sinks=dict(self.sinks.stats),
            sink_errors=list(self.sinks.errors),
        )

    # ------------------------------------------------------------------ threads
    def _view(self) -> QueueView:
        now = time.time()
        with self._busy_lock:
            busy, inflight = self._busy_until, self._inflight
        stamps, oldest_lossless = self.buffer.queue_times()
        return QueueView(now=now, queued=len(stamps), oldest=stamps[0] if stamps else None,
                         arrival_rate=self.buffer.arrival_rate(now), busy_until=max(busy, now), inflight=inflight,
                         timestamps=stamps, oldest_lossless=oldest_lossless, lanes=self.buffer.active_lanes(),
                         next_fair=self.buffer.next_fair_newest())

    def _acquire_slot(self) -> bool:
        while not self._slots.acquire(timeout=0.1):
            if self._abort.is_set():
                return False
        return True

    def _dispatch_loop(self) -> None:
        assert self.model is not None
        model, policy, buffer, stats = self.model, self.policy, self.buffer, self.stats
        have_slot = False
        try:
            while not self._abort.is_set():
                if not have_slot:
                    if not self._acquire_slot():
                        break
                    have_slot = True
                if not buffer.wait_any(0.1):
                    if buffer.exhausted:
                        break
                    continue
                plan = policy.plan(self._view())
                if plan.not_before is not None:
                    # just in time: wait until then (or until a batch completes), plan again
                    delay = plan.not_before - time.time()
                    if delay > 0:
                        self._progress.wait(min(delay, 0.5))
                        self._progress.clear()
                    continue
                if plan.stale_before is not None or plan.keep_per_lane is not None:
                    for f in buffer.drop_stale(plan.stale_before, plan.keep_per_lane):
                        stats.drop("stale", 1, source=f.source_id)
                frames = buffer.take(plan.size, plan.deadline)
                if not frames:
                    continue
                if self._abort.is_set():
                    stats.drop("aborted", len(frames))
                    break
                groups = self._groups(frames)
                have_slot = not self._submit(groups[0])
                for g in groups[1:]:  # frames a dynamic-size model cannot take in one call
                    if not self._acquire_slot():
                        stats.drop("aborted", len(g))
                        continue
                    if not self._submit(g):
                        self._slots.release()
        except Exception as exc:  # a bug here must not hang the pipeline silently
            log.exception("dispatcher failed")
            self._fatal = exc
            self.abort("internal error")
        finally:
            if have_slot:
                self._slots.release()
            for f in buffer.take(10**9, time.time()):
                stats.drop("aborted", 1, source=f.source_id)
            self._inflight_q.put(None)

    def _groups(self, frames: list[Frame]) -> list[list[Frame]]:
        """Split a batch by the input size a dynamic-size model needs (one call per size)."""
        key = self.model.group_key if self.model is not None else None
        if key is None or len(frames) == 1:
            return [frames]
        groups: dict[Any, list[Frame]] = {}
        for f in frames:
            groups.setdefault(key(f.image), []).append(f)
        return list(groups.values())

    def _submit(self, frames: list[Frame]) -> bool:
        assert self.model is not None
        model, stats = self.model, self.stats
        t_take = time.time()
        for f in frames:
            stats.stage("queue", t_take - f.timestamp)
        inferred = [self.gate.decide(f) for f in frames] if self.gate is not None else None
        run_on = frames if inferred is None else [f for f, keep in zip(frames, inferred) if keep]
        n = len(run_on)
        if not run_on:  # every frame reuses a result: nothing for the engine
            return self._queue_batch(_Batch(frames, [], _done_future(), 0, t_take, 0.0, t_take, t_take, inferred))
        try:
            feeds, transforms = model.preprocess([f.image for f in run_on])
            feeds, size = model.pad(feeds, n)
        except EdgeSDKError as exc:
            log.error("preprocess failed for %d frame(s) (dropped): %s", n, exc)
            stats.drop("error:preprocess", n)
            stats.error("preprocess")
            return False
        t_submit = time.time()
        stats.stage("preprocess", t_submit - t_take, n)
        try:
            future = model.submit(feeds)
        except Exception as exc:  # the engine refused the batch: count it, give up if it keeps failing
            log.error("inference could not start for %d frame(s) (dropped): %s", n, exc)
            stats.drop("error:infer", n)
            stats.error("infer")
            self._failed(exc)
            return False
        batch = _Batch(frames, list(transforms), future, size, t_take, t_submit - t_take, t_submit, inferred=inferred)

        def done(_f: Future, b: _Batch = batch) -> None:
            b.t_done = time.time()

        future.add_done_callback(done)
        stats.batch(n)
        return self._queue_batch(batch)

    def _queue_batch(self, batch: _Batch) -> bool:
        predicted = (self.policy.predict_device(batch.size) or 0.0) if batch.size else 0.0
        with self._busy_lock:
            self._inflight += 1
            self._busy_until = max(self._busy_until, batch.t_submit) + predicted
        self._inflight_q.put(batch)
        return True

    def _complete_loop(self) -> None:
        assert self.model is not None
        model, stats, policy = self.model, self.stats, self.policy
        prev_done = 0.0
        try:
            while True:
                batch = self._inflight_q.get()
                if batch is None:
                    break
                n = batch.count
                try:
                    outputs = batch.future.result()
                except Exception as exc:  # the engine's error, surfaced from the future
                    self._batch_done(time.time())
                    self._slots.release()
                    stats.drop("error:infer", len(batch.frames))
                    stats.error("infer")
                    log.error("inference failed for %d frame(s) (dropped): %s", len(batch.frames), exc)
                    self._failed(exc)
                    continue
                t_done = batch.t_done or time.time()
                self._batch_done(t_done)
                self._slots.release()
                if n == 0:  # the change gate reused results for every frame
                    self._deliver(batch, [], time.time())
                    continue
                with self._busy_lock:
                    self._consecutive_errors = 0
                device_s = t_done - max(batch.t_submit, prev_done)
                prev_done = t_done
                stats.stage("infer", t_done - batch.t_submit, n)
                stats.device(device_s)
                t0 = time.time()
                try:
                    results = model.decode(outputs, batch.transforms)[:n]
                except EdgeSDKError as exc:
                    log.error("decoding failed for %d frame(s) (dropped): %s", n, exc)
                    stats.drop("error:decode", n)
                    stats.error("decode")
                    continue
                if self.cascade is not None:
                    ran = batch.frames if batch.inferred is None else \
                        [f for f, r in zip(batch.frames, batch.inferred) if r]
                    self.cascade.run(ran, results)
                t1 = time.time()
                stats.stage("decode", t1 - t0, n)
                latencies = self._deliver(batch, results, t1)
                stats.stage("sink", time.time() - t1, len(batch.frames))
                policy.observe(batch.size, device_s, batch.t_pre + (t1 - t0), latencies, time.time())
        except Exception as exc:
            log.exception("completion thread failed")
            self._fatal = exc
            self.abort("internal error")
            # keep draining so the dispatcher never blocks on a slot
            while self._inflight_q.get() is not None:
                self._slots.release()
        finally:
            self._finish()

    def _failed(self, exc: BaseException) -> None:
        """One more failed batch; too many in a row stop the run with that error."""
        with self._busy_lock:
            self._consecutive_errors += 1
            n = self._consecutive_errors
        if n >= MAX_CONSECUTIVE_ERRORS and self._fatal is None:
            self._fatal = exc
            self.abort(f"inference failed {n} times in a row")

    def _batch_done(self, t_done: float) -> None:
        with self._busy_lock:
            self._inflight -= 1
            if self._inflight == 0:
                self._busy_until = t_done
        self._progress.set()

    def _with_cached(self, batch: _Batch, results: list[Result]) -> list[Optional[Result]]:
        """One result per frame of the batch: fresh ones in order, the gate's skipped frames
        get the last fresh result of their source (marked cached), None if there is none."""
        if batch.inferred is None:
            return list(results)
        fresh = iter(results)
        out: list[Optional[Result]] = []
        for frame, ran in zip(batch.frames, batch.inferred):
            if ran:
                res = next(fresh, None)
                if res is not None:
                    self._last_result[frame.source_id] = (frame.index, res)
                out.append(res)
            else:
                last = self._last_result.get(frame.source_id)
                out.append(ChangeGate.cached(last[1], last[0]) if last is not None else None)
        return out

    def _deliver(self, batch: _Batch, results: list[Result], t_decoded: float) -> list[float]:
        latencies = []
        for frame, result in zip(batch.frames, self._with_cached(batch, results)):
            sid = frame.source_id
            if result is None:  # skipped by the gate after its reference failed: nothing to re-emit
                self.stats.drop("error:gate", 1, source=sid)
                continue
            if result.meta.get("cached"):
                self.stats.cached(sid)
            last = self._last_index.get(sid, -1)
            if frame.index <= last:  # would be a bug: results must come out in capture order
                log.error("result for %s frame %d after frame %d", sid, frame.index, last)
                self.stats.error("order")
            self._last_index[sid] = frame.index
            result.source_id, result.frame_index, result.timestamp = sid, frame.index, frame.timestamp
            result.meta.setdefault("batch_size", len(batch.frames))
            result.meta.setdefault("latency_ms", round((t_decoded - frame.timestamp) * 1000, 2))
            result.meta.setdefault("infer_ms", round(((batch.t_done or t_decoded) - batch.t_submit) * 1000, 3))
            if "position_s" in frame.meta:  # files: where in the video, besides the wall clock
                result.meta.setdefault("position_s", frame.meta["position_s"])
            if self.on_result is not None:
                self.on_result(frame, result)
            self.sinks.write(frame, result)
            e2e = time.time() - frame.timestamp
            self.stats.frame_out(sid, e2e)
            latencies.append(e2e)
        return latencies

    def _monitor_loop(self) -> None:
        """Observers (status line, metrics, SLO watch), duration limit, and the natural end
        (every source finished)."""
        while not self._done.wait(0.5):
            now = time.time()
            if self.duration is not None and now - self.stats.started >= self.duration:
                self.stop(f"duration {self.duration:g} s")
            if not self._stop.is_set() and self.source_set.all_ended:
                self.stop_reason = self.stop_reason or "sources ended"
            snap = self.snapshot()
            for obs in list(self._observers):
                try:
                    obs.update(snap)
                except Exception:  # an observer's bug must not stop the run
                    log.exception("observer %r failed", obs)
                    self._observers.remove(obs)

    def _finish(self) -> None:
        """After the last batch: stop readers, close sinks and model, mark done."""
        with self._finish_lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self.source_set.stop()
        self.buffer.close()
        if not self.stop_reason:
            self.stop_reason = "sources ended"
        self.source_set.join(10)
        self.stats.stop()
        self._close_all()
        self._done.set()

    def _close_all(self) -> None:
        if self.control is not None:
            self.control.close()
        # after a fatal error, file sinks drop their unfinished output instead of publishing it
        self.sinks.close(failed=self._fatal is not None)
        self.source_set.close()
        if self.model is not None and self._owns_model and self.model.close is not None:
            self.model.close()
        if self.cascade is not None:
            self.cascade.close()
        snap = self.snapshot()
        for obs in self._observers:
            try:
                obs.close(snap)
            except Exception:
                log.exception("observer %r failed at the end", obs)


def run(model: Any, sources: Union[Any, Sequence[Any]], sinks: Iterable[Any] = (), **kwargs: Any) -> RunReport:
    """Run `model` over `sources` into `sinks` until the sources end, `duration` passes,
    or Ctrl-C/SIGTERM; returns the `RunReport`. See `Pipeline` for the options.

        report = edgesdk.run("face_bundle/", ["cam0=0", "door=rtsp://10.0.0.5/live"],
                             ["results.jsonl"], batching="adaptive", slo_ms=50)
    """
    return Pipeline(model, sources, sinks, **kwargs).run()
