"""Keep the layers most sensitive to quantization in float until the accuracy budget holds.

Backend-neutral: the caller passes functions that build/evaluate a model with a given set of
layers kept float (ONNX QDQ: `onnx_quant.revert_layers`; OpenVINO: `openvino_ir.revert_layers`).

`bisect_float_layers`:
1. Measure the fully quantized model. Within budget: done.
2. Rank: revert each quantized layer alone and measure how much of the drop it wins back
   (on a few held-out samples, for speed).
3. Bisect over the ranking: keep the top k float for the smallest k within budget; when even
   all ranked layers float miss it, the closest prefix is the answer. Every prefix tried is a
   step with its drop (and latency, when the caller measures it): the accuracy-latency
   frontier the report shows, and which layers stayed float.
(An older greedy walk that stopped after a few misses is gone: it gave up before the budget
held on models whose sensitive layers ranked below several useless ones.)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

Evaluate = Callable[[Sequence[str]], float]  # excluded layers -> accuracy drop


@dataclass
class GuardStep:
    layer: str
    excluded: list[str]
    drop: float
    kept: bool
    latency_ms: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "excluded": list(self.excluded), "drop": round(self.drop, 6),
                "kept": self.kept, "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3)}


@dataclass
class GuardReport:
    budget: float
    initial_drop: float
    final_drop: float
    excluded: list[str] = field(default_factory=list)
    steps: list[GuardStep] = field(default_factory=list)
    ranking: list[tuple[str, float]] = field(default_factory=list)
    candidates: int = 0
    stopped: str = ""
    seconds: float = 0.0

    @property
    def within_budget(self) -> bool:
        return self.final_drop <= self.budget

    def to_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "initial_drop": round(self.initial_drop, 6),
                "frontier": [s.to_dict() for s in frontier(self)],
                "final_drop": round(self.final_drop, 6), "within_budget": self.within_budget,
                "float_layers": list(self.excluded), "candidates": self.candidates,
                "ranking_top": [{"layer": n, "gain": round(g, 6)} for n, g in self.ranking[:10]],
                "steps": [s.to_dict() for s in self.steps], "stopped": self.stopped,
                "seconds": round(self.seconds, 2)}


def rank_layers(candidates: Sequence[str], rank_evaluate: Evaluate,
                say: Callable[[str], None] = lambda msg: None) -> list[tuple[str, float]]:
    """(layer, drop won back when it alone stays float), most sensitive first; progress + ETA."""
    start = time.perf_counter()
    base = rank_evaluate([])
    ranking = []
    for i, name in enumerate(candidates):
        ranking.append((name, base - rank_evaluate([name])))
        if (i + 1) % 10 == 0 or i + 1 == len(candidates):
            spent = time.perf_counter() - start
            eta = spent / (i + 1) * (len(candidates) - i - 1)
            say(f"ranked {i + 1}/{len(candidates)} layers ({spent:.0f} s, about {eta:.0f} s left)")
    return sorted(ranking, key=lambda item: item[1], reverse=True)


def bisect_float_layers(
    candidates: Sequence[str],
    evaluate: Evaluate,
    budget: float,
    *,
    rank_evaluate: Optional[Evaluate] = None,
    latency: Optional[Callable[[Sequence[str]], float]] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> GuardReport:
    """The fewest most-sensitive layers to keep float for the budget to hold.

    Rank every candidate (`rank_evaluate`, a quick subset), then bisect over the ranking: keep
    the top k float for k between "none" (over budget) and "all ranked" (tried first: if even
    that misses, no k can meet the budget and the closest prefix is the answer). The search
    never gives up early; it takes about log2(len(candidates)) + 2 full evaluations. Every
    prefix tried is a step (drop, and latency when `latency` is given): the accuracy-latency
    frontier the report shows. `excluded` is the smallest prefix within budget, or the one with
    the lowest drop when none is (`within_budget` False: the closest variant).
    """
    start = time.perf_counter()
    say = progress or (lambda msg: None)
    drop0 = evaluate([])
    report = GuardReport(budget, drop0, drop0, candidates=len(candidates))
    if drop0 <= budget:
        report.stopped = "fully quantized model is within budget"
        report.seconds = time.perf_counter() - start
        return report
    say(f"accuracy drop {drop0:.4f} > budget {budget:.4f}: ranking {len(candidates)} layers by sensitivity")
    report.ranking = rank_layers(candidates, rank_evaluate or evaluate, say)
    order = [name for name, _ in report.ranking]
    tried: dict[int, float] = {0: drop0}

    def trial(k: int) -> float:
        excluded = order[:k]
        drop = evaluate(excluded)
        lat = latency(excluded) if latency is not None else None
        tried[k] = drop
        report.steps.append(GuardStep(f"top {k} float", list(excluded), drop, drop <= budget, lat))
        say(f"guard: {k}/{len(order)} most sensitive layers float -> drop {drop:.4f}"
            + (f", {lat:.2f} ms" if lat is not None else ""))
        return drop

    lo, hi = 0, len(order)
    if order and trial(hi) <= budget:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if trial(mid) <= budget:
                hi = mid
            else:
                lo = mid
        report.stopped = f"within budget with the {hi} most sensitive of {len(order)} layers float (bisection)"
        best = hi
    else:
        best = min(tried, key=lambda k: (tried[k], k))
        report.stopped = (f"every ranked layer tried: even all {len(order)} float give drop {tried.get(hi, drop0):.4f} "
                          f"> budget; closest: {best} layers float, drop {tried[best]:.4f}")
    report.excluded, report.final_drop = order[:best], tried[best]
    report.seconds = time.perf_counter() - start
    return report


def frontier(report: GuardReport) -> list[GuardStep]:
    """The steps no other step beats on both drop and latency (all steps when untimed), by k."""
    steps = sorted(report.steps, key=lambda s: len(s.excluded))
    if any(s.latency_ms is None for s in steps):
        return steps
    return [s for s in steps if not any(o is not s and o.drop <= s.drop and o.latency_ms <= s.latency_ms
                                        and (o.drop < s.drop or o.latency_ms < s.latency_ms) for o in steps)]
