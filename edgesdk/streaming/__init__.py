"""Streaming inference: sources -> bounded buffers -> batching -> async engine -> decode -> sinks.

    from edgesdk.streaming import run
    report = run("face_bundle/", ["cam=0"], ["faces.jsonl"], batching="adaptive", slo_ms=50)

Modules: `sources` (cameras, files, streams, folders, producers), `buffer` (per-source
bounded lanes), `batching` (none / fixed / adaptive policies), `pipeline` (`Pipeline`,
`run`), `stats` (latency percentiles, fps, drops, status line).
"""
from __future__ import annotations

from .batching import AdaptiveBatching, BatchPolicy, FixedBatching, NoBatching, make_policy
from .buffer import FrameBuffer
from .pipeline import Pipeline, RunReport, run
from .sources import Source, make_source
from .stats import PipelineStats

__all__ = ["Pipeline", "RunReport", "run", "Source", "make_source", "FrameBuffer", "BatchPolicy", "NoBatching",
           "FixedBatching", "AdaptiveBatching", "make_policy", "PipelineStats"]
