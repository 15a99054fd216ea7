"""Model-ready samples as the quantizers and the Comparator take them: an N x input-shape array,
or (a model input with dynamic dims, e.g. text lines of their own widths) a list of per-sample
arrays whose shapes differ, each without the batch dim, like ``array[i]``. Each sample is fed
as a batch of one.
"""
from __future__ import annotations

from typing import Iterator, Sequence, Union

import numpy as np

Samples = Union[np.ndarray, Sequence[np.ndarray]]


def batch_of_one(samples: Samples, i: int) -> np.ndarray:
    """Sample `i` as a batch of one ([1, ...])."""
    return np.ascontiguousarray(np.asarray(samples[i])[None])


def batches_of_one(samples: Samples) -> list[np.ndarray]:
    return [batch_of_one(samples, i) for i in range(len(samples))]


def iter_batches(samples: Samples) -> Iterator[np.ndarray]:
    for i in range(len(samples)):
        yield batch_of_one(samples, i)


def is_array_list(samples: object) -> bool:
    """A list of per-sample arrays (not feed dicts, not one stacked array)."""
    return isinstance(samples, (list, tuple)) and len(samples) > 0 and isinstance(samples[0], np.ndarray)
