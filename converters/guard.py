"""Can the held-out check be trusted? Bootstrap intervals and warnings about the data.

The guard (converters.sensitivity) judges a variant's drop against the budget; this module
says how sure that judgement is and what data would make it surer:

- `drop_interval(comparison)`: a bootstrap confidence interval of the drop, resampling the
  held-out samples (their per-sample values, `Comparison.sample_values`);
- `judge(comparison, budget)`: within the budget on the point estimate, and whether the whole
  interval is (a "confident" pass) - a pass whose interval crosses the budget is reported so;
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
    return float(np.quantile(drops, tail)), float(np.quantile(drops, 1.0 - tail))


@dataclass
class Verdict:
    """The drop against the budget, with how sure that is."""

    drop: float
    budget: float
    samples: int
    interval: Optional[tuple[float, float]] = None
    warnings: list[str] = field(default_factory=list)

    @property
    def within(self) -> bool:
        return self.drop <= self.budget + 1e-12

    @property
    def confident(self) -> Optional[bool]:
        """True: the whole interval is within budget; False: it crosses it; None: no interval."""
        return None if self.interval is None else self.interval[1] <= self.budget + 1e-12

    def summary(self) -> str:
        ci = "" if self.interval is None else (f", {CONFIDENCE:.0%} interval [{self.interval[0]:.4f}, "
                                               f"{self.interval[1]:.4f}]")
        word = "within" if self.within else "over"
        sure = "" if self.confident is None or not self.within else (
            " (the whole interval is)" if self.confident else " (but the interval crosses the budget)")
        return f"drop {self.drop:.4f} on {self.samples} held-out samples{ci}: {word} budget {self.budget}{sure}"

    def to_dict(self) -> dict[str, Any]:
        return {"drop": round(self.drop, 6), "budget": self.budget, "samples": self.samples,
                "interval": None if self.interval is None else [round(x, 6) for x in self.interval],
                "within": self.within, "confident": self.confident, "warnings": list(self.warnings)}


def judge(comparison: Comparison, budget: float) -> Verdict:
    """The verdict on one comparison (interval included, held-out size warnings attached)."""
    verdict = Verdict(comparison.drop, budget, comparison.samples, drop_interval(comparison))
    verdict.warnings = held_out_warnings(comparison.samples, verdict)
    return verdict


def held_out_warnings(held_out: int, verdict: Optional[Verdict] = None) -> list[str]:
    if held_out >= MIN_HELD_OUT:
        return []
    width = "" if verdict is None or verdict.interval is None else (
        f" (the drop's {CONFIDENCE:.0%} interval is [{verdict.interval[0]:.4f}, {verdict.interval[1]:.4f}])")
    return [f"only {held_out} held-out samples judge the accuracy budget{width}: add at least "
            f"{MIN_HELD_OUT - held_out} more images from other photos/videos (--calib with more, or --val)"]


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
