"""`TensorSpec`: what a model takes and gives, independent of the engine."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .dims import Dim, show_dims  # Dim: an int, None for a dynamic dim

LAYOUTS = ("NCHW", "NHWC", "NC", "NLC", "")


def guess_layout(shape: Sequence[Dim]) -> str:
    """Best guess of an image layout from a 4-D shape: channels of 1 or 3 (or 4) decide."""
    if len(shape) != 4:
        return "NC" if len(shape) == 2 else ""
    c_first, c_last = shape[1], shape[3]
    if shape[2] == 1 and c_last == 1 and c_first not in (None, 1):
        return "NCHW"  # [N, C, 1, 1]: a 1x1 map of C channels (pooled features, class scores), not C rows
    if c_first in (1, 3, 4) and c_last not in (1, 3, 4):
        return "NCHW"
    if c_last in (1, 3, 4) and c_first not in (1, 3, 4):
        return "NHWC"
    if c_first in (1, 3, 4):
        return "NCHW"
    return ""


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (None for a dynamic dim), numpy dtype and layout of one tensor."""

    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype
    layout: str = ""
    quantization: Optional[tuple[float, int]] = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("TensorSpec needs a non-empty name")
        shape = tuple(None if (d is None or (isinstance(d, int) and d < 0)) else int(d) for d in self.shape)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        layout = self.layout if self.layout else guess_layout(shape)
        if layout not in LAYOUTS:
            raise ValueError(f"TensorSpec {self.name!r}: layout {layout!r} is not one of {LAYOUTS}")
        object.__setattr__(self, "layout", layout)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def batch_dim(self) -> Dim:
        return self.shape[0] if self.shape else None

    @property
    def is_dynamic(self) -> bool:
        return any(d is None for d in self.shape)

    def to_dict(self) -> dict:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype.name, "layout": self.layout}
        if self.quantization is not None:
            d["quantization"] = {"scale": self.quantization[0], "zero_point": self.quantization[1]}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        q = d.get("quantization")
        return cls(
            name=d["name"],
            shape=tuple(d["shape"]),
            dtype=d["dtype"],
            layout=d.get("layout", ""),
            quantization=(float(q["scale"]), int(q["zero_point"])) if q else None,
        )

    def __str__(self) -> str:
        dims = show_dims(self.shape)
        lay = f" {self.layout}" if self.layout else ""
        return f"{self.name}: {self.dtype.name}[{dims}]{lay}"
