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
    # onnxruntime NCHWc blocks by 16 on AVX-512; the report's notes say so
    kw = dict(criterion=o.prune_criterion, input_shapes={prep.facts.input_name: prep.facts.shape},
              calib=data.fit_samples, multiple_of=16, round_mode="nearest")
    pruned, prep_report = channel_prune(prep.prepared_model, o.prune, **kw)
    if o.prune_max_flops is not None and prep_report.flops_ratio > o.prune_max_flops:  # before the refit's cost
        from ..errors import ConversionError

        raise ConversionError(f"--prune {o.prune} leaves {prep_report.flops_ratio:.3f}x the FLOPs even with every "
                              f"group pruned, above --prune-max-flops {o.prune_max_flops}: raise --prune or the budget")
    pruned, refit = _refit(ctx, prep, data, pruned, prep_report.plan)
    if o.prune_max_flops is not None:
        pruned, prep_report, refit = _prefer_sensitive(ctx, prep, data, kw, (pruned, prep_report, refit))
    prep_report.notes.append(refit["note"])
    onnx.save(pruned, str(prep.prepared_path))
    return ({"report": prep_report.to_dict(), "markdown": prep_report.to_markdown(), "refit": refit},
            prep_report.plan)


#: calibration samples each group's damage is measured on (one onnxruntime run each per group)
SENSITIVITY_SAMPLES = 4


def _prefer_sensitive(ctx: Context, prep: Prepared, data: Data, kw: dict[str, Any],
                      every: tuple[Any, Any, dict[str, Any]]) -> tuple[Any, Any, dict[str, Any]]:
    """(model, PruneReport, refit) of the better of two prunings on the held-out samples: `every`
    group pruned, or the most fragile groups left whole (`_sensitive_groups`). Measured, not
    assumed: the sensitivity is of each group alone and unrefit, and a group left whole is one
    the refit cannot correct (the PP-OCR direction classifier: 0.755 against 0.719 before the
    refit, 0.820 against 0.875 after)."""
    from converters.pruning import channel_prune

    whole, why = _sensitive_groups(ctx, prep, data, kw, every[1])
    if not whole:
        every[1].notes.append(why)
        return every
    model, report = channel_prune(prep.prepared_model, ctx.opts.prune, exclude=whole, **kw)
    model, refit = _refit(ctx, prep, data, model, report.plan)
    a, b = _kept_cosine(prep, data, every[0], every[2]), _kept_cosine(prep, data, model, refit)
    if a is None:
        verdict, keep = "no held-out samples to compare on: the sensitivity choice is kept, unmeasured", True
    else:
        keep = b >= a
        verdict = (f"held-out cosine {b:.4f} with them whole against {a:.4f} with every group pruned "
                   f"(FLOPs x{report.flops_ratio:.3f} against x{every[1].flops_ratio:.3f}): "
                   + ("kept them whole" if keep else "pruned every group, the better of the two"))
    chosen = (model, report, refit) if keep else every
    chosen[1].notes.append(f"{why} {verdict[0].upper()}{verdict[1:]}.")
    ctx.say(f"pruning sensitivity: {verdict}")
    return chosen


def _kept_cosine(prep: Prepared, data: Data, model: Any, refit: dict[str, Any]) -> Optional[float]:
    """Held-out cosine of the pruned model `_refit` kept: the one it measured, else measured now."""
    measured = refit.get("cosine_after" if refit.get("applied") else "cosine_before")
    return measured if measured is not None else _held_cosine(prep, data, model)


def _sensitive_groups(ctx: Context, prep: Prepared, data: Data, kw: dict[str, Any],
                      full: Any) -> tuple[list[str], str]:
    """Producers of the groups --prune leaves whole under --prune-max-flops (and
    --prune-max-activations): each group pruned alone on a few calibration samples, the most
    damage per FLOP saved kept whole first (converters.pruning.sensitive_to_exclude), and the
    report's note saying which and what it cost. `full`: the PruneReport with every group pruned."""
    import numpy as np
    from converters.pruning import group_sensitivity, sensitive_to_exclude

    from ..errors import ConversionError

    o = ctx.opts
    if not isinstance(data.fit_samples, np.ndarray):
        raise ConversionError("--prune-max-flops measures each group on calibration samples of a single-input model; "
                              "this one has none loaded as an array (several inputs, or no calibration part): drop "
                              "--prune-max-flops, or use converters.pruning.group_sensitivity from Python")
    samples = data.fit_samples[:SENSITIVITY_SAMPLES]
    ctx.say(f"pruning sensitivity: each of {len(full.groups)} groups pruned alone, measured on {len(samples)} "
            f"calibration samples (--prune-max-flops {o.prune_max_flops}"
            + (f", --prune-max-activations {o.prune_max_activations}" if o.prune_max_activations else "") + ")")
    sens = group_sensitivity(prep.prepared_model, o.prune, samples, progress=ctx.say, **kw)
    whole = sensitive_to_exclude(sens, full.flops_ratio, o.prune_max_flops, full.activations_ratio,
                                 o.prune_max_activations)
    worst = sorted(sens, key=lambda g: g.cosine)[:3]
    note = (f"Sensitivity: {len(whole)} of {len(sens)} groups are candidates to leave whole (the most output damage "
            f"per FLOP saved, each group pruned alone on {len(samples)} calibration samples) within "
            f"--prune-max-flops {o.prune_max_flops}" + (f" and --prune-max-activations {o.prune_max_activations}"
                                                         if o.prune_max_activations else "")
            + f": {', '.join(whole) or 'none'}. Most fragile alone: "
            + ", ".join(f"{g.producers[0]} cosine {g.cosine:.3f}" for g in worst) + ".")
    ctx.say(note)
    return whole, note


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
