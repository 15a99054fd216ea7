"""The held-out judgement both convert routes (ONNX and .tflite input) give in the same words:
every compared variant's `converters.guard.Verdict` with the split it rests on, the decision line
that names it, the report's warnings (how many images to add), and what the budget measures."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from .context import Context

#: what the budget's drop is, per Comparator metric (report "accuracy_measure")
ACCURACY_MEASURES = {"top1": "1 - top-1 agreement", "top5": "1 - top-5 agreement",
                     "box-f1": "1 - box F1 vs the original's boxes", "cosine": "1 - mean cosine similarity"}


def held_out_split(data: Any) -> Optional[str]:
    """How the held-out samples were chosen (the data stage's words), None without any."""
    return (data.info or {}).get("held_out_source") or ("--val" if data.held is not None else None)


def judge_variants(ctx: Context, variants: Sequence[Any], data: Any) -> None:
    """Attach the verdicts and say each one."""
    for v in attach_verdicts(variants, ctx.opts.budget, held_out_split(data)):
        ctx.say(f"held-out check {v.key}: {v.verdict.summary()}")


def attach_verdicts(variants: Sequence[Any], budget: float, split: Optional[str]) -> list[Any]:
    """Every compared variant gets its Verdict (some builders compare without judging; a
    comparison redone after the first judgement is judged again) carrying the held-out split.
    Returns the judged variants."""
    from converters.guard import judge

    judged = []
    for v in variants:
        if v.comparison is None:
            continue
        if v.verdict is None or abs(v.verdict.drop - v.comparison.drop) > 1e-12:
            v.verdict = judge(v.comparison, budget)
        v.verdict.split = split
        judged.append(v)
    return judged


def with_verdict(decision: str, chosen: Any) -> str:
    """The decision line with the chosen variant's drop, interval and verdict word."""
    if chosen.verdict is None:
        return decision
    return decision + f"; {chosen.verdict.metric} drop {chosen.verdict.drop_text()}: {chosen.verdict.word} the budget"


def report_warnings(data: Any, warnings: Sequence[str], chosen: Any) -> list[str]:
    """The data and build `warnings`; the data stage's held-out size line gives way to the chosen
    variant's (which names the drop's interval), and a pass whose interval crosses the budget
    says how many held-out images would settle it."""
    from converters.guard import held_out_warnings

    warnings = list(data.warnings) + list(warnings)
    if chosen.verdict is None:
        return warnings
    generic = held_out_warnings(len(data.held)) if data.held is not None else []
    return [w for w in warnings if w not in generic] + [w for w in chosen.verdict.warnings if w not in warnings]


def accuracy_measure(ctx: Context, data: Any) -> str:
    """What the budget's drop measures, in words."""
    if ctx.eval_fn:
        return "the eval function's metric"
    return ACCURACY_MEASURES[data.comparator.metric if data.comparator else "cosine"]
