"""Constants a graph builds at run time from small ones, which folding would store in the file.

`ConstantOfShape`, `Expand` and `Tile` make an output whose size is set by a shape they are given,
not by their inputs: the onnx wheel's `light_resnet50` (80 KB) builds every weight with
ConstantOfShape, and folding it stored 102 MB. Like onnxsim's size threshold, such a node stays a
node when its output is large and much larger than its inputs (`find_expansions`);
`held_unfoldable` gives the node private copies of its constant inputs listed as graph inputs:
the folding engine then treats them as values a caller could override and folds nothing from
them; they are taken off the input list again afterwards.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Optional

#: ops whose output size is set by a shape they are given (onnxsim's list for its size threshold)
EXPANDING_OPS = ("ConstantOfShape", "Expand", "Tile")
#: an expansion kept as a node outputs at least this many bytes ...
LARGE_BYTES = 100_000
#: ... and at least this many times the bytes of its inputs
GROWTH = 16
#: ops whose output differs run to run: never constant
RANDOM_OPS = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli")


@dataclass
class Expansion:
    """One node kept unfolded: what folding it would have stored."""

    node: str
    op: str
    out_bytes: int
    in_bytes: int


def find_expansions(model: Any, large_bytes: int = LARGE_BYTES, growth: float = GROWTH) -> list[Expansion]:
    """The expanding nodes whose inputs are all constant and whose output is at least
    `large_bytes` and `growth` times their inputs' bytes (an output of unknown size is not one)."""
    if not any(n.op_type in EXPANDING_OPS for n in model.graph.node):
        return []  # no shape inference for the common case
    sizes = _tensor_bytes(model)
    const = _initializers(model) | {""}
    found = []
    for node in model.graph.node:
        if node.op_type in RANDOM_OPS or not all(i in const for i in node.input):
            continue
        out = sizes.get(node.output[0]) if node.output else None
        if node.op_type in EXPANDING_OPS and out is not None:
            ins = sum(sizes.get(i, 0) for i in node.input if i)
            if out >= large_bytes and out >= growth * ins:
                found.append(Expansion(node.name or node.output[0], node.op_type, out, ins))
                continue  # its output, and all computed from it, stays computed at run time
        const.update(node.output)
    return found


@contextlib.contextmanager
def held_unfoldable(model: Any, expansions: list[Expansion]) -> Iterator[Any]:
    """`model` with each expansion reading private copies of its constant inputs, listed as graph
    inputs (so the folding engine cannot fold from them, while other nodes sharing the originals
    still fold); `restore(folded)` takes the copies off the engine's output's input list, which
    leaves them plain initializers."""
    from onnx import helper

    names = {e.node for e in expansions}
    nodes = [n for n in model.graph.node if (n.name or (n.output[0] if n.output else "")) in names]
    values = _constant_values(model, sorted({i for n in nodes for i in n.input if i}))
    added = []
    for node in nodes:
        for k, name in enumerate(node.input):
            if not name:
                continue
            copy = _fresh_name(model, f"{name}__kept_for_{node.op_type}")
            tensor = values[name]
            model.graph.initializer.append(_renamed(tensor, copy))
            model.graph.input.append(helper.make_tensor_value_info(copy, tensor.data_type, list(tensor.dims)))
            node.input[k] = copy
            added.append(copy)

    def restore(folded: Any) -> Any:
        keep = [i for i in folded.graph.input if i.name not in set(added)]
        del folded.graph.input[:]
        folded.graph.input.extend(keep)
        return folded

    yield restore


def _constant_values(model: Any, names: list[str]) -> dict[str, Any]:
    """name -> TensorProto of each constant tensor: initializers as stored, computed ones (Constant
    nodes, small constant subgraphs such as a Concat of shape pieces) from onnx's reference evaluator."""
    from onnx import helper, numpy_helper

    stored = {t.name: t for t in model.graph.initializer}
    out = {n: stored[n] for n in names if n in stored}
    computed = [n for n in names if n not in stored]
    if not computed:
        return out
    from onnx.reference import ReferenceEvaluator

    const, nodes = _initializers(model) | {""}, []
    for node in model.graph.node:
        if node.op_type not in RANDOM_OPS and all(i in const for i in node.input):
            const.update(node.output)
            nodes.append(node)
    inits = [stored[n] for n in _initializers(model)]
    sub = helper.make_model(helper.make_graph(nodes, "constants", [], [helper.make_empty_tensor_value_info(n)
                                                                      for n in computed], inits),
                            opset_imports=list(model.opset_import), ir_version=model.ir_version)
    for name, value in zip(computed, ReferenceEvaluator(sub).run(None, {})):
        out[name] = numpy_helper.from_array(value, name)
    return out


def _renamed(tensor: Any, name: str) -> Any:
    import onnx

    copy = onnx.TensorProto()
    copy.CopyFrom(tensor)
    copy.name = name
    return copy


def _fresh_name(model: Any, base: str) -> str:
    taken = ({t.name for t in model.graph.initializer} | {i.name for i in model.graph.input}
             | {o for n in model.graph.node for o in n.output})
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def _initializers(model: Any) -> set[str]:
    """Initializers a caller cannot override (not also listed as graph inputs)."""
    listed = {i.name for i in model.graph.input}
    return {t.name for t in model.graph.initializer if t.name not in listed}


def _tensor_bytes(model: Any) -> dict[str, int]:
    """Bytes of every tensor whose shape and type are known: initializers, Constant outputs and
    what ONNX shape inference (with data propagation) finds."""
    import onnx

    sizes = {t.name: _nbytes(t.data_type, t.dims) for t in model.graph.initializer}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # best effort, like the InferShapes pass: unknown sizes are not expansions
        inferred = model
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if t.HasField("shape") and all(d >= 0 for d in dims):
            sizes.setdefault(vi.name, _nbytes(t.elem_type, dims))
    return {name: n for name, n in sizes.items() if n is not None}


def _nbytes(elem_type: int, dims: Any) -> Optional[int]:
    import numpy as np
    from onnx import helper

    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    return int(np.prod([int(d) for d in dims], dtype=np.int64)) * itemsize


def fold_expansions(src: Any, dst: Any) -> tuple[Any, Optional[str]]:
    """(`src`, None) when it has no expansion kept unfolded; else (`dst`, a note): `src` with
    those constants folded too and its nodes named (what INT8 quantizers need: stored weights)."""
    from pathlib import Path

    import onnx

    from runtimes.sizes import show_bytes

    from .passes import FoldConstants, NameNodes, PassContext, run_passes

    model = onnx.load(str(src))
    expansions = find_expansions(model)
    if not expansions:
        return src, None
    folded, _ = run_passes(model, [FoldConstants(keep_expansions=False), NameNodes()],
                           PassContext(work_dir=Path(dst).parent))
    onnx.save(folded, str(dst))
    made = sum(e.out_bytes for e in expansions)
    return dst, (f"INT8 quantizes stored weights only: the {len(expansions)} constants the model builds at run time "
                 f"({'/'.join(sorted({e.op for e in expansions}))}, {show_bytes(made)} in float) were folded for it "
                 "and are stored in this variant's file")
