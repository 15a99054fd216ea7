"""Latency and throughput of a model per backend x batch size (what `edgesdk bench` runs).

    from edgesdk.benchmark import benchmark
    result = benchmark(".cache/models/ppocr_cls.onnx", backends="all", batches=[1, 4], threads=2)
    for row in result.rows:
        print(row.backend, row.batch, row.precision, row.stats.p50)

Each row reports the precision the engine really ran (``runtime.precision``, and for
OpenVINO its inference precision), so a bf16 run is never mistaken for fp32. Timing is
`runtimes.timing.measure`: one `infer` call per sample, as an application sees it.
Feeds are deterministic random tensors of the model's input shape (latency does not depend
on the values for these models); dynamic dims take `input_shape` (--input-shape), else `size`,
else the bundle's or the preset's size (edgesdk.shapes.feed_shape); a dynamic dim nothing fills
is refused, naming --input-shape (no made-up default).
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

import runtimes
from runtimes.registry import BACKENDS, canonical, is_available
from runtimes.timing import LatencyStats, measure

from .errors import ConfigError, EdgeSDKError

#: progress(label, done, total) while one configuration runs
BenchProgress = Callable[[str, int, Optional[int]], None]


@dataclass
class BenchRow:
    backend: str
    batch: int
    #: what really ran (runtime.precision after activate), e.g. fp32, bf16, int8, native
    precision: Optional[str] = None
    #: OpenVINO: the floating-point precision its kernels computed in (f32 pinned unless asked)
    inference_precision: Optional[str] = None
    device: Optional[str] = None
    threads: Optional[int] = None
    input_shape: tuple[int, ...] = ()
    stats: Optional[LatencyStats] = None
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.stats is not None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"backend": self.backend, "batch": self.batch, "precision": self.precision,
                             "inference_precision": self.inference_precision, "device": self.device,
                             "threads": self.threads, "input_shape": list(self.input_shape)}
        if self.stats is not None:
            d.update(self.stats.to_dict())
        if self.error:
            d["error"] = self.error
        return d


@dataclass
class BenchResult:
    model: str
    rows: list[BenchRow] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "settings": self.settings, "host": self.host,
                "rows": [r.to_dict() for r in self.rows]}


def backends_for(model_path: Union[str, Path], requested: Union[str, Sequence[str]] = "all") -> list[str]:
    """Backend names to bench: "all" = every installed backend that opens this file type.

    Names are checked (unknown -> BackendUnavailableError with the choices; not installed
    -> the install hint; cannot open this file type -> ModelLoadError).
    """
    suffix = Path(model_path).suffix.lower()
    if isinstance(requested, str):
        requested = [p.strip() for p in requested.split(",") if p.strip()]
    if not requested:
        raise ConfigError("no backend given; pass 'all' or names such as onnxruntime,openvino")
    if list(requested) == ["all"]:
        names = [n for n in BACKENDS if is_available(n) and suffix in runtimes.backend_class(n).suffixes]
        if not names:
            raise runtimes.BackendUnavailableError(
                f"no installed backend opens {suffix} files (installed: {', '.join(runtimes.available_backends())})")
        return names
    names = []
    for name in requested:
        key = canonical(name)
        cls = runtimes.backend_class(key)  # raises with the install hint when missing
        if suffix not in cls.suffixes:
            raise runtimes.ModelLoadError(
                f"the {key} backend cannot run {suffix} files ({Path(model_path).name}); it takes "
                f"{', '.join(cls.suffixes)}")
        if key not in names:
            names.append(key)
    return names


def parse_batches(text: Union[str, Sequence[int]]) -> list[int]:
    if not isinstance(text, str):
        values = [int(v) for v in text]
    else:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--batch takes comma-separated positive integers such as 1,4,8, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"batch sizes must be positive integers, got {text!r}")
    return sorted(set(values), key=values.index)


def make_feeds(specs: Sequence[Any], batch: int, size: Optional[tuple[int, int]] = None,
               seed: int = 0, input_shape: Optional[Sequence[Optional[int]]] = None,
               size_from: str = "--size") -> dict[str, np.ndarray]:
    """Deterministic random feeds for input specs; batch dim -> `batch` (a fixed batch of 1
    stays looped by the runtime), other dims from `input_shape` (single-input models), dynamic
    H/W of image inputs -> `size`; anything still dynamic is refused."""
    from .shapes import feed_shape, unresolved_error

    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        stated = input_shape if len(specs) == 1 else None
        shape, _ = feed_shape(spec.shape, spec.layout, stated, size, size_from, spec.name)
        if shape:
            shape[0] = batch
        if any(d is None for d in shape):
            raise unresolved_error(spec.name, spec.shape, shape)
        dt = spec.dtype
        if dt.kind == "f":
            arr = rng.uniform(-1, 1, size=shape).astype(dt)
        elif dt.kind in "iu":
            info = np.iinfo(dt)
            arr = rng.integers(max(info.min, -128), min(info.max, 255) + 1, size=shape, dtype=dt)
        elif dt.kind == "b":
            arr = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise ConfigError(f"input {spec.name!r} has dtype {dt.name}, which bench cannot fill")
        feeds[spec.name] = arr
    return feeds


def host_summary() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "python": platform.python_version(),
                            "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def _resolve(model: Union[str, Path]) -> tuple[Path, dict[str, Any], Optional[tuple[int, int]], str]:
    """A model file or a bundle -> (model path, runtime options from the manifest, input size,
    where the size came from)."""
    from .bundle import Bundle
    from .presets import preset_for

    path = Path(model)
    if path.is_dir():
        bundle = Bundle.load(path)
        m = bundle.manifest
        opts = {k: v for k, v in m.runtime.items() if k in ("device", "precision")}
        size = m.preprocess.size if m.preprocess is not None else None
        return bundle.model_path, opts, size, "the bundle's preprocess size"
    if not path.is_file():
        raise runtimes.ModelLoadError(f"{path} does not exist (expected a model file or a bundle directory)")
    preset = preset_for(path, use_hash=False)
    size = preset.preprocess.size if preset is not None else None
    return path, {}, size, f"the preset {preset.name}" if preset is not None else ""


def benchmark(model: Union[str, Path], backends: Union[str, Sequence[str]] = "all",
              batches: Union[str, Sequence[int]] = (1,), threads: Optional[int] = None,
              precision: Optional[str] = None, device: str = "CPU", iterations: int = 50, warmup: int = 5,
              seconds: Optional[float] = None, size: Optional[tuple[int, int]] = None,
              performance_hint: str = "latency", progress: Optional[BenchProgress] = None,
              keep_going: bool = True, input_shape: Optional[Sequence[Optional[int]]] = None) -> BenchResult:
    """Measure every backend x batch. A configuration that fails becomes a row with
    `error` (and the next one runs) unless `keep_going` is False; a shape bench cannot make
    (dynamic dims nothing fills) is refused."""
    path, manifest_opts, preset_size, size_from = _resolve(model)
    names = backends_for(path, backends)
    batch_list = parse_batches(batches)
    size_from = "--size" if size else size_from
    size = size or preset_size
    result = BenchResult(
        model=str(model), host=host_summary(),
        settings={"backends": names, "batches": batch_list, "threads": threads, "precision": precision,
                  "device": device, "iterations": iterations, "warmup": warmup, "seconds": seconds,
                  "size": list(size) if size else None, "performance_hint": performance_hint,
                  "input_shape": list(input_shape) if input_shape else None,
                  "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    feed = _FeedPlan(size, size_from, input_shape)
    timing = _Timing(warmup, iterations, seconds, progress, keep_going)
    for name in names:
        opts = {**manifest_opts, **({"precision": precision} if precision is not None else {})}
        opts.setdefault("device", device)
        try:
            rt = runtimes.load(path, backend=name, threads=threads, performance_hint=performance_hint, **opts)
            rt.activate()
        except EdgeSDKError as exc:
            if not keep_going:
                raise
            result.rows += [BenchRow(name, b, error=str(exc)) for b in batch_list]
            continue
        try:
            result.rows += [_bench_one(rt, name, batch, threads, feed, timing, result.settings) for batch in batch_list]
        finally:
            rt.close()
    return result


@dataclass
class _FeedPlan:
    """Where the feeds' dynamic dims come from (make_feeds' arguments)."""

    size: Optional[tuple[int, int]]
    size_from: str
    input_shape: Optional[Sequence[Optional[int]]]


@dataclass
class _Timing:
    """How each configuration is timed, and whether a failure stops the run."""

    warmup: int
    iterations: int
    seconds: Optional[float]
    progress: Optional[BenchProgress]
    keep_going: bool


def _bench_one(rt: Any, name: str, batch: int, threads: Optional[int], feed: _FeedPlan, timing: _Timing,
               settings: dict[str, Any]) -> BenchRow:
    """One backend x batch row; an engine failure becomes the row's error (unless not keep_going),
    a shape nobody gave (ConfigError) is raised: it is the user's to fix."""
    row = BenchRow(name, batch, precision=rt.precision, device=rt.device, threads=threads,
                   inference_precision=getattr(rt, "inference_precision", None))
    label = f"{name} batch {batch}"
    try:
        feeds = make_feeds(rt.inputs, batch, feed.size, input_shape=feed.input_shape, size_from=feed.size_from)
        row.input_shape = tuple(next(iter(feeds.values())).shape)
        if len(rt.inputs) == 1:
            from .shapes import feed_shape

            settings["input_shape_source"] = feed_shape(
                rt.inputs[0].shape, rt.inputs[0].layout, feed.input_shape, feed.size, feed.size_from)[1]
        progress = timing.progress
        cb = (lambda done, total, _l=label: progress(_l, done, total)) if progress else None
        row.stats = measure(rt, feeds, warmup=timing.warmup, iterations=timing.iterations, seconds=timing.seconds,
                            progress=cb)
    except ConfigError:
        raise
    except EdgeSDKError as exc:
        if not timing.keep_going:
            raise
        row.error = str(exc)
    # what ran may only be known after the first inference on some engines
    row.precision = rt.precision
    return row


HEADERS = ["backend", "batch", "precision", "device", "p50 ms", "p90 ms", "p99 ms", "mean ms",
           "items/s", "p50 ms/item"]


def table_rows(result: BenchResult) -> list[list[Any]]:
    rows = []
    for r in result.rows:
        prec = r.precision or "-"
        if r.inference_precision and r.inference_precision != r.precision:
            prec = f"{prec} ({r.inference_precision} compute)"
        if r.stats is None:
            rows.append([r.backend, r.batch, prec, r.device, "error", "", "", "", "", ""])
        else:
            s = r.stats
            rows.append([r.backend, r.batch, prec, r.device, s.p50, s.p90, s.p99, s.mean, f"{s.throughput:.1f}",
                         s.p50 / s.batch])
    return rows


def write_report(result: BenchResult, path: Union[str, Path]) -> list[Path]:
    """A Markdown (or HTML, by suffix) report and a PNG latency-distribution plot beside it."""
    from .report import Report, latency_plot

    path = Path(path)
    png = path.with_suffix(".png")
    series = {f"{r.backend} b{r.batch} {r.precision}": r.stats.samples_ms for r in result.rows if r.stats}
    written = []
    plot = latency_plot(series, png, title=f"Latency per call: {Path(result.model).name}") if series else None
    rep = Report(f"Benchmark: {Path(result.model).name}")
    s = result.settings
    rep.paragraph(f"{s.get('started', '')} on {result.host.get('cpu', result.host.get('machine'))} "
                  f"({result.host.get('cpus')} CPUs); threads {s.get('threads') or 'engine default'}, "
                  f"{s.get('iterations')} timed calls after {s.get('warmup')} warm-up, device {s.get('device')}, "
                  f"requested precision {s.get('precision') or 'model default (pinned)'}.")
    rep.table(HEADERS, table_rows(result))
    errors = [f"{r.backend} batch {r.batch}: {r.error}" for r in result.rows if r.error]
    if errors:
        rep.heading("Errors").bullets(errors)
    rep.paragraph("Precision is what the engine reported after loading (OpenVINO: compute precision in "
                  "parentheses). Latency is one synchronous infer call per sample, input checks included; "
                  "items/s = batch / mean latency with one call in flight. Numbers from one run on a shared "
                  "machine: compare ratios within a run.")
    if plot is not None:
        rep.image(png.name, "latency distribution (CDF)")
        written.append(plot)
    written.insert(0, rep.write(path))
    return written
