"""Raw: no decoding; each item's slice of every output goes into ``meta["outputs"]``."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..preprocess import Transform
from ..results import Result
from .base import Decoder


class RawDecoder(Decoder):
    """Outputs whose first dim is the batch are split per item; others are shared."""

    kind = "raw"

    def __init__(self, labels: Optional[Sequence[str]] = None, **unknown: Any) -> None:
        super().__init__(labels)
        self._check_unknown(unknown)

    def __call__(self, outputs: Mapping[str, np.ndarray], transforms: Sequence[Transform]) -> list[Result]:
        n = len(transforms)
        results = []
        for i in range(n):
            per = {name: (arr[i] if arr.ndim and arr.shape[0] == n else arr) for name, arr in outputs.items()}
            results.append(Result(meta={"outputs": per}))
        return results


def summarize(arr: np.ndarray) -> str:
    """One line about an array: shape, dtype, range, mean (what `edgesdk predict` prints)."""
    arr = np.asarray(arr)
    dims = "x".join(str(d) for d in arr.shape) or "scalar"
    if arr.size == 0:
        return f"{arr.dtype.name}[{dims}] (empty)"
    if arr.dtype.kind in "fiub":
        a = arr.astype(np.float64)
        return (f"{arr.dtype.name}[{dims}] min {a.min():.4g} max {a.max():.4g} mean {a.mean():.4g}"
                + (f" argmax {int(a.reshape(-1).argmax())}" if arr.size <= 100000 else ""))
    return f"{arr.dtype.name}[{dims}]"
