"""The dispatcher thread: plan a batch (the policy), take its frames from the buffer
(fair across sources), let the change gate pick the frames the engine must see,
preprocess, submit to the engine, and queue the batch for the completion thread.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Optional

from ..errors import EdgeSDKError
from ..results import Frame
from .batching import BatchPolicy, QueueView
from .buffer import FrameBuffer
from .gate import ChangeGate
from .inflight import Batch, Inflight, done_future
from .model import StreamModel
from .stats import PipelineStats

log = logging.getLogger("edgesdk.streaming")


class Dispatcher:
    """Args: `failed(exc)` counts a batch the engine refused (the pipeline stops after
    too many in a row); `fatal(exc)` stops the run on a bug of ours."""

    def __init__(self, model: StreamModel, policy: BatchPolicy, buffer: FrameBuffer, stats: PipelineStats,
                 inflight: Inflight, abort: threading.Event, gate: Optional[ChangeGate],
                 failed: Callable[[BaseException], None], fatal: Callable[[BaseException], None]) -> None:
        self.model, self.policy, self.buffer, self.stats = model, policy, buffer, stats
        self.inflight, self.abort, self.gate = inflight, abort, gate
        self.failed, self.fatal = failed, fatal
        self._expect_done: Optional[float] = None  # the plan's of the frames being submitted

    def view(self) -> QueueView:
        now = time.time()
        busy, count = self.inflight.state()
        buffer = self.buffer
        stamps, oldest_lossless = buffer.queue_times()
        return QueueView(now=now, queued=len(stamps), oldest=stamps[0] if stamps else None,
                         arrival_rate=buffer.arrival_rate(now), busy_until=max(busy, now), inflight=count,
                         timestamps=stamps, oldest_lossless=oldest_lossless, lanes=buffer.active_lanes(),
                         next_fair=buffer.next_fair_newest(),
                         fair_order=lambda: buffer.fair_preview(2 * self.policy.max_batch))

    def run(self) -> None:
        have_slot = False
        try:
            while not self.abort.is_set():
                if not have_slot:
                    if not self.inflight.acquire(self.abort):
                        break
                    have_slot = True
                frames = self._next_frames()
                if frames is None:
                    break
                if not frames:
                    continue
                if self.abort.is_set():
                    self.stats.drop("aborted", len(frames))
                    break
                have_slot = self._submit_groups(frames)
        except Exception as exc:  # a bug here must not hang the pipeline silently
            log.exception("dispatcher failed")
            self.fatal(exc)
        finally:
            if have_slot:
                self.inflight.slots.release()
            for f in self.buffer.take(10**9, time.time()):
                self.stats.drop("aborted", 1, source=f.source_id)
            self.inflight.queue.put(None)

    def _next_frames(self) -> Optional[list[Frame]]:
        """The frames of the next batch ([] to plan again; None: nothing more will come)."""
        buffer = self.buffer
        if not buffer.wait_any(0.1):
            return None if buffer.exhausted else []
        plan = self.policy.plan(self.view())
        if plan.not_before is not None:
            # just in time: wait until then (or until a batch completes), plan again
            delay = plan.not_before - time.time()
            if delay > 0:
                self.inflight.progress.wait(min(delay, 0.5))
                self.inflight.progress.clear()
            return []
        if plan.stale_before is not None:
            for f in buffer.drop_stale(plan.stale_before):
                self.stats.drop("stale", 1, source=f.source_id)
        if plan.keep_per_lane is not None:
            for f in buffer.supersede(plan.keep_per_lane, plan.schedule):
                self.stats.drop("superseded", 1, source=f.source_id)
        self._expect_done = plan.expect_done
        return buffer.take(plan.size, plan.deadline)

    def _submit_groups(self, frames: list[Frame]) -> bool:
        """Submit the batch (one call per input size); True if the held slot is still free."""
        groups = self._groups(frames)
        have_slot = not self.submit(groups[0])
        for g in groups[1:]:  # frames a dynamic-size model cannot take in one call
            if not self.inflight.acquire(self.abort):
                self.stats.drop("aborted", len(g))
                continue
            if not self.submit(g):
                self.inflight.slots.release()
        return have_slot

    def _groups(self, frames: list[Frame]) -> list[list[Frame]]:
        """Split a batch by the input size a dynamic-size model needs (one call per size)."""
        key = self.model.group_key
        if key is None or len(frames) == 1:
            return [frames]
        groups: dict[Any, list[Frame]] = {}
        for f in frames:
            groups.setdefault(key(f.image), []).append(f)
        return list(groups.values())

    def submit(self, frames: list[Frame]) -> bool:
        """Preprocess and start one batch; False if it was dropped (counted)."""
        stats = self.stats
        t_take = time.time()
        for f in frames:
            stats.stage("queue", t_take - f.timestamp)
        inferred = [self.gate.decide(f) for f in frames] if self.gate is not None else None
        run_on = frames if inferred is None else [f for f, keep in zip(frames, inferred) if keep]
        if not run_on:  # every frame reuses a result: nothing for the engine
            return self._queue(Batch(frames, [], done_future(), 0, t_take, 0.0, t_take, t_take, inferred))
        n = len(run_on)
        try:
            feeds, transforms = self.model.preprocess([f.image for f in run_on])
            feeds, size = self.model.pad(feeds, n)
        except EdgeSDKError as exc:
            log.error("preprocess failed for %d frame(s) (dropped): %s", n, exc)
            stats.drop("error:preprocess", n)
            stats.error("preprocess")
            return False
        t_submit = time.time()
        stats.stage("preprocess", t_submit - t_take, n)
        try:
            future = self.model.submit(feeds)
        except Exception as exc:  # the engine refused the batch: count it, give up if it keeps failing
            log.error("inference could not start for %d frame(s) (dropped): %s", n, exc)
            stats.drop("error:infer", n)
            stats.error("infer")
            self.failed(exc)
            return False
        batch = Batch(frames, list(transforms), future, size, t_take, t_submit - t_take, t_submit, inferred=inferred,
                      expect_done=self._expect_done)

        def done(_f: Future, b: Batch = batch) -> None:
            b.t_done = time.time()

        future.add_done_callback(done)
        stats.batch(n)
        return self._queue(batch)

    def _queue(self, batch: Batch) -> bool:
        predicted = (self.policy.predict_device(batch.size) or 0.0) if batch.size else 0.0
        self.inflight.put(batch, predicted)
        return True
