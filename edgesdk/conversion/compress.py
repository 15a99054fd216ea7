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

        fit, groups, source = _training_inputs(ctx, prep, data)
        config = kd.recipe_config(task=prep.facts.task, minutes=o.distill_minutes, resume=o.resume,
                                  threads=ctx.threads, checkpoint=kd.checkpoint_path_for(ctx.output))
        if o.distill is not False and fit is not None:
            ctx.say(f"distillation recipe: {kd.describe_recipe(config)} (converters.distill.RECIPE, measured on "
                    "bench/compress.py; on the Python API, converters.distill.distill_onnx takes any DistillConfig)")
        out.distillation = kd.compress_for_convert(
            prep.prepared_model, prep.prepared_path, pruned=bool(o.prune), lowrank=o.lowrank,
            distill_student=o.distill, fit=fit, input_shapes={prep.facts.input_name: prep.facts.shape},
            source=source, progress=ctx.say, plan=plan,  # feature matching at the pruned layers
            config=config, groups=groups)
    return out


#: a calibration video gives distillation up to this many of its frames (the held-out segments left out)
DISTILL_VIDEO_FRAMES = 256
#: ... as long as they fit in this many bytes of float32 input
DISTILL_VIDEO_BYTES = 1.5e9


def _training_inputs(ctx: Context, prep: Prepared, data: Data) -> tuple[Any, Any, str]:
    """(samples, their photo/segment per sample, description) distillation trains on: the
    calibration part of --calib; from a video, more of its frames (neighbouring frames add
    variety at no cost), still none of the segments held out for the accuracy check."""
    import numpy as np

    fit = data.fit
    if fit is None:
        return None, None, str(ctx.opts.calib)
    if fit.kind != "video" or isinstance(ctx.opts.calib, np.ndarray):
        return fit.samples, fit.sources or None, f"{ctx.opts.calib} ({len(fit)} calibration samples)"
    from ..calibration import load_calibration

    per = int(np.prod([d or 1 for d in prep.facts.shape[1:]])) * 4
    want = int(max(len(fit), min(DISTILL_VIDEO_FRAMES, DISTILL_VIDEO_BYTES // max(per, 1))))
    more = load_calibration(ctx.opts.calib, prep.facts.preprocess, want, input_shape=prep.facts.shape,
                            input_dtype=prep.facts.dtype, progress=None)
    keep = set(fit.sources)
    mask = np.array([s in keep for s in more.sources], bool)
    samples = more.samples[mask] if isinstance(more.samples, np.ndarray) else [x for x, m in zip(more.samples, mask) if m]
    groups = [s for s, m in zip(more.sources, mask) if m]
    ctx.say(f"distillation trains on {len(groups)} frames of the video's {len(keep)} calibration segments "
            f"(calibration itself used {len(fit)}; the held-out segments stay out)")
    return samples, groups, f"{ctx.opts.calib} ({len(groups)} video frames, held-out segments excluded)"


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
