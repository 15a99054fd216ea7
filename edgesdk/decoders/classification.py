"""Classification: scores per class -> top-k (softmax applied when the model gives logits)."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import ConfigError, InputMismatchError
from ..preprocess import Transform
from ..results import Result
from .base import Decoder, batch_size, pick_output


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def looks_like_probabilities(x: np.ndarray, atol: float = 1e-3) -> bool:
    return bool(np.all(x >= -atol) and np.all(x <= 1 + atol) and np.allclose(x.sum(axis=-1), 1.0, atol=atol * 10))


class ClassificationDecoder(Decoder):
    """Top-k classes per item.

    Settings: ``top_k`` (default 5), ``softmax`` ("auto": only when the rows are not
    already probabilities; true/false), ``threshold`` (top-1 score at which the answer
    counts as confident: ``meta["confident"]``; PP-OCR's cls_thresh), ``min_score``
    (drop top-k entries below it), ``output`` (output name, default the only/first one).
    """

    kind = "classification"

    def __init__(self, labels: Optional[Sequence[str]] = None, top_k: int = 5, softmax: Union[str, bool] = "auto",
                 threshold: Optional[float] = None, min_score: float = 0.0, output: Optional[str] = None,
                 **unknown: Any) -> None:
        super().__init__(labels)
        self._check_unknown(unknown)
        if int(top_k) < 1:
            raise ConfigError(f"classification top_k must be >= 1, got {top_k}")
        if softmax not in ("auto", True, False):
            raise ConfigError(f"classification softmax must be 'auto', true or false, got {softmax!r}")
        self.top_k, self.softmax, self.threshold = int(top_k), softmax, threshold
        self.min_score, self.output = float(min_score), output

    def __call__(self, outputs: Mapping[str, np.ndarray], transforms: Sequence[Transform]) -> list[Result]:
        n = batch_size(outputs, transforms)
        scores = np.asarray(pick_output(outputs, self.output, "class scores"), np.float32)
        if scores.ndim == 4 and scores.shape[2:] == (1, 1):  # N,C,1,1 from a conv head
            scores = scores[:, :, 0, 0]
        if scores.ndim != 2:
            raise InputMismatchError(f"classification expects scores of shape [N, classes], got {scores.shape}")
        applied = self.softmax is True or (self.softmax == "auto" and not looks_like_probabilities(scores))
        if applied:
            scores = softmax(scores)
        k = min(self.top_k, scores.shape[1])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        results = []
        for i in range(n):
            top = [(int(c), self.label(int(c)), float(scores[i, c])) for c in order[i]
                   if scores[i, c] >= self.min_score]
            meta: dict[str, Any] = {"softmax_applied": applied}
            if self.threshold is not None:
                meta["confident"] = bool(scores[i, order[i, 0]] >= self.threshold)
            results.append(Result(topk=top, meta=meta))
        return results
