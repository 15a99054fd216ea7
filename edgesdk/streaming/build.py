"""The parts a `Pipeline` is built from, out of its settings: the model (or its replicas),
the profile's batch limit, the cascade stages, the observers."""
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

from ..errors import EdgeSDKError
from .batching import AdaptiveBatching, BatchPolicy
from .cascade import Cascade, load_stage
from .model import StreamModel, from_predictor, load_stream_model
from .observers import MetricsPublisher, Observer, SloWatch, StatusLine
from .replicas import model_backend, replicate, resolve_mode, streams_options, threads_per_replica, with_streams
from .stats import PipelineStats

log = logging.getLogger("edgesdk.streaming")


def load_model(spec: Any, backend: Optional[str], replicas: int, runtime_kw: dict[str, Any],
               replica_mode: str = "auto") -> tuple[StreamModel, bool]:
    """(model, owned): one engine, or `replicas` of them behind one submit (N engines, or
    one engine with N streams; see replicas.py)."""
    if replicas == 1:
        return load_stream_model(spec, backend, **runtime_kw)
    each = threads_per_replica(replicas, runtime_kw.get("threads"))
    if resolve_mode(replica_mode, model_backend(spec, backend)) == "streams":
        from ..predictor import Predictor

        kw = dict(runtime_kw, **streams_options(replicas, each * replicas))
        pred = Predictor(spec, backend=backend, **kw)
        return with_streams(from_predictor(pred), pred.runtime, replicas, each * replicas), True
    kw = dict(runtime_kw, threads=each)
    return replicate(lambda: load_stream_model(spec, backend, **kw)[0], replicas, each), True


def profile_limit(profile: Any, model: Optional[StreamModel]) -> Optional[int]:
    """The max_batch of the profile given (or named by the model's bundle), None if none."""
    prof = profile
    if prof is None and model is not None and model.bundle is not None:
        prof = model.bundle.manifest.profile
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


def load_cascade(specs: Sequence[Any], first: StreamModel, stats: PipelineStats, backend: Optional[str],
                 runtime_kw: dict[str, Any]) -> Optional[Cascade]:
    """The `--then` stages after `first` (None without any); refuses a first stage without boxes."""
    if not specs:
        return None
    cascade = Cascade([], stats)
    cascade.check_first(first)
    try:
        for spec in specs:
            cascade.stages.append(load_stage(spec, backend, **runtime_kw))
    except BaseException:
        cascade.close()  # the stages loaded before the one that failed
        raise
    return cascade


def make_observers(metrics_port: Optional[int], status: bool, policy: BatchPolicy,
                   lossless_ids: list[str]) -> tuple[list[Observer], Optional[SloWatch]]:
    """(observers from the settings, the SLO watch when batching has a latency target)."""
    observers: list[Observer] = []
    if metrics_port is not None:
        from ..sinks.prometheus import MetricsServer

        observers.append(MetricsPublisher(MetricsServer.shared(metrics_port)))
    if status:
        observers.append(StatusLine())
    slo = SloWatch(policy.slo_s * 1000.0, lossless_ids) if isinstance(policy, AdaptiveBatching) else None
    return observers, slo
