"""A stated input shape checked against a model's dims: one checker, one wording, for convert's
static-shape pass (converters.passes.MakeStatic) and for bench/predict (edgesdk.shapes.fill_dims).

Dims are plain lists: an int for a fixed dim, None for a dynamic one (ONNX dim_param or -1).
"""
from __future__ import annotations

from typing import Optional, Sequence

from .errors import InputMismatchError

Dim = Optional[int]


def show_dims(dims: Sequence[Dim], bracketed: bool = False) -> str:
    """[1, 3, None, None] -> '1x3x?x?', or '[1,3,?,?]' bracketed (a tensor's dims inside a sentence)."""
    if bracketed:
        return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"
    return "x".join("?" if d is None else str(d) for d in dims)


def merge_stated_dims(model_dims: Sequence[Dim], stated: Sequence[Dim], name: str, *,
                      error: type[Exception] = InputMismatchError, option: str = "--input-shape",
                      free_axes: Sequence[int] = ()) -> list[Dim]:
    """The model's dims with the `stated` ones applied (None in `stated` keeps the model's dim).

    A rank that differs, or a stated dim that contradicts a fixed one, raises `error` naming
    `option`; `free_axes` may differ from a fixed dim (the batch of a model the runtime loops).
    """
    dims = list(model_dims)
    if len(stated) != len(dims):
        raise error(f"{option} {show_dims(stated)} has rank {len(stated)}, the model input {name!r} has rank "
                    f"{len(dims)} ({show_dims(dims)})")
    for axis, (have, want) in enumerate(zip(dims, stated)):
        if want is None:
            continue
        if have is not None and have != want and axis not in free_axes:
            raise error(f"{option} {show_dims(stated)}: input {name!r} axis {axis} is fixed at {have} in the model "
                        f"({show_dims(model_dims)}); give {have} there")
        dims[axis] = want
    return dims
