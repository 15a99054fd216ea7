"""Stage "choose": timing here, the fastest variant within the accuracy budget (INT8 is not always
faster); elsewhere the first within the budget in the profile's preference order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from runtimes.registry import REFERENCE

from ..errors import ConversionError
from .build import Built
from .candidates import Candidate
from .context import Context
from .data import Data
from .verdict import attach_verdicts, judge_variants, with_verdict  # noqa: F401  (attach_verdicts: tests import it here)


@dataclass
class Choice:
    chosen: Any                  # converters.variants.Variant
    decision: str                # why, in words (report "decision", manifest provenance)
    base_for_ratio: Optional[Any]   # the reference fp32 row the speed-up and size ratios divide by

    def summary(self) -> str:
        return f"{self.chosen.name}: {self.decision}"


def choose(ctx: Context, built: Built, data: Data) -> Choice:
    o = ctx.opts
    judge_variants(ctx, built.rows, data)
    warnings = data.warnings + built.warnings
    chosen, decision = pick(built.variants, built.candidates, o.budget, ctx.measure, o.keep_best, warnings)
    base = built.baseline or next((v for v in built.variants if v.key == f"{REFERENCE}-fp32" and v.ok), None)
    return Choice(chosen, with_verdict(decision, chosen), base)


def pick(variants: list[Any], cands: list[Candidate], budget: float, measure: bool,
         keep_best: bool = False, warnings: Sequence[str] = ()) -> tuple[Any, str]:
    ok = [(v, c) for v, c in zip(variants, cands) if v.ok and v.within(budget) is not False]
    if not ok:
        return _over_budget(variants, budget, keep_best, warnings)
    if measure:
        timed = [(v, c) for v, c in ok if v.latency]
        if timed:
            best = min(timed, key=lambda vc: (vc[0].latency["p50_ms"], vc[1].rank))
            return best[0], (f"fastest within the accuracy budget measured here "
                             f"({best[0].latency['p50_ms']:.2f} ms p50)")
    v, c = ok[0]
    checked = v.comparison is not None
    return v, ("first in the profile's preference order " + ("within the accuracy budget" if checked
                                                             else "(accuracy not checked: no held-out samples)"))


def _over_budget(variants: list[Any], budget: float, keep_best: bool, warnings: Sequence[str]) -> tuple[Any, str]:
    checked = [v for v in variants if v.ok and v.comparison is not None]
    if keep_best and checked:
        best = min(checked, key=lambda v: v.comparison.drop)
        return best, (f"OVER BUDGET: no variant met the budget ({budget}); --keep-best wrote the closest, "
                      f"drop {best.comparison.drop:.4f}")
    failed = "; ".join(f"{v.name}: {v.error or f'drop {v.comparison.drop:.4f} > {budget}'}" for v in variants)
    why = (" Likely cause: " + " ".join(warnings)) if warnings else ""
    raise ConversionError(f"no variant could be built within the accuracy budget ({budget}): {failed}.{why} "
                          "Pass --keep-best to write the closest variant (marked over budget).")
