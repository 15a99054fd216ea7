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
    onnx.save(pruned, str(prep.prepared_path))
    return {"report": prep_report.to_dict(), "markdown": prep_report.to_markdown()}, prep_report.plan
