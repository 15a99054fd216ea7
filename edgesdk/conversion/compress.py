"""Stage "compress": optional structured pruning (converters.pruning), low-rank factorization and
distillation (converters.distill) of the prepared model, in place of work/prepared.onnx.

It runs after "data" because pruning compensates biases on the calibration samples and
distillation trains on them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .context import Context
from .data import Data
from .prepare import Prepared


@dataclass
class Compressed:
    pruning: Optional[dict[str, Any]] = None        # the report's "pruning"
    distillation: Optional[dict[str, Any]] = None   # the report's "distillation"

    def summary(self) -> str:
        done = [k for k, v in (("pruned", self.pruning), ("low-rank / distilled", self.distillation)) if v]
        return ", ".join(done) if done else "no compression asked (--prune, --lowrank, --distill)"


def compress(ctx: Context, prep: Prepared, data: Data) -> Compressed:
    o = ctx.opts
    out = Compressed()
    plan = None
    if o.prune:
        out.pruning, plan = _prune(ctx, prep, data)
    if o.lowrank or o.distill is not False:
        from converters import distill as kd

        out.distillation = kd.compress_for_convert(
            prep.prepared_model, prep.prepared_path, pruned=bool(o.prune), lowrank=o.lowrank,
            distill_student=o.distill, fit=data.fit_samples, input_shapes={prep.facts.input_name: prep.facts.shape},
            source=str(o.calib), progress=ctx.say, plan=plan,  # feature matching at the pruned layers
            config=kd.DistillConfig(minutes=o.distill_minutes, resume=o.resume, threads=ctx.threads,
                                    checkpoint=kd.checkpoint_path_for(ctx.output)))
    return out


def _prune(ctx: Context, prep: Prepared, data: Data) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """The report's "pruning" and the plan (producer node -> kept channels) distillation matches on."""
    import onnx

    from converters.pruning import channel_prune

    o = ctx.opts
    ctx.say(f"structured channel pruning, ratio {o.prune} ({o.prune_criterion})"
            + (", biases compensated on the calibration samples" if data.fit is not None else ""))
    pruned, prep_report = channel_prune(prep.prepared_model, o.prune, criterion=o.prune_criterion,
                                        input_shapes={prep.facts.input_name: prep.facts.shape},
                                        calib=data.fit_samples,
                                        # onnxruntime NCHWc blocks by 16 on AVX-512; the report's notes say so
                                        multiple_of=16, round_mode="nearest")
    pruned, refit = _refit(ctx, prep, data, pruned, prep_report.plan)
    prep_report.notes.append(refit["note"])
    onnx.save(pruned, str(prep.prepared_path))
    return ({"report": prep_report.to_dict(), "markdown": prep_report.to_markdown(), "refit": refit},
            prep_report.plan)


def _refit(ctx: Context, prep: Prepared, data: Data, pruned: Any, plan: dict[str, list[int]]) -> tuple[Any, dict[str, Any]]:
    """Least-squares refit of the pruned convolutions (converters.pruning_refit) when asked or by
    default with calibration data; the report's "pruning"."refit" says what ran, its cost and the
    held-out cosine before and after. A refit that lowers that cosine is not kept."""
    import time

    from converters.pruning import calib_feeds
    from converters.pruning_refit import refit_pruned

    if ctx.opts.refit is False or not plan or data.fit is None:
        why = ("off (--no-refit)" if ctx.opts.refit is False else
               "nothing was pruned" if not plan else
               "skipped: it needs --calib (real inputs); the pruned filters stay as cut, without refit or bias compensation")
        ctx.say(f"least-squares refit of the pruned convolutions {why}")
        return pruned, {"applied": False, "reason": why, "note": f"Least-squares refit {why}."}
    feeds = calib_feeds(prep.prepared_model, data.fit_samples)
    ctx.say(f"least-squares refit of the pruned convolutions on {len(feeds)} calibration inputs "
            "(--no-refit skips it)")
    started = time.perf_counter()
    refit, count = refit_pruned(prep.prepared_model, pruned, plan, feeds, progress=ctx.say)
    seconds = time.perf_counter() - started
    before, after = _held_cosine(prep, data, pruned), _held_cosine(prep, data, refit)
    kept = before is None or after >= before
    measured = ("held-out cosine not measured (no held-out samples)" if before is None else
                f"held-out cosine {before:.4f} -> {after:.4f}")
    note = (f"Least-squares refit: {count} convolutions refit on {len(feeds)} calibration inputs in {seconds:.1f} s; "
            f"{measured}" + ("." if kept else "; it lowered the cosine, so the unrefit model was kept "
                                              "(--no-refit skips the refit)."))
    ctx.say(note)
    return (refit if kept else pruned), {"applied": kept, "convolutions": count, "calibration_inputs": len(feeds),
                                         "seconds": round(seconds, 2), "cosine_before": before,
                                         "cosine_after": after, "note": note}


def _held_cosine(prep: Prepared, data: Data, model: Any) -> Optional[float]:
    """Mean cosine of `model`'s worst output against the original's on the held-out samples."""
    import onnx

    if data.comparator is None:
        return None
    path = prep.prepared_path.with_name("refit_check.onnx")
    onnx.save(model, str(path))
    try:
        return float(data.comparator.compare(path, backend="onnxruntime").cosine)
    finally:
        path.unlink(missing_ok=True)
