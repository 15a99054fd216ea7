"""Can the held-out check be trusted? Bootstrap intervals and warnings about the data.

The guard (converters.sensitivity) judges a variant's drop against the budget; this module
says how sure that judgement is and what data would make it surer:

- `drop_interval(comparison)`: a bootstrap confidence interval of the drop, resampling the
  held-out samples (their per-sample values, `Comparison.sample_values`), widened to the Wilson
  score interval for agreement rates (the bootstrap of all-agreeing samples is a point);
- `judge(comparison, budget)`: within the budget on the point estimate, and whether the whole
  interval is, on at least `MIN_HELD_OUT` samples (a "confident" pass) - any other pass is reported
  as "not confidently within";
- `data_warnings(...)`: one line per problem naming what to add: a held-out set under
  `MIN_HELD_OUT` samples, a calibration set under `MIN_CALIBRATION`, or one so uniform (near-
  duplicate samples) that it cannot represent what the device will see.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .compare import Comparison, drop_of

#: fewer held-out samples than this cannot judge a budget of a few percent (a 95% interval of a
#: top-1 agreement on 31 samples is about +-10 points)
MIN_HELD_OUT = 32
#: fewer calibration samples than this give unstable activation ranges
MIN_CALIBRATION = 32
#: median pairwise correlation of the (downsampled) calibration samples above this: near-duplicates
UNIFORM_CORRELATION = 0.95
BOOTSTRAP_ROUNDS = 1000
CONFIDENCE = 0.95


def drop_interval(comparison: Comparison, rounds: int = BOOTSTRAP_ROUNDS, confidence: float = CONFIDENCE,
                  seed: int = 0) -> Optional[tuple[float, float]]:
    """(low, high) of the drop over bootstrap resamples of the held-out samples; None when the
    comparison has no per-sample values (a user metric over the whole runtime)."""
    values = comparison.sample_values
    if values is None or len(values) == 0:
        return None
    values = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(rounds, len(values)))
    drops = np.array([drop_of(comparison.kind, values[row]) for row in idx])
    tail = (1.0 - confidence) / 2
    low, high = float(np.quantile(drops, tail)), float(np.quantile(drops, 1.0 - tail))
    if comparison.kind in ("top1", "top5"):
        # when every sample agrees the bootstrap collapses to [0, 0]; the Wilson score interval of
        # the disagreement rate does not (16 of 16 agreeing: up to 0.19)
        w_low, w_high = wilson_interval(int(round(len(values) - values.sum())), len(values), confidence)
        low, high = min(low, w_low), max(high, w_high)
    return low, high


def wilson_interval(failures: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a rate failures / n."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2)
    p = failures / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


#: what each `Comparison.kind` measures, for the reports (the drop is 1 - this, or reference - metric)
METRIC_NAMES = {"top1": "top-1 agreement", "top5": "top-5 agreement", "box-f1": "box F1 vs the original's boxes",
                "cosine": "mean cosine similarity", "metric": "the eval function's metric"}


@dataclass
class Verdict:
    """The drop against the budget, with how sure that is: the one record the variant table,
    report.md and report.json all read."""

    drop: float
    budget: float
    samples: int                      # held-out samples compared
    interval: Optional[tuple[float, float]] = None
    warnings: list[str] = field(default_factory=list)
    metric: str = "cosine"            # Comparison.kind
    #: samples that decide (cosine leaves out samples ~0 in the original); None: all of them
    judged: Optional[int] = None
    boxes: Optional[int] = None       # the original's boxes on the held-out samples (box-f1)
    split: Optional[str] = None       # how the held-out samples were chosen (set by the convert stages)

    @property
    def within(self) -> bool:
        return self.drop <= self.budget + 1e-12

    @property
    def confident(self) -> Optional[bool]:
        """True: the whole interval is within budget, on at least MIN_HELD_OUT deciding samples;
        False: it crosses it or too few samples decide; None: no interval."""
        if self.interval is None:
            return None
        return self.deciding >= MIN_HELD_OUT and self.interval[1] <= self.budget + 1e-12

    @property
    def deciding(self) -> int:
        return self.samples if self.judged is None else self.judged

    @property
    def word(self) -> str:
        """within | not confidently within | over (the budget)."""
        if not self.within:
            return "over"
        return "not confidently within" if self.confident is False else "within"

    def size(self) -> str:
        """'31 held-out samples' (with the deciding count and boxes when they differ)."""
        text = f"{self.samples} held-out samples"
        if self.boxes == 0:
            return text + ", 0 boxes (none decides)"
        if self.judged is not None and self.judged != self.samples:
            text += f" ({self.judged} decide, {self.samples - self.judged} ~0 in the original left out)"
        return text + ("" if self.boxes is None else f", {self.boxes} boxes")

    def drop_text(self) -> str:
        """'0.0312 (95% interval [0.0000, 0.0938]) on 31 held-out samples'."""
        ci = "" if self.interval is None else (f" ({CONFIDENCE:.0%} interval [{self.interval[0]:.4f}, "
                                               f"{self.interval[1]:.4f}])")
        return f"{self.drop:.4f}{ci} on {self.size()}"

    def summary(self) -> str:
        crosses = (" (the interval crosses the budget)" if self.interval and self.interval[1] > self.budget + 1e-12
                   else f" (fewer than {MIN_HELD_OUT} held-out samples decide)")
        sure = {"within": "" if self.confident is None else " (the whole interval is)",
                "not confidently within": crosses, "over": ""}[self.word]
        name = METRIC_NAMES.get(self.metric, self.metric)
        return (f"{name}: drop {self.drop_text()}: {self.word} budget {self.budget}{sure}"
                + ("" if self.split is None else f"; held out: {self.split}"))

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "metric_name": METRIC_NAMES.get(self.metric, self.metric),
                "drop": round(self.drop, 6), "budget": self.budget, "samples": self.samples,
                "judged": self.deciding, "boxes": self.boxes, "split": self.split,
                "interval": None if self.interval is None else [round(x, 6) for x in self.interval],
                "confidence": CONFIDENCE, "within": self.within, "confident": self.confident,
                "verdict": self.word, "summary": self.summary(), "warnings": list(self.warnings)}


def judge(comparison: Comparison, budget: float, split: Optional[str] = None) -> Verdict:
    """The verdict on one comparison (interval included, held-out size warnings attached)."""
    values = comparison.sample_values
    judged = None if values is None else len(values)
    boxes = None
    if comparison.kind == "box-f1" and values is not None and len(values):
        boxes = int(np.asarray(values)[:, [0, 2]].sum())  # tp + fn: every box the original found
        if boxes == 0:
            judged = 0  # both finding nothing counts as agreement (F1 1): no sample judges the boxes
    verdict = Verdict(comparison.drop, budget, comparison.samples, drop_interval(comparison),
                      metric=comparison.kind, judged=judged, boxes=boxes, split=split)
    verdict.warnings = held_out_warnings(verdict.deciding, verdict)
    return verdict


def held_out_warnings(held_out: int, verdict: Optional[Verdict] = None) -> list[str]:
    """One line when the held-out set is too small to judge the budget, and one when the drop's
    interval crosses the budget, each naming how many images to add."""
    out = [] if verdict is None else _crossing_warning(verdict)
    if verdict is not None and verdict.boxes == 0:
        return [f"the original model finds no boxes on the {verdict.samples} held-out samples, so box F1 judges "
                "nothing: add held-out images that show what it detects (--val, or --calib with more), or judge by "
                "--metric cosine"] + out
    if held_out >= MIN_HELD_OUT:
        return out
    width = "" if verdict is None or verdict.interval is None else (
        f" (the drop's {CONFIDENCE:.0%} interval is [{verdict.interval[0]:.4f}, {verdict.interval[1]:.4f}])")
    return [f"only {held_out} held-out samples judge the accuracy budget{width}: add at least "
            f"{MIN_HELD_OUT - held_out} more images from other photos/videos (--calib with more, or --val)"] + out


def _crossing_warning(verdict: Verdict) -> list[str]:
    """Within the budget but the interval crosses it: how many more samples would settle it."""
    if not verdict.within or verdict.interval is None or verdict.interval[1] <= verdict.budget + 1e-12:
        return []
    need = samples_needed(verdict)
    more = "many" if need is None else f"about {max(need - verdict.deciding, 1)}"
    return [f"the drop {verdict.drop:.4f} is within the budget {verdict.budget} but its {CONFIDENCE:.0%} interval "
            f"reaches {verdict.interval[1]:.4f} on {verdict.deciding} held-out samples: add {more} more held-out "
            "images from other photos/videos (--val) to judge it confidently"]


def samples_needed(verdict: Verdict, limit: int = 1_000_000) -> Optional[int]:
    """Held-out samples at the same drop whose interval would end within the budget: the Wilson
    bound for agreement rates, else the interval's half-width shrinking as 1/sqrt(n); None when
    the drop leaves no margin."""
    margin = verdict.budget - verdict.drop
    if margin <= 0 or verdict.interval is None:
        return None
    if verdict.metric in ("top1", "top5"):
        n = max(verdict.deciding, 1)
        while n <= limit and wilson_interval(int(round(verdict.drop * n)), n)[1] > verdict.budget + 1e-12:
            n = int(n * 1.1) + 1
        return n if n <= limit else None
    half = verdict.interval[1] - verdict.drop
    return int(np.ceil(verdict.deciding * (half / margin) ** 2))


def data_warnings(calibration: Optional[np.ndarray], held_out: int, sources: Optional[int] = None) -> list[str]:
    """What is wrong with the data the INT8 judgement rests on, each line naming what to add."""
    out = held_out_warnings(held_out)
    if calibration is None:
        return out
    n = len(calibration)
    if n < MIN_CALIBRATION:
        out.append(f"the calibration set has {n} samples (after holding {held_out} out): too small for stable "
                   f"INT8 ranges; add at least {MIN_CALIBRATION - n} more real images like the device will see")
    corr = uniformity(calibration)
    if corr is not None and corr > UNIFORM_CORRELATION:
        out.append(f"the calibration samples are nearly identical (median correlation {corr:.3f}); add images of "
                   "other scenes, lighting and content")
    if sources is not None and sources < 4 and n >= 2:
        out.append(f"the calibration samples come from {sources} source(s) only; add images from other photos "
                   "or videos")
    return out


def uniformity(samples: np.ndarray, size: int = 16) -> Optional[float]:
    """Median pairwise correlation of the samples, each downsampled to a `size` x `size` grid."""
    # per-sample arrays of different shapes (dynamic dims) are downsampled one by one
    x = [np.asarray(s, np.float64) for s in samples] if isinstance(samples, list) else np.asarray(samples, np.float64)
    if len(x) < 2 or np.ndim(x[0]) < 2:
        return None
    small = np.stack([_downsample(s, size).ravel() for s in x])
    small -= small.mean(1, keepdims=True)
    norms = np.linalg.norm(small, axis=1)
    if np.any(norms == 0):
        return 1.0
    corr = (small @ small.T) / np.outer(norms, norms)
    return float(np.median(corr[np.triu_indices(len(x), 1)]))


def _downsample(sample: np.ndarray, size: int) -> np.ndarray:
    """Block means over the last two axes (or the two spatial ones of NHWC-like arrays)."""
    h, w = sample.shape[-2], sample.shape[-1]
    if sample.ndim == 3 and sample.shape[-1] in (1, 3, 4) and sample.shape[0] > 4:  # H x W x C
        sample = np.moveaxis(sample, -1, 0)
        h, w = sample.shape[-2:]
    ys = np.linspace(0, h, min(size, h) + 1).astype(int)
    xs = np.linspace(0, w, min(size, w) + 1).astype(int)
    return np.array([[sample[..., ys[i]:ys[i + 1], xs[j]:xs[j + 1]].mean() for j in range(len(xs) - 1)]
                     for i in range(len(ys) - 1)])
