"""The completion thread: wait each batch's engine future in submission order, decode,
run the cascade stages on the detections, and deliver one result per frame (the change
gate's skipped frames get their source's last result, marked cached) to the sinks.
Results of one source come out in capture order.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from ..errors import EdgeSDKError
from ..results import Frame, Result
from .batching import BatchPolicy
from .cascade import Cascade
from .gate import ChangeGate
from .inflight import Batch, Inflight
from .model import StreamModel
from .sinkset import SinkSet
from .stats import BatchRecord, PipelineStats

log = logging.getLogger("edgesdk.streaming")

ResultCallback = Callable[[Frame, Result], None]


class Completer:
    """Args: `failed(exc)` counts a failed batch; `fatal(exc)` stops the run on a bug of
    ours; `finish()` runs after the last batch (close everything)."""

    def __init__(self, model: StreamModel, policy: BatchPolicy, stats: PipelineStats, inflight: Inflight,
                 sinks: SinkSet, cascade: Optional[Cascade], on_result: Optional[ResultCallback],
                 failed: Callable[[BaseException], None], fatal: Callable[[BaseException], None],
                 finish: Callable[[], None]) -> None:
        self.model, self.policy, self.stats, self.inflight = model, policy, stats, inflight
        self.sinks, self.cascade, self.on_result = sinks, cascade, on_result
        self.failed, self.fatal, self.finish = failed, fatal, finish
        self._last_result: dict[str, tuple[int, Result]] = {}
        self._last_index: dict[str, int] = {}
        self._prev_done = 0.0

    def run(self) -> None:
        try:
            while True:
                batch = self.inflight.queue.get()
                if batch is None:
                    break
                self._complete(batch)
        except Exception as exc:
            log.exception("completion thread failed")
            self.fatal(exc)
            # keep draining so the dispatcher never blocks on a slot
            while self.inflight.queue.get() is not None:
                self.inflight.slots.release()
        finally:
            self.finish()

    def _complete(self, batch: Batch) -> None:
        stats = self.stats
        try:
            outputs = batch.future.result()
        except Exception as exc:  # the engine's error, surfaced from the future
            self.inflight.done(time.time())
            stats.drop("error:infer", len(batch.frames))
            stats.error("infer")
            log.error("inference failed for %d frame(s) (dropped): %s", len(batch.frames), exc)
            self.failed(exc)
            return
        t_done = batch.t_done or time.time()
        self.inflight.done(t_done)
        n = batch.count
        if n == 0:  # the change gate reused results for every frame
            self.deliver(batch, [], time.time())
            return
        self.inflight.ok()
        # the engine's own time: from when it could start this batch (submitted, previous one done)
        device_s = t_done - max(batch.t_submit, self._prev_done)
        # submitted while the batch before was still running: time in the engine's queue
        # (part of "infer", split out so a report can tell it from the engine's own time)
        stats.stage("engine_wait", max(0.0, self._prev_done - batch.t_submit), n)
        self._prev_done = t_done
        stats.stage("infer", t_done - batch.t_submit, n)
        stats.device(device_s)
        t0 = time.time()
        try:
            results = self.model.decode(outputs, batch.transforms)[:n]
        except EdgeSDKError as exc:
            log.error("decoding failed for %d frame(s) (dropped): %s", n, exc)
            stats.drop("error:decode", n)
            stats.error("decode")
            return
        if self.cascade is not None:
            self.cascade.run(batch.ran, results)
        t1 = time.time()
        stats.stage("decode", t1 - t0, n)
        latencies = self.deliver(batch, results, t1)
        t_out = time.time()
        stats.stage("sink", t_out - t1, len(batch.frames))
        stats.batch_done(BatchRecord(n, min(f.timestamp for f in batch.frames), batch.t_take, batch.t_submit,
                                     t_done - device_s, t_done, t_out, batch.predicted_s))
        late = None if batch.expect_done is None else t_out - batch.expect_done
        self.policy.observe(batch.size, device_s, batch.t_pre + (t1 - t0), latencies, time.time(), late_s=late)

    def _with_cached(self, batch: Batch, results: list[Result]) -> list[Optional[Result]]:
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

    def deliver(self, batch: Batch, results: list[Result], t_decoded: float) -> list[float]:
        """Hand each frame's result to the callback and the sinks; returns the e2e latencies."""
        latencies = []
        for frame, result in zip(batch.frames, self._with_cached(batch, results)):
            sid = frame.source_id
            if result is None:  # skipped by the gate after its reference failed: nothing to re-emit
                self.stats.drop("error:gate", 1, source=sid)
                continue
            if result.meta.get("cached"):
                self.stats.cached(sid)
            self._check_order(frame)
            self._stamp(frame, result, batch, t_decoded)
            if self.on_result is not None:
                self.on_result(frame, result)
            self.sinks.write(frame, result)
            e2e = time.time() - frame.timestamp
            self.stats.frame_out(sid, e2e)
            latencies.append(e2e)
        return latencies

    def _check_order(self, frame: Frame) -> None:
        last = self._last_index.get(frame.source_id, -1)
        if frame.index <= last:  # would be a bug: results must come out in capture order
            log.error("result for %s frame %d after frame %d", frame.source_id, frame.index, last)
            self.stats.error("order")
        self._last_index[frame.source_id] = frame.index

    @staticmethod
    def _stamp(frame: Frame, result: Result, batch: Batch, t_decoded: float) -> None:
        result.source_id, result.frame_index, result.timestamp = frame.source_id, frame.index, frame.timestamp
        result.meta.setdefault("batch_size", len(batch.frames))
        result.meta.setdefault("latency_ms", round((t_decoded - frame.timestamp) * 1000, 2))
        result.meta.setdefault("infer_ms", round(((batch.t_done or t_decoded) - batch.t_submit) * 1000, 3))
        for key in ("position_s", "path"):  # files: where in the video / which image, besides the wall clock
            if key in frame.meta:
                result.meta.setdefault(key, frame.meta[key])

    def forget(self, source_id: str) -> None:
        """A source was removed: its cached result must not be re-emitted if the name returns."""
        self._last_result.pop(source_id, None)
