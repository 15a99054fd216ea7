"""Freeze graph inputs to constants (OpenVINO `ovc --input name->value` style).

A detector exported with auxiliary inputs (PaddleDetection's `im_shape` / `scale_factor`, a
threshold fed to an in-graph NMS, a fixed mask) takes one image plus values that are the same for
every frame of a deployment. Baking those values in leaves a single-input graph that every
backend, calibration and the accuracy check take like any other; the values are recorded.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from runtimes.dims import show_dims

from .errors import ConversionError
from .passes import graph_inputs, input_dims

#: the option a user states the values with (named in every error)
OPTION = "--freeze-input NAME=V1,V2,..."


def parse_freeze(items: Sequence[str]) -> dict[str, list[float]]:
    """`NAME=V1,V2,...` strings -> {name: values} (an error names the bad item)."""
    out: dict[str, list[float]] = {}
    for item in items:
        name, sep, values = str(item).partition("=")
        if not sep or not name.strip() or not values.strip():
            raise ConversionError(f"--freeze-input {item!r}: expected NAME=V1,V2,... (e.g. scale_factor=1,1)")
        try:
            out[name.strip()] = [float(v) for v in values.split(",")]
        except ValueError:
            raise ConversionError(f"--freeze-input {item!r}: the values must be numbers separated by commas") from None
    return out


def frozen_shape(name: str, dims: Sequence[Optional[int]], count: int) -> list[int]:
    """The shape the `count` values take for an input with these dims: a dynamic leading
    (batch) dim is 1; any other unknown dim must be the one the count decides."""
    shape = [1 if (i == 0 and d is None and len(dims) > 1) else d for i, d in enumerate(dims)]
    unknown = [i for i, d in enumerate(shape) if d is None]
    known = int(np.prod([d for d in shape if d is not None])) if shape else 1
    if len(unknown) == 1 and known and count % known == 0:
        shape[unknown[0]] = count // known
    elif unknown:
        raise ConversionError(f"--freeze-input {name}: its dims {list(dims)} leave the shape of {count} values open; "
                              "export the model with static dims for this input")
    if int(np.prod(shape)) != count:
        raise ConversionError(f"--freeze-input {name}: the input takes {int(np.prod(shape))} values (shape "
                              f"{shape}), {count} were given")
    return [int(d) for d in shape]


def freeze_inputs(model: Any, values: Mapping[str, Sequence[float]]) -> tuple[Any, list[str]]:
    """A copy of `model` with each named input replaced by a constant of its dtype; one note per
    input frozen."""
    import onnx
    from onnx import helper, numpy_helper

    frozen = onnx.ModelProto()
    frozen.CopyFrom(model)
    inputs = {i.name: i for i in graph_inputs(frozen)}
    notes = []
    for name, vals in values.items():
        if name not in inputs:
            raise ConversionError(f"--freeze-input {name}: the model has no input {name!r}; its inputs are "
                                  f"{', '.join(inputs) or 'none'}")
        vi = inputs[name]
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        shape = frozen_shape(name, input_dims(vi), len(vals))
        array = np.asarray(vals, np.float64).reshape(shape)
        if np.issubdtype(dtype, np.integer) and not np.all(array == np.round(array)):
            raise ConversionError(f"--freeze-input {name}: the input is {np.dtype(dtype).name}; give whole numbers")
        frozen.graph.initializer.append(numpy_helper.from_array(array.astype(dtype), name))
        if frozen.ir_version >= 4:  # older IR lists every initializer as an input too
            frozen.graph.input.remove(vi)
        notes.append(f"input {name} frozen to {_show(vals)} (shape {shape}, {np.dtype(dtype).name}; option "
                     f"--freeze-input): the bundle takes only the other inputs")
    if values and not graph_inputs(frozen):
        raise ConversionError("--freeze-input froze every input; leave the image input free")
    return frozen, notes


def _show(vals: Sequence[float]) -> str:
    shown = ", ".join(f"{v:g}" for v in vals[:8])
    return f"[{shown}{', ...' if len(vals) > 8 else ''}]"


def freeze_advice(model: Any) -> str:
    """What to pass for a model with several inputs: the inputs that are not the image (rank
    4), each with a hint from its name where a known exporter's convention says what it holds."""
    inputs = graph_inputs(model)
    images = [i for i in inputs if len(input_dims(i)) == 4]
    others = [i for i in inputs if i not in images[:1]]
    parts = [f"{i.name} {show_dims(input_dims(i), bracketed=True)}{_convention(i.name)}" for i in others]
    return (f"; to bake the inputs that are not the image into the model, pass {OPTION} for each of them "
            f"({'; '.join(parts)})")


#: PaddleDetection's export convention (ppdet/engine/export_utils.py): the network input size and
#: the resize ratio, which its post-processing divides the boxes by
PADDLE_INPUTS = {"im_shape": "the network input's H,W (PaddleDetection)",
                 "scale_factor": "the resize ratio H,W its post-processing divides the boxes by "
                                 "(PaddleDetection)"}


def _convention(name: str) -> str:
    hint = PADDLE_INPUTS.get(name)
    return f": {hint}" if hint else ""


__all__ = ["freeze_inputs", "parse_freeze", "freeze_advice", "frozen_shape", "OPTION"]
