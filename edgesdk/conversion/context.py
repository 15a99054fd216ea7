"""What every conversion stage reads (`Context`), and the timed record each stage leaves (`StageRecord`).

A stage is ``fn(ctx, *earlier_results) -> result``, the result a small dataclass with a
``summary()`` line; `Context.stage` runs it, times it, says so on the progress callback and
appends the record the report replays (report.json ``stages``, report.md "Stages").
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from ..convert_options import ConvertOptions
from ..errors import BundleError, EdgeSDKError

Progress = Callable[[str], None]

#: the stages in the order convert() runs them (compress follows data: pruning's bias compensation
#: and distillation use the calibration samples)
STAGES = ("prepare", "data", "compress", "build", "choose", "write")


@dataclass
class StageRecord:
    name: str
    seconds: float
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": self.seconds, "summary": self.summary}


@dataclass
class Context:
    """The run's fixed facts: the validated options, the profile, where the bundle goes, whether
    candidates are timed here; plus the stage records so far."""

    model: Any
    opts: ConvertOptions
    prof: Any
    output: Path
    say: Progress
    started: float
    eval_fn: Optional[Callable[[Any], float]] = None
    metric: Optional[str] = None
    this_host: bool = False
    measure: bool = False
    threads: int = 1
    work: Path = Path(".")
    stages: list[StageRecord] = field(default_factory=list)
    say_is_on: bool = True           # progress is shown (calibration loading then shows its own bar)
    plan: tuple[str, ...] = STAGES   # the stages this route runs (the .tflite route has no "compress")
    stage_started: float = 0.0       # perf_counter() when the running stage began

    def stage(self, name: str, fn: Callable[..., Any], *inputs: Any) -> Any:
        """Run one stage with timing and progress, and record it."""
        index = self.plan.index(name) + 1 if name in self.plan else len(self.stages) + 1
        self.say(f"stage {index}/{len(self.plan)}: {name} ({time.perf_counter() - self.started:.1f} s so far)")
        self.stage_started = time.perf_counter()
        result = fn(self, *inputs)
        record = StageRecord(name, round(time.perf_counter() - self.stage_started, 2), result.summary())
        self.stages.append(record)
        self.say(f"stage {name} done in {record.seconds:.1f} s: {record.summary}")
        return result

    def replay(self, running: Optional[str] = None) -> list[dict[str, Any]]:
        """The stage records for the report; `running` adds the stage in progress (the write stage
        writes the report before it ends) with its seconds so far."""
        rows = [s.to_dict() for s in self.stages]
        if running is not None:
            rows.append({"name": running, "seconds": round(time.perf_counter() - self.stage_started, 2),
                         "summary": "report, manifest and bundle written atomically"})
        return rows


def open_context(model: Any, profile: Any, output: Union[str, Path], opts: ConvertOptions,
                 progress: Optional[Progress], started: float) -> Context:
    """Check what is cheap to check (output, profile, metric) before any heavy work."""
    from converters.compare import load_eval_fn

    from ..accuracy import parse_metric
    from ..profiles import load_profile

    output = Path(output)
    if output.exists() and not opts.force:
        raise BundleError(f"{output} already exists; choose another output or pass --force to replace it")
    prof = load_profile(profile, opts.profiles_dirs) if not hasattr(profile, "backends") else profile
    metric_name, metric_fn = parse_metric(opts.metric)
    eval_fn = metric_fn or opts.eval_fn
    fn = load_eval_fn(eval_fn) if isinstance(eval_fn, str) else eval_fn
    say = progress or (lambda msg: None)
    return Context(model, opts, prof, output, say, started, eval_fn=fn, metric=metric_name,
                   say_is_on=bool(progress))


def is_tflite(model: Any) -> bool:
    return isinstance(model, (str, Path)) and Path(model).suffix.lower() == ".tflite" and Path(model).is_file()


def decide_measuring(ctx: Context) -> None:
    """Whether candidates are timed here (auto precision on the profile's own hardware, or asked)."""
    from .. import hostinfo

    try:
        ctx.this_host = hostinfo.is_this_host(ctx.prof, extra_dirs=ctx.opts.profiles_dirs)
    except EdgeSDKError:
        ctx.this_host = False
    opts = ctx.opts
    ctx.measure = (opts.precision == "auto" and ctx.this_host) if opts.measure is None else bool(opts.measure)
    cpu = os.cpu_count() or 1
    ctx.threads = opts.threads or max(1, min(int(getattr(ctx.prof, "threads", cpu) or cpu), cpu))


@contextlib.contextmanager
def work_dir(ctx: Context) -> Iterator[Path]:
    """A scratch folder beside the output (same filesystem: the bundle is renamed into place),
    removed whatever happens. Absolute: converters run tools in it as subprocesses with it as their
    working directory (a relative `-o x.bundle` made onnx2tf look for `.edgesdk-convert-*/...` inside itself)."""
    parent = ctx.output.parent if ctx.output.parent.exists() else None
    ctx.work = Path(tempfile.mkdtemp(prefix=".edgesdk-convert-", dir=parent)).resolve()
    try:
        yield ctx.work
    finally:
        shutil.rmtree(ctx.work, ignore_errors=True)
