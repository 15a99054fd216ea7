"""The streaming pipeline: sources -> buffer -> batcher/preprocess -> engine (async,
several batches in flight) -> decode -> sinks, each stage in its own thread(s), joined
by bounded queues. This file is the core: it holds the built parts, starts and stops
the threads and answers the control calls; the parts are elsewhere:

    source threads (sourceset.py, sources/) --(FrameBuffer, buffer.py: per-source lanes,
    fair queueing, live ones drop oldest)--> dispatcher (dispatch.py: plan a batch with
    the policy, batching.py; take, gate, preprocess, runtime.submit -> Future)
    --(inflight.py: in-flight queue bounded by max_inflight)--> completion thread
    (completion.py: wait the Futures in submission order, decode, cascade, hand each
    (frame, result) to the sinks, sinkset.py: each an AsyncSink that drops, counted,
    and never stalls capture). Observers (observers.py) get the statistics twice a
    second; build.py makes the model, cascade and observers from the settings.

Results of one source come out in capture order: frames are taken oldest first and the
completion thread handles batches in the order they were submitted.

Shutdown (Ctrl-C, SIGTERM, `stop()`, `duration`, every source at its end): sources stop,
what is queued and in flight is finished and delivered, sinks are flushed and closed.
A second Ctrl-C abandons the queued frames (in-flight ones still complete).
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from ..errors import ConfigError, EdgeSDKError, SourceError
from .batching import BatchPolicy, batch_limit, make_policy
from .build import load_cascade, load_model, make_observers, profile_limit
from .buffer import FrameBuffer
from .cascade import Cascade
from .completion import Completer, ResultCallback
from .dispatch import Dispatcher
from .gate import ChangeGate, make_gate
from .inflight import MAX_CONSECUTIVE_ERRORS, Inflight
from .model import StreamModel
from .observers import Observer, SloWatch, close_all, notify
from .replicas import MODES, check_replicas, model_backend, resolve_mode
from .runreport import RunReport
from .sinkset import SinkSet
from .sourceset import SourceSet, check_weight  # noqa: F401 (check_weight: part of this module's API)
from .sources import Backoff, Source, SourceReader
from .sources.state import SourceState

log = logging.getLogger("edgesdk.streaming")

#: default buffer capacity per source (frames); live sources drop the oldest beyond it
DEFAULT_BUFFER = 8

__all__ = ["Pipeline", "RunReport", "run", "DEFAULT_BUFFER", "MAX_CONSECUTIVE_ERRORS", "check_weight"]


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
        reconnect: backoff for streams/cameras that drop or do not connect: a `Backoff` or a
            table ``{initial, factor, maximum, attempts}``; default: keep trying (attempts None).
        weights: source id -> share of the engine under overload (> 0; default 1 each).
        observers: more `Observer`s of the live statistics (see observers.py).
        gate / gate_threshold / gate_max_age_s: ``"change"`` skips the engine for frames
            that barely changed and re-emits the last result marked cached (see gate.py).
        then: cascade bundles run on the crops of the first bundle's detections, results in
            ``result.then[stage]`` (see cascade.py).
        control_port: serve add/remove/states of sources on 127.0.0.1:PORT (see control.py).
        require_all_sources: a source that cannot be opened at the start stops the start
            (fail-fast). Default False: it ends as ``failed`` with its reason (a stream or
            camera first keeps trying, state ``connecting``) while the others run, and `run()`
            raises at the end naming it. None of the sources opening is an error either way.
        replicas: engine instances of the model behind the batcher (a bundle or model path;
            at most the CPU cores; each gets cores / replicas threads unless `threads` is given).
        replica_mode: ``auto`` (streams where the backend has them, e.g. OpenVINO, else
            engines), ``engines`` (N models) or ``streams`` (one model, N streams); see replicas.py.

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
        reconnect: Optional[Union[Backoff, dict]] = None,
        weights: Optional[dict[str, float]] = None,
        observers: Sequence[Observer] = (),
        gate: Union[None, str, ChangeGate] = None,
        gate_threshold: Optional[float] = None,
        gate_max_age_s: Optional[float] = None,
        replicas: int = 1,
        replica_mode: str = "auto",
        then: Sequence[Any] = (),
        control_port: Optional[int] = None,
        require_all_sources: bool = False,
        **runtime_kw: Any,
    ) -> None:
        if isinstance(sources, (str, int, Source)) or callable(sources):
            sources = [sources]
        self._source_specs = list(sources)
        if not self._source_specs:
            raise ConfigError("a pipeline needs at least one source (--source)")
        if max_inflight < 1:
            raise ConfigError(f"max_inflight must be >= 1, got {max_inflight}")
        max_inflight = self._init_replicas(model, backend, replicas, replica_mode, max_inflight)
        if buffer_size is not None and buffer_size < 1:
            raise ConfigError(f"buffer size must be >= 1, got {buffer_size}")
        self.gate = gate if isinstance(gate, ChangeGate) else make_gate(gate, gate_threshold, gate_max_age_s)
        self.policy = batching if isinstance(batching, BatchPolicy) else \
            make_policy(batching, batch, max_wait_ms, slo_ms)
        self._then_specs = list(then)
        self.control_port = control_port
        self.require_all_sources = bool(require_all_sources)
        self._model_spec, self._backend, self._runtime_kw = model, backend, runtime_kw
        self.max_inflight = max_inflight
        self.loop, self.realtime, self.buffer_size = loop, realtime, buffer_size
        self.max_frames, self.duration = max_frames, duration
        self.metrics_port, self.show_status, self.on_result = metrics_port, status, on_result
        self.sink_queue, self.profile = sink_queue, profile
        self.reconnect = Backoff.from_spec(reconnect)  # a spec file gives a table
        self._init_parts(sinks, weights, observers)

    def _init_replicas(self, model: Any, backend: Optional[str], replicas: int, replica_mode: str,
                       max_inflight: int) -> int:
        """Set the replica count and mode, refusing what cannot run before anything opens;
        returns the in-flight limit that keeps every replica busy."""
        self.replicas = check_replicas(replicas)
        if replica_mode not in MODES:
            raise ConfigError(f"--replica-mode must be one of {', '.join(MODES)}, got {replica_mode!r}")
        self.replica_mode = replica_mode
        if self.replicas == 1:
            return max_inflight
        if not isinstance(model, (str, Path)):
            raise ConfigError("replicas need a bundle directory or model file to load several times")
        # engines or streams, decided (and a mode the backend lacks refused) here
        self.replica_mode = resolve_mode(replica_mode, model_backend(model, backend))
        # every replica busy and one batch ready behind them
        return max(max_inflight, self.replicas + 1)

    def _init_parts(self, sinks: Iterable[Any], weights: Optional[dict[str, float]],
                    observers: Sequence[Observer]) -> None:
        """Statistics, buffer, sources, sinks (not opened) and the run's events."""
        from .stats import PipelineStats

        self.stats = PipelineStats()
        self.buffer = FrameBuffer(on_drop=lambda sid, n: self.stats.drop("buffer_full", n, source=sid))
        self.source_set = SourceSet(self._source_specs, self.buffer, self.stats, self._lane_capacity,
                                    weights=weights, realtime=self.realtime, loop=self.loop,
                                    max_frames=self.max_frames, backoff=self.reconnect)
        self._sink_specs = list(sinks)
        self.sinks = SinkSet(self._sink_specs, self.sink_queue, on_open=self._sink_opened)
        self.model: Optional[StreamModel] = None
        self._owns_model = False
        self.cascade: Optional[Cascade] = None
        self.control: Any = None
        self._observers: list[Observer] = list(observers)
        self._slo: Optional[SloWatch] = None
        self._inflight = Inflight(self.max_inflight)
        self._completer: Optional[Completer] = None
        self._stop = threading.Event()  # sources stop reading
        self._abort = threading.Event()  # abandon queued frames
        self._done = threading.Event()  # everything finished and closed
        self._threads: list[threading.Thread] = []
        self._fatal: Optional[BaseException] = None
        self.stop_reason = ""
        self._started = False
        #: sources, sinks and model opened: the run happened (an error after this is not a failed start)
        self.opened = False
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

    def start(self) -> "Pipeline":
        """Open sources, sinks and the model, and start the threads. Raises SourceError /
        SinkError / BundleError naming what could not be opened (nothing is left running)."""
        if self._started:
            return self
        self._started = True
        try:
            self._open_parts()
        except BaseException as exc:
            # nothing ran: file sinks leave no (empty) output behind, the report says why
            self.stop_reason = f"could not start: {exc}"
            self._close_all(failed=True)
            self._done.set()
            raise
        self.opened = True
        self._gauges()
        self.stats.started = time.time()
        # lanes before the dispatcher: a buffer without lanes counts as exhausted
        self.source_set.start()
        self._start_threads()
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

    def _open_parts(self) -> None:
        self.source_set.build()
        self.model, self._owns_model = load_model(self._model_spec, self._backend, self.replicas, self._runtime_kw,
                                                  self.replica_mode)
        self.policy.limit(batch_limit(self.model.max_batch, profile_limit(self.profile, self.model)))
        self.cascade = load_cascade(self._then_specs, self.model, self.stats, self._backend, self._runtime_kw)
        self.sinks.open(self.source_set.ids)
        made, self._slo = make_observers(self.metrics_port, self.show_status, self.policy,
                                         self.source_set.lossless_ids())
        self._observers += made
        # sources last: a camera or stream opened before a slow model load would
        # start with seconds of stale frames
        self.source_set.open(self.require_all_sources)

    def _gauges(self) -> None:
        self.stats.gauge("source_states", self.source_set.describe)
        self.stats.gauge("queued", lambda: self.buffer.sizes())
        self.stats.gauge("inflight", lambda: self._inflight.count)
        self.stats.gauge("batching", self.policy.describe)
        if self.gate is not None:
            self.stats.gauge("gate", self.gate.describe)
        describe = getattr(self.model, "describe", None)
        if describe is not None:  # replicas / engine streams say how they run
            self.stats.gauge("engine", describe)

    def _start_threads(self) -> None:
        assert self.model is not None
        dispatcher = Dispatcher(self.model, self.policy, self.buffer, self.stats, self._inflight, self._abort,
                                self.gate, self._failed, self._fatal_error)
        self._completer = Completer(self.model, self.policy, self.stats, self._inflight, self.sinks, self.cascade,
                                    self.on_result, self._failed, self._fatal_error, self._finish)
        self._threads = [threading.Thread(target=dispatcher.run, name="dispatcher", daemon=True),
                         threading.Thread(target=self._completer.run, name="completion", daemon=True),
                         threading.Thread(target=self._monitor_loop, name="monitor", daemon=True)]
        for t in self._threads:
            t.start()

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
        if self.source_set.delivered(source_id):
            self.sinks.remove_source(source_id)
        else:  # taken out before its first frame (a dead camera dropped from the spec): no empty file
            self.sinks.discard_source(source_id)
        if self.gate is not None:
            self.gate.forget(source_id)
        if self._completer is not None:
            self._completer.forget(source_id)
        log.info("source removed: %s", source_id)

    def add_observer(self, observer: Observer) -> None:
        """One more observer of the live statistics (before or while running)."""
        self._observers.append(observer)

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
            raise _sources_failed(errors, sorted(report.failed_sources), len(self.source_set.states))
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
    def _fatal_error(self, exc: BaseException) -> None:
        """A bug of ours in a pipeline thread: stop the run with it."""
        self._fatal = exc
        self.abort("internal error")

    def _failed(self, exc: BaseException) -> None:
        """One more failed batch; too many in a row stop the run with that error."""
        n = self._inflight.failed()
        if n >= MAX_CONSECUTIVE_ERRORS and self._fatal is None:
            self._fatal = exc
            self.abort(f"inference failed {n} times in a row")

    def _monitor_loop(self) -> None:
        """Observers (status line, metrics, SLO watch), duration limit, and the natural end
        (every source finished)."""
        while not self._done.wait(0.5):
            now = time.time()
            if self.duration is not None and now - self.stats.started >= self.duration:
                self.stop(f"duration {self.duration:g} s")
            if not self._stop.is_set() and self.source_set.all_ended:
                self.stop_reason = self.stop_reason or "sources ended"
            waiting = [] if self._stop.is_set() else self.source_set.never_connected_left()
            if waiting:  # nothing else left to deliver: they end as failed (never connected)
                self.stop(f"sources ended; {', '.join(waiting)} never connected")
            notify(self._observers, self.snapshot())

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

    def _close_all(self, failed: bool = False) -> None:
        if self.control is not None:
            self.control.close()
        # a source that failed before its first frame has nothing to publish: its own file
        # sinks leave what an earlier run wrote there, and no empty file
        for sid in self.source_set.failed_silent():
            self.sinks.discard_source(sid)
        # after a fatal error, file sinks drop their unfinished output instead of publishing it
        self.sinks.close(failed=failed or self._fatal is not None)
        self.source_set.close()
        if self.model is not None and self._owns_model and self.model.close is not None:
            self.model.close()
        if self.cascade is not None:
            self.cascade.close()
        close_all(self._observers, self.snapshot())


def _sources_failed(errors: list[BaseException], names: list[str], total: int) -> SourceError:
    """One line however many cameras are dead: the first reason in full, the others by name."""
    who = f" ({', '.join(names)})" if names else ""
    others = ", the others ran" if len(errors) < total else ""
    more = f"; {len(errors) - 1} more (reasons in the log and the run report)" if len(errors) > 1 else ""
    exc = SourceError(f"{len(errors)} of {total} source(s) failed{who}{others}: {errors[0]}{more}")
    exc.__cause__ = errors[0]
    return exc


def run(model: Any, sources: Union[Any, Sequence[Any]], sinks: Iterable[Any] = (), **kwargs: Any) -> RunReport:
    """Run `model` over `sources` into `sinks` until the sources end, `duration` passes,
    or Ctrl-C/SIGTERM; returns the `RunReport`. See `Pipeline` for the options.

        report = edgesdk.run("face_bundle/", ["cam0=0", "door=rtsp://10.0.0.5/live"],
                             ["results.jsonl"], batching="adaptive", slo_ms=50)
    """
    return Pipeline(model, sources, sinks, **kwargs).run()
