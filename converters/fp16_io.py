"""float16 ONNX models -> float32, for the converters that take only float32 graphs.

A model stored in float16 (weights, graph inputs/outputs, Cast nodes to float16, as
onnxconverter-common's `convert_float_to_float16` writes it) loads in onnxruntime, but NNCF's
ONNX backend, onnxruntime's static quantizer and onnx2tf refuse it. `Float16ToFloat32` widens
it: every float16 tensor (initializers, Constant / ConstantOfShape values, graph inputs and
outputs, value_info) becomes float32, Cast nodes to float16 are retyped to float32, and the
casts that then turn float32 into float32 are removed. The result computes what the float16
model computes, minus its float16 rounding of activations: the weights keep their float16
values exactly.

The float16 I/O contract is dropped by this pass (the bundle then takes and gives float32);
`with_float16_io` puts it back on a float32 model with Casts at the graph boundary.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

from .passes import GraphPass, PassContext, PassRecord

#: onnx.TensorProto.FLOAT / FLOAT16 (numbers, so this module imports onnx only when it works)
FLOAT, FLOAT16 = 1, 10
#: node attributes that name an element type (Cast's `to`, RandomNormal/EyeLike's `dtype`, ...)
TYPE_ATTRS = ("to", "dtype")


def _graphs(graph: Any) -> Iterator[Any]:
    """`graph` and every subgraph inside it (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _value_infos(graph: Any) -> Iterator[Any]:
    yield from graph.input
    yield from graph.output
    yield from graph.value_info


def is_float16_model(model: Any) -> bool:
    """True when any tensor the model stores or exchanges is float16."""
    for g in _graphs(model.graph):
        if any(t.data_type == FLOAT16 for t in g.initializer):
            return True
        if any(v.type.tensor_type.elem_type == FLOAT16 for v in _value_infos(g)):
            return True
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("t") and attr.t.data_type == FLOAT16:
                    return True
                if attr.name in TYPE_ATTRS and attr.i == FLOAT16:
                    return True
    return False


def _widen_tensor(tensor: Any) -> None:
    import numpy as np
    from onnx import numpy_helper

    wide = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)
    tensor.CopyFrom(wide)


def _widen_graph(graph: Any, counts: dict[str, int]) -> None:
    for t in graph.initializer:
        if t.data_type == FLOAT16:
            _widen_tensor(t)
            counts["initializers"] += 1
    for v in _value_infos(graph):
        if v.type.tensor_type.elem_type == FLOAT16:
            v.type.tensor_type.elem_type = FLOAT
            counts["value_info"] += 1
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t") and attr.t.data_type == FLOAT16:
                _widen_tensor(attr.t)
                counts["constants"] += 1
            if attr.name in TYPE_ATTRS and attr.type == attr.INT and attr.i == FLOAT16:
                attr.i = FLOAT
                counts["retyped"] += 1


def _float_names(model: Any) -> set[str]:
    """Names of the main graph's tensors known to be float32 (shape inference fills the rest)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # inference is best effort: unknown types keep their Casts
        inferred = model
    g = inferred.graph
    names = {v.name for v in _value_infos(g) if v.type.tensor_type.elem_type == FLOAT}
    return names | {t.name for t in g.initializer if t.data_type == FLOAT}


def _drop_identity_casts(model: Any) -> int:
    """Remove the main graph's Cast-to-float32 nodes whose input is already float32; consumers
    read the input instead. A cast that produces a graph output stays (the name is the contract)."""
    floats = _float_names(model)
    graph = model.graph
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    keep = []
    for node in graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and to == FLOAT and node.input[0] in floats and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[0]
            continue
        keep.append(node)
    removed = len(graph.node) - len(keep)
    if removed:
        del graph.node[:]
        graph.node.extend(keep)
        # subgraphs may read an outer name that is gone now
        for sub in list(_graphs(graph))[1:]:
            for node in sub.node:
                node.input[:] = [rename.get(i, i) for i in node.input]
    return removed


def to_float32(model: Any) -> tuple[Any, list[str]]:
    """A float32 copy of a float16 model and what changed (an empty list: nothing was float16)."""
    if not is_float16_model(model):
        return model, []
    out = type(model)()
    out.CopyFrom(model)
    counts = {"initializers": 0, "constants": 0, "value_info": 0, "retyped": 0}
    for g in _graphs(out.graph):
        _widen_graph(g, counts)
    removed = _drop_identity_casts(out)
    ios = [v.name for v in list(model.graph.input) + list(model.graph.output)
           if v.type.tensor_type.elem_type == FLOAT16]
    changes = [f"float16 -> float32: {counts['initializers']} initializers, {counts['constants']} constants, "
               f"{counts['retyped']} Cast/dtype attributes retyped, {removed} float32->float32 Casts removed"]
    if ios:
        changes.append(f"graph I/O {', '.join(ios)} now float32 (the bundle takes and gives float32; "
                       "converters.fp16_io.with_float16_io restores float16 I/O)")
    return out, changes


class Float16ToFloat32(GraphPass):
    """The float16 -> float32 widening as a preparation pass (a float32 model passes unchanged)."""

    name = "float16_to_float32"

    def apply(self, model: Any, ctx: PassContext, record: PassRecord) -> Any:
        out, changes = to_float32(model)
        record.changes += changes
        return out


def with_float16_io(model: Any, inputs: Optional[Sequence[str]] = None,
                    outputs: Optional[Sequence[str]] = None) -> Any:
    """A copy of float32 `model` whose `inputs`/`outputs` (default: every float32 one) are float16,
    with a Cast at each boundary: the float16 I/O contract of the model it was widened from."""
    from onnx import helper

    out = type(model)()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name for t in g.initializer}
    pick_in = [i for i in g.input if i.name not in inits and i.type.tensor_type.elem_type == FLOAT
               and (inputs is None or i.name in inputs)]
    pick_out = [o for o in g.output if o.type.tensor_type.elem_type == FLOAT and (outputs is None or o.name in outputs)]
    casts_in = []
    for vi in pick_in:
        inner = f"{vi.name}__float32"
        for node in g.node:
            node.input[:] = [inner if i == vi.name else i for i in node.input]
        casts_in.append(helper.make_node("Cast", [vi.name], [inner], to=FLOAT, name=f"{vi.name}__to_float32"))
        vi.type.tensor_type.elem_type = FLOAT16
    for vo in pick_out:
        inner = f"{vo.name}__float32"
        for node in g.node:
            node.output[:] = [inner if o == vo.name else o for o in node.output]
            node.input[:] = [inner if i == vo.name else i for i in node.input]
        g.node.append(helper.make_node("Cast", [inner], [vo.name], to=FLOAT16, name=f"{vo.name}__to_float16"))
        vo.type.tensor_type.elem_type = FLOAT16
    for i, node in enumerate(casts_in):
        g.node.insert(i, node)
    return out
