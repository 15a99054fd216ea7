"""`edgesdk run`: stream one or more sources through a bundle into sinks."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click


def _write_json(path: Path, data: dict) -> None:
    from ..report import write_atomic

    write_atomic(path, json.dumps(data, indent=2, default=str))


@click.command("run")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--source", "sources", multiple=True, required=True, metavar="SRC",
              help="Camera index or /dev/videoN, video file, rtsp:// or http:// URL, image folder or glob; "
                   "NAME=SRC names it. Repeat for several sources.")
@click.option("--batching", type=click.Choice(["none", "fixed", "adaptive"]), default="none", show_default=True,
              help="none: one frame per call; fixed: --batch N (with --max-wait-ms); adaptive: meet --slo-ms.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Fixed batch size; for adaptive the largest batch allowed (default 16).")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=None,
              help="Fixed batching: send a partial batch once its oldest frame waited this long.")
@click.option("--slo-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Adaptive batching: end-to-end latency target in ms (capture to result).")
@click.option("--sink", "sinks", multiple=True, metavar="SINK",
              help="out.jsonl, out.mp4, mqtt://HOST:PORT/TOPIC, window, metrics:PORT; '{source}' in a "
                   "file name makes one per source. Repeatable.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve pipeline statistics for Prometheus on this port.")
@click.option("--loop", is_flag=True, help="Files and folders: start again at the end.")
@click.option("--realtime", is_flag=True,
              help="Files and folders: play at their native frame rate and drop frames like a camera.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop each source after N frames.")
@click.option("--backend", default=None, help="Engine to use instead of the bundle's (onnxruntime, openvino, litert).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Engine threads.")
@click.option("--buffer", "buffer_size", type=click.IntRange(min=1), default=None,
              help="Frames buffered per source (default max(8, 2 x batch)).")
@click.option("--max-inflight", type=click.IntRange(min=1), default=2, show_default=True,
              help="Batches submitted to the engine at once.")
@click.option("--profile", default=None, help="Device profile whose max_batch limits batching.")
@click.option("--status/--no-status", default=None,
              help="One-line live status on stderr (default: when stderr is a terminal).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the final statistics as JSON here.")
def run(bundle: Path, sources: tuple[str, ...], batching: str, batch: Optional[int], max_wait_ms: Optional[float],
        slo_ms: Optional[float], sinks: tuple[str, ...], metrics_port: Optional[int], loop: bool, realtime: bool,
        duration: Optional[float], max_frames: Optional[int], backend: Optional[str], threads: Optional[int],
        buffer_size: Optional[int], max_inflight: int, profile: Optional[str], status: Optional[bool],
        report_path: Optional[Path]) -> None:
    """Run BUNDLE on live sources and send results to sinks.

    Stops when every source has ended, after --duration, or on Ctrl-C / SIGTERM: frames
    in flight are finished and the sinks closed (a second Ctrl-C drops the queued ones).

    \b
    edgesdk run faces/ --source 0 --sink faces.jsonl --sink out.mp4
    edgesdk run faces/ --source door=rtsp://10.0.0.5/live --source cam0=0 \\
        --batching adaptive --slo-ms 50 --sink mqtt://127.0.0.1:1883/faces --metrics-port 9100
    """
    from ..streaming.pipeline import Pipeline

    _check_names_first(backend, profile)
    runtime_kw = {"threads": threads} if threads else {}
    pipe = Pipeline(str(bundle), list(sources), list(sinks), batching=batching, batch=batch, max_wait_ms=max_wait_ms,
                    slo_ms=slo_ms, max_inflight=max_inflight, loop=loop, realtime=realtime, buffer_size=buffer_size,
                    max_frames=max_frames, duration=duration, metrics_port=metrics_port,
                    status=sys.stderr.isatty() if status is None else status, backend=backend, profile=profile,
                    **runtime_kw)
    click.echo(f"running {bundle} on {len(sources)} source(s), batching {batching}; Ctrl-C stops", err=True)
    try:
        report = pipe.run()
    finally:
        if report_path is not None:
            rep = pipe.report()
            _write_json(report_path, {"stats": rep.stats, "stop_reason": rep.stop_reason, "policy": rep.policy,
                                      "source_errors": rep.source_errors})
    click.echo(report.markdown())
    # a run that could not do what was asked says so in its exit code
    from ..errors import SourceError

    if report.source_errors:
        raise SourceError(f"{len(report.source_errors)} of {len(sources)} source(s) failed: "
                          + "; ".join(report.source_errors))
    if not report.stats.get("frames_in") and report.stop_reason == "sources ended":
        raise SourceError(f"no frame could be read from {', '.join(sources)} (see the warnings above); "
                          "check the paths, that the files are images or videos, and the camera index")


def _check_names_first(backend: Optional[str], profile: Optional[str]) -> None:
    """An unknown backend or profile name fails before the bundle loads and sources open."""
    if backend:
        from runtimes.registry import check_backend_name

        check_backend_name(backend)
    if profile:
        from ..profiles import load_profile

        load_profile(profile)
