"""Stage "build", its last step: quantization-aware fine-tuning (converters.qat) of the INT8
variants the accuracy guard could not bring within the budget.

Without --qat it only says so, naming --qat as the next step. With --qat each such variant's QDQ
ONNX file is fine-tuned on the calibration images (the held-out ones stay out of it) and the
result goes through the same check and guard judgement as every variant, placed right after the
variant it came from so the profile's order still decides."""
from __future__ import annotations

from typing import Any, Optional

from .context import Context
from .data import Data

INT8_PRECISIONS = ("int8", "mixed")


def missed(variants: list[Any], budget: float) -> list[Any]:
    """INT8 variants that were checked and are still over the budget after the guard."""
    return [v for v in variants if v.ok and v.precision in INT8_PRECISIONS and v.within(budget) is False]


def next_step(variants: list[Any], budget: float) -> Optional[str]:
    """The one line that offers QAT when INT8 missed the budget, None when nothing missed."""
    over = missed(variants, budget)
    if not over:
        return None
    names = ", ".join(f"{v.key} (drop {v.comparison.drop:.4f})" for v in over)
    return (f"INT8 misses the accuracy budget {budget} even after the guard: {names}; next step: --qat "
            "(quantization-aware fine-tuning on the calibration images, --qat-minutes M, default 4)")


def check_inputs(ctx: Context, prep: Any, data: Data) -> None:
    """Refuse --qat before any variant is built: no or too little data, operators onnx2torch
    cannot convert (each message names what to change)."""
    from converters.distill import unsupported_ops
    from converters.qat import QatError, check_samples

    o = ctx.opts   # --precision was checked with the options (convert_options)
    if data.fit is None:
        raise QatError("--qat trains on real inputs: pass --calib with a folder of real images or a video "
                       "(no labels needed)")
    check_samples(data.fit_samples, f"--calib {o.calib}")
    missing = unsupported_ops(prep.prepared_model)
    if missing:
        raise QatError(f"--qat trains the model in PyTorch (onnx2torch), which has no converter for "
                       f"{', '.join(missing)}; drop --qat (the guard's INT8 result stays), or export the model "
                       "without these operators")


def run(ctx: Context, builder: Any, variants: list[Any], cands: list[Any], data: Data) -> tuple[list, list, list]:
    """(variants, candidates, notes) with a QAT variant after each INT8 variant that missed."""
    budget = ctx.opts.budget
    out_v, out_c, notes = [], [], []
    for v, c in zip(variants, cands):
        out_v.append(v)
        out_c.append(c)
        if not missed([v], budget):
            continue
        if not v.model.endswith(".onnx"):
            notes.append(f"--qat: {v.key} is an OpenVINO IR, not a QDQ ONNX file; QAT fine-tunes the QDQ ONNX "
                         "variants (onnxruntime int8, openvino int8-qdq), which OpenVINO also runs in int8")
            continue
        q = _fine_tune(ctx, builder, v, data)
        out_v.append(q)
        out_c.append(c)
        notes.append(q.notes[-1])
    return out_v, out_c, notes


def _fine_tune(ctx: Context, builder: Any, v: Any, data: Data) -> Any:
    from converters.qat import QatConfig, int8_evidence, qat
    from converters.variants import Variant

    o, s = ctx.opts, builder.s
    src = v.files[v.model]
    dst = s.work / (src.stem + "_qat.onnx")
    ctx.say(f"QAT of {v.name} (held-out drop {v.comparison.drop:.4f} > {o.budget}) for at most {o.qat_minutes:g} min")
    # beside the bundle like distillation's, so Ctrl-C keeps the best weights and --resume continues
    checkpoint = ctx.output.with_name(f"{ctx.output.name}.{v.key}.qat.pt")
    cfg = QatConfig(minutes=o.qat_minutes, threads=ctx.threads, checkpoint=checkpoint, resume=o.resume)
    _, rep = qat(s.prepared, src, data.fit_samples, dst, cfg, progress=ctx.say, source=f"--calib {o.calib}")
    rep.int8 = int8_evidence(dst, s.work, src)
    q = Variant(v.key + "-qat", v.name + " after QAT", v.backend, "int8", model=dst.name, files={dst.name: dst},
                check_with=(v.check_with[0], dst), runtime_precision=v.runtime_precision, notes=list(v.notes))
    builder.check(q)
    q.verified += [f"{engine}: {ev}" for engine, ev in rep.int8.items()]
    after = f"{q.comparison.drop:.4f}" if q.comparison else "not checked"
    q.notes.append(f"QAT ({rep.minutes:.1f} min, {rep.steps} steps on {rep.train_images} calibration images): held-out "
                   f"drop {v.comparison.drop:.4f} -> {after} (budget {o.budget}); cosine to fp32 on the images "
                   f"kept out of training {rep.start_cosine:.4f} -> {rep.best_cosine:.4f}; exported QDQ vs the "
                   f"trained model {rep.torch_vs_onnxruntime:.5f}")
    ctx.say(f"  {q.name}: {q.notes[-1]}")
    return q


def after_guard(ctx: Context, builder: Any, variants: list[Any], cands: list[Any], data: Data) -> tuple[list, list, list]:
    """build()'s hook: (variants, candidates, notes). Without --qat a miss is said, naming --qat."""
    if not ctx.opts.qat:
        hint = next_step(variants, ctx.opts.budget)
        if hint:
            ctx.say(hint)
        return variants, cands, [hint] if hint else []
    if not missed(variants, ctx.opts.budget):
        return variants, cands, ["--qat: no INT8 variant missed the accuracy budget, nothing was fine-tuned"]
    return run(ctx, builder, variants, cands, data)
