"""`edgesdk run`: stream one or more sources through a bundle into sinks.

The --source and --sink help is made from the source and sink tables
(edgesdk/streaming/sources, edgesdk/sinks), so it lists exactly what is accepted.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

import click

from ..errors import ConfigError
from .preprocess_flags import pop_preprocess, preprocess_flags
from ..sinks import sink_forms
from ..streaming.sources import source_forms


class FiniteFloat(click.ParamType):
    """A float that must be finite (no inf/nan) and within [lo, hi] (lo excluded if lo_open)."""

    name = "number"

    def __init__(self, lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False) -> None:
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def _range(self) -> str:
        lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
        hi = "" if self.hi is None else f"<= {self.hi:g}"
        return " and ".join(x for x in (lo, hi) if x)

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number; give a plain number {self._range()}".rstrip(), param, ctx)
        low_bad = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
        if low_bad or (self.hi is not None and v > self.hi):
            self.fail(f"{value!r} is out of range: it must be {self._range()}", param, ctx)
        return v


def _weights(values: tuple[str, ...]) -> dict[str, float]:
    """--weight NAME=W values as {name: weight}; one-line errors naming the bad value."""
    out: dict[str, float] = {}
    positive = FiniteFloat(0, lo_open=True)
    for text in values:
        name, sep, num = text.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{text!r}: write NAME=WEIGHT, NAME being a --source name", param_hint="--weight")
        try:
            out[name] = positive.convert(num, None, None)
        except click.BadParameter as exc:
            raise click.BadParameter(f"{text!r}: {exc.message}", param_hint="--weight") from None
    return out


def _write_json(path: Path, data: dict) -> None:
    from ..report import write_atomic

    write_atomic(path, json.dumps(data, indent=2, default=str))


@click.command("run")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path), required=False)
@click.option("--source", "sources", multiple=True, metavar="SRC",
              help=f"One of: {source_forms()}. NAME=SRC names it. Repeat for several sources.")
@click.option("--spec", "spec_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              metavar="FILE",
              help="A stream spec (YAML/JSON: model, sources, sinks, batching, slo_ms...) instead of BUNDLE and "
                   "--source/--sink; the file is re-read while running: sources added to it or removed from it are "
                   "added or removed without a restart (see --reload).")
@click.option("--reload/--no-reload", "reload_spec", default=True, show_default=True,
              help="--spec: apply source changes in the file while running.")
@click.option("--weight", "weights", multiple=True, metavar="NAME=W",
              help="Share of the engine for source NAME when it is overloaded (> 0, default 1 each).")
@click.option("--batching", type=click.Choice(["none", "fixed", "adaptive"]), default="none", show_default=True,
              help="none: one frame per call; fixed: --batch N (with --max-wait-ms); adaptive: meet --slo-ms.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Fixed batch size; for adaptive the largest batch allowed (default 16).")
@click.option("--max-wait-ms", type=FiniteFloat(0), default=None,
              help="Fixed batching: send a partial batch once its oldest frame waited this long.")
@click.option("--slo-ms", type=FiniteFloat(0, lo_open=True), default=None,
              help="Adaptive batching: end-to-end latency target in ms (capture to result).")
@click.option("--gate", type=click.Choice(["none", "change"]), default=None,
              help="change: skip inference on frames that barely changed; their result is the last one, marked cached.")
@click.option("--gate-threshold", type=FiniteFloat(0, 1), default=None,
              help="--gate change: a frame is skipped when no region of it (1/8 x 1/8 of the frame, brightness "
                   "matched) changed by this much and the whole frame by less than half of it, fractions of full "
                   "scale 0-1, against the last inferred frame (default 0.07); a slow change that stops short of "
                   "it is inferred once it settles, if it exceeds a quarter of it.")
@click.option("--gate-max-age-s", type=FiniteFloat(0, lo_open=True), default=None,
              help="--gate change: run a fresh inference at least this often per source (default 2 s).")
@click.option("--then", "then", multiple=True, type=click.Path(exists=True, path_type=Path), metavar="BUNDLE",
              help="Cascade: run this bundle on the crops of the first bundle's detections "
                   "(e.g. face landmarks after a face detector); results per detection under 'then'. Repeatable.")
@click.option("--sink", "sinks", multiple=True, metavar="SINK",
              help=f"One of: {sink_forms()}. '{{source}}' in a file name makes one per source. Repeatable.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve pipeline statistics for Prometheus on this port.")
@click.option("--control", "control_port", type=click.IntRange(0, 65535), default=None, metavar="PORT",
              help="Local control endpoint on 127.0.0.1:PORT: GET/POST /sources, DELETE /sources/NAME "
                   "(add and remove sources while running).")
@click.option("--require-all-sources", is_flag=True,
              help="Stop at the start if any source cannot be opened (exit 9). Default: that source ends as "
                   "failed with its reason (a stream or camera keeps trying until the others end) while the "
                   "others run, and the run exits 9 at its end naming it.")
@click.option("--reconnect-attempts", type=click.IntRange(min=1), default=None, metavar="N",
              help="Streams and cameras: end as failed after N failed (re)connect attempts in a row "
                   "(default: keep trying while the run lasts). Spec key: reconnect: {attempts: N}.")
@click.option("--loop", is_flag=True, help="Files and folders: start again at the end.")
@click.option("--realtime", is_flag=True,
              help="Files and folders: play at their native frame rate and drop frames like a camera.")
@click.option("--duration", type=FiniteFloat(0, lo_open=True), default=None, help="Stop after this many seconds.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop each source after N frames.")
@click.option("--backend", default=None, help="Engine to use instead of the bundle's (onnxruntime, openvino, litert).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Engine threads (of each replica; default with --replicas: cores / replicas).")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="Engine instances behind the one batcher (at most the CPU cores).")
@click.option("--replica-mode", type=click.Choice(["auto", "engines", "streams"]), default="auto", show_default=True,
              help="--replicas: engines = N models; streams = one model running N batches at once in the backend's "
                   "own streams (OpenVINO NUM_STREAMS); auto = streams where the backend has them.")
@click.option("--buffer", "buffer_size", type=click.IntRange(min=1), default=None,
              help="Frames buffered per source (default max(8, 2 x batch)).")
@click.option("--max-inflight", type=click.IntRange(min=1), default=2, show_default=True,
              help="Batches submitted to the engine at once.")
@click.option("--profile", default=None, help="Device profile whose max_batch limits batching.")
@click.option("--status/--no-status", default=None,
              help="One-line live status on stderr (default: when stderr is a terminal).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the final statistics as JSON here.")
@preprocess_flags
def run(bundle: Optional[Path], sources: tuple[str, ...], spec_path: Optional[Path], reload_spec: bool,
        weights: tuple[str, ...], batching: str, batch: Optional[int],
        max_wait_ms: Optional[float], slo_ms: Optional[float], gate: Optional[str], gate_threshold: Optional[float],
        gate_max_age_s: Optional[float], then: tuple[Path, ...], sinks: tuple[str, ...], metrics_port: Optional[int],
        control_port: Optional[int], require_all_sources: bool, reconnect_attempts: Optional[int], loop: bool,
        realtime: bool, duration: Optional[float], max_frames: Optional[int], backend: Optional[str],
        threads: Optional[int], replicas: int, replica_mode: str, buffer_size: Optional[int], max_inflight: int,
        profile: Optional[str],
        status: Optional[bool], report_path: Optional[Path], **flags: Any) -> None:
    """Run BUNDLE on live sources and send results to sinks.

    Stops when every source has ended, after --duration, or on Ctrl-C / SIGTERM: frames
    in flight are finished and the sinks closed (a second Ctrl-C drops the queued ones).
    A source that cannot be opened or fails does not stop the others (see
    --require-all-sources); the run then exits 9 at its end, naming it. It also exits
    non-zero when no source can be opened, or a file sink lost output.

    \b
    edgesdk run faces/ --source 0 --sink faces.jsonl --sink out.mp4
    edgesdk run faces/ --source door=rtsp://10.0.0.5/live --source cam0=0 --weight door=2 \\
        --batching adaptive --slo-ms 50 --sink mqtt://127.0.0.1:1883/faces --metrics-port 9100
    edgesdk run --spec cameras.yaml --status    # edit the file's sources: applied while running
    """
    from ..streaming.pipeline import Pipeline

    _check_names_first(backend, profile)
    status_on = sys.stderr.isatty() if status is None else status
    if spec_path is not None:
        pipe, names = _from_spec_file(click.get_current_context(), spec_path, reload_spec, bundle, status_on)
        _run_and_report(pipe, names, report_path)
        return
    if bundle is None or not sources:
        raise ConfigError("edgesdk run needs BUNDLE and at least one --source (or --spec FILE describing both)")
    runtime_kw = {"threads": threads} if threads else {}
    model: Any = str(bundle)
    stated = pop_preprocess(flags)
    if stated:  # a bare model file fed the way the user says (a bundle records its own)
        if bundle.is_dir():
            raise ConfigError(f"{stated.describe()}: a bundle records its own preprocessing; these flags are for "
                              "bare model files")
        from ..predictor import Predictor

        model = Predictor(bundle, backend=backend, preprocess_options=stated, **runtime_kw)
    pipe = Pipeline(model, list(sources), list(sinks), batching=batching, batch=batch, max_wait_ms=max_wait_ms,
                    slo_ms=slo_ms, max_inflight=max_inflight, loop=loop, realtime=realtime, buffer_size=buffer_size,
                    max_frames=max_frames, duration=duration, metrics_port=metrics_port,
                    status=status_on, backend=backend, profile=profile,
                    weights=_weights(weights), gate=gate, gate_threshold=gate_threshold,
                    gate_max_age_s=gate_max_age_s, replicas=replicas, replica_mode=replica_mode,
                    then=[str(p) for p in then], control_port=control_port,
                    require_all_sources=require_all_sources,
                    reconnect=None if reconnect_attempts is None else {"attempts": reconnect_attempts}, **runtime_kw)
    click.echo(f"running {bundle} on {len(sources)} source(s), batching {batching}; Ctrl-C stops", err=True)
    _run_and_report(pipe, list(sources), report_path)


#: options that may come with --spec (they say how to watch this run, not what it runs)
SPEC_OVERRIDES = ("duration", "status", "report_path", "control_port", "metrics_port", "max_frames", "reload_spec",
                  "spec_path", "backend", "profile", "bundle")


def _from_spec_file(ctx: click.Context, path: Path, reload_spec: bool, bundle: Optional[Path],
                    status: bool) -> tuple[Any, list[str]]:
    """The pipeline a spec file describes; options on the command line other than the ones
    about watching the run are refused (one place says what runs: the file)."""
    from click.core import ParameterSource

    from ..streaming.specwatch import pipeline_from_file

    given = sorted(name for name in ctx.params if name not in SPEC_OVERRIDES
                   and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE)
    if bundle is not None or given:
        what = (["BUNDLE"] if bundle is not None else []) + ["--" + g.replace("_", "-") for g in given]
        raise ConfigError(f"--spec {path} describes the model, sources, sinks and batching; {', '.join(what)} "
                          "cannot be given with it: put them in the spec file (or run without --spec)")
    overrides = {k: ctx.params[k] for k in ("duration", "control_port", "metrics_port", "max_frames", "backend",
                                            "profile") if ctx.params.get(k) is not None}
    pipe = pipeline_from_file(path, watch=reload_spec, status=status, **overrides)
    names = [str(s) for s in pipe.source_set.specs]
    click.echo(f"running {path} ({len(names)} source(s)"
               f"{'; source changes in the file apply while running' if reload_spec else ''}); Ctrl-C stops",
               err=True)
    return pipe, names


def _run_and_report(pipe: Any, sources: list[str], report_path: Optional[Path]) -> None:
    from ..errors import SourceError

    failed: Optional[SourceError] = None
    try:
        report = pipe.run()
    except SourceError as exc:
        if not pipe.opened:  # it could not start: nothing ran, there is nothing to summarise
            raise
        failed, report = exc, pipe.report()  # some sources failed, the others ran: say both
    finally:
        if report_path is not None:
            rep = pipe.report()
            _write_json(report_path, {"stats": rep.stats, "stop_reason": rep.stop_reason, "policy": rep.policy,
                                      "source_errors": rep.source_errors, "failed_sources": rep.failed_sources,
                                      "sinks": rep.sinks, "sink_errors": rep.sink_errors})
    click.echo(report.markdown())
    # a run that could not do what was asked says so in its exit code
    if failed is not None:
        raise failed
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
