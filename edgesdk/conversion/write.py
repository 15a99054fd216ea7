"""Stage "write": report.json / report.md / accuracy_latency.png, the manifest and the bundle,
written atomically (nothing is left behind on errors or Ctrl-C: edgesdk.bundle.write_bundle)."""
from __future__ import annotations

import datetime as _dt
import json
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bundle import Bundle, sha256_file, write_bundle
from .build import Built
from .choose import Choice
from .compress import Compressed
from .context import Context
from .data import Data
from .growth import growth_warning, source_bytes
from .manifest import build_manifest, jsonable
from .markdown import markdown, plot
from .prepare import Prepared
from .verdict import accuracy_measure, report_warnings


@dataclass
class Written:
    bundle: Bundle
    report: dict[str, Any]

    def summary(self) -> str:
        return f"bundle {self.bundle.path} ({self.report['chosen']['key']})"


def write(ctx: Context, prep: Prepared, data: Data, comp: Compressed, built: Built, choice: Choice) -> Written:
    f = prep.facts
    report = make_report(ctx, prep, data, comp, built, choice)
    manifest = build_manifest(choice.chosen, prep.src_path, ctx.prof, f.preprocess, f.preset, f.task, f.labels,
                              f.shape, f.input_name, f.dtype, report, prep.name, f.decoder)

    def write_reports(stage: Path) -> None:
        plotted = plot(stage / "accuracy_latency.png", report["variants"], choice.chosen.key,
                       f"{prep.src_path.name} on {ctx.prof.name}: accuracy vs latency")
        report["seconds"] = round(time.perf_counter() - ctx.started, 1)
        report["stages"] = ctx.replay(running="write")
        (stage / "report.json").write_text(json.dumps(report, indent=2, default=jsonable))
        (stage / "report.md").write_text(markdown(report, plotted))
        if comp.distillation and comp.distillation.get("plot"):
            shutil.copy(comp.distillation["plot"], stage / "distill_curve.png")

    bundle = write_bundle(ctx.output, dict(choice.chosen.files), manifest, overwrite=ctx.opts.force,
                          extra_writer=write_reports)
    ctx.say(f"bundle written: {ctx.output} ({choice.chosen.name}; {choice.decision})")
    return Written(bundle, report)


def make_report(ctx: Context, prep: Prepared, data: Data, comp: Compressed, built: Built,
                choice: Choice) -> dict[str, Any]:
    """report.json: what was converted, how, every variant, the choice and why."""
    o, f, chosen, base = ctx.opts, prep.facts, choice.chosen, choice.base_for_ratio
    rows = [v.to_dict(o.budget, base) for v in built.rows]
    passes = [r.to_dict() for r in prep.passes]
    grown = growth_warning(prep.src_path.name, source_bytes(prep.src_path, prep.source_proto), chosen.size_bytes,
                           chosen, passes)
    if grown:
        ctx.say(f"WARNING: {grown}")
    return {
        "model": {"file": prep.src_path.name, "sha256": sha256_file(prep.src_path),
                  "input": {"name": f.input_name, "shape": f.shape, "dtype": str(f.dtype)},
                  "frozen_inputs": {k: list(v) for k, v in (o.freeze_inputs or {}).items()}},
        "profile": {"name": ctx.prof.name, "is_this_host": ctx.this_host},
        "mode": choice_mode(ctx),
        "precision_asked": o.precision, "budget": o.budget, "accuracy_measure": accuracy_measure(ctx, data),
        "passes": passes, "pruning": comp.pruning, "distillation": comp.distillation,
        "calibration": data.info,
        "variants": rows, "chosen": chosen.to_dict(o.budget, base), "decision": choice.decision,
        "notes": f.notes + built.notes, "threads": ctx.threads,
        "warnings": report_warnings(data, built.warnings, chosen) + ([grown] if grown else []),
        "over_budget": chosen.within(o.budget) is False,
        "preprocess": f.sources, "options": o.to_dict(),
        "host": {"machine": platform.machine(), "python": platform.python_version(), "cpus": _cpus()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "stages": ctx.replay(),
    }


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


def choice_mode(ctx: Context) -> str:
    """How the variant was picked, as the report says it (every input route)."""
    return "measured here: fastest within budget" if ctx.measure else "profile preference order"
