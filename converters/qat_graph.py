"""A QDQ INT8 ONNX model <-> the float training graph QAT trains (converters.qat).

`training_graph`: every QuantizeLinear -> DequantizeLinear pair on an activation becomes one
FakeQuant node (domain converters.qat.DOMAIN, named after the Q node) and every
DequantizeLinear of a constant (int8 weight, int32 bias) becomes the float initializer it
computes, under the DequantizeLinear's output name, so the graph's consumers are unchanged.

`write_back`: the trained weights, scales and biases go back into a copy of the ORIGINAL QDQ
graph: same nodes, new initializers (int8 weights quantized with the learned per-channel scales,
int32 biases at input scale x weight scale, as onnxruntime's QLinearConv fusion requires).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .onnx_quant import WEIGHTED_OPS

Q, DQ = "QuantizeLinear", "DequantizeLinear"


@dataclass
class ConstSlot:
    """A DequantizeLinear of a constant: its node, and what reads the float value."""

    dq: str                       # the DequantizeLinear node's name (its output names the float initializer)
    tensor: str                   # that output
    axis: int
    scale: np.ndarray
    zero: np.ndarray
    dtype: Any                    # numpy integer type of the stored constant
    consumer: Optional[str] = None  # the weighted node reading it ...
    role: str = "other"           # ... as its "weight" or "bias"


@dataclass
class TrainingGraph:
    model: Any                                    # float ModelProto with FakeQuant nodes
    activations: list[str] = field(default_factory=list)   # Q node names, one FakeQuant each
    consts: list[ConstSlot] = field(default_factory=list)

    def weights(self) -> list[ConstSlot]:
        return [c for c in self.consts if c.role == "weight"]


def _arr(inits: dict, name: str) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(inits[name])


def _axis(node: Any) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _broadcast(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if np.ndim(v) != 1 or ndim <= 1:
        return v
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def _zero(node: Any, inits: dict) -> np.ndarray:
    if len(node.input) > 2 and node.input[2]:
        return _arr(inits, node.input[2])
    return np.zeros((), np.uint8)   # ONNX default: uint8, zero point 0


def quantize_constants(model: Any) -> Any:
    """QuantizeLinear of a float initializer (some exporters keep weights float) folded into the
    integer initializer it computes, so every constant reaches its DequantizeLinear as integers."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == Q and node.input[0] in inits:
            x, scale, zero = _arr(inits, node.input[0]), _arr(inits, node.input[1]), _zero(node, inits)
            ax = _axis(node) % max(1, x.ndim)
            lo, hi = np.iinfo(zero.dtype).min, np.iinfo(zero.dtype).max
            q = np.clip(np.rint(x / _broadcast(scale, x.ndim, ax)) + _broadcast(zero, x.ndim, ax), lo, hi)
            model.graph.initializer.append(numpy_helper.from_array(q.astype(zero.dtype), node.output[0]))
            inits[node.output[0]] = model.graph.initializer[-1]
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


def training_graph(qdq: Any) -> TrainingGraph:
    """The float graph to train (see the module docstring); raises QatError on QDQ it cannot map."""
    import onnx
    from onnx import helper, numpy_helper

    from .distill import constants_as_initializers
    from .qat import DOMAIN, QatError

    model = quantize_constants(constants_as_initializers(qdq))  # Paddle exports weights as Constant nodes
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    tg = TrainingGraph(model)
    rename: dict[str, str] = {}
    nodes = []
    for n in g.node:
        if n.op_type == Q:
            zero_name = n.input[2] if len(n.input) > 2 and n.input[2] else f"{n.output[0]}__zero"
            if zero_name not in inits:
                g.initializer.append(numpy_helper.from_array(np.zeros((), np.uint8), zero_name))
                inits[zero_name] = g.initializer[-1]
            dqs = [c for c, _ in consumers.get(n.output[0], []) if c.op_type == DQ]
            if not dqs or len(dqs) != len(consumers[n.output[0]]):
                raise QatError(f"QuantizeLinear {n.name!r} feeds something other than DequantizeLinear; QAT takes "
                               "QDQ models (onnxruntime QuantFormat.QDQ or NNCF), not QOperator ones")
            for d in dqs[1:]:
                rename[d.output[0]] = dqs[0].output[0]
            nodes.append(helper.make_node("FakeQuant", [n.input[0], n.input[1], zero_name], [dqs[0].output[0]],
                                          name=f"{n.name or n.output[0]}__fq", domain=DOMAIN,
                                          q_node=n.name or n.output[0], axis=_axis(n)))
            tg.activations.append(n.name or n.output[0])
        elif n.op_type == DQ and n.input[0] in inits:
            tg.consts.append(_dequantize_const(n, inits, g, consumers))
        elif n.op_type == DQ:
            continue  # the FakeQuant of its QuantizeLinear computes it
        else:
            nodes.append(n)
    for n in nodes:
        for i, name in enumerate(n.input):
            n.input[i] = rename.get(name, name)
    del g.node[:]
    g.node.extend(nodes)
    _known_shapes(model)
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return tg


def _known_shapes(model: Any) -> None:
    """Shapes of every tensor, inferred while the graph still has only standard ops: inference
    stops at the FakeQuant nodes, and onnx2torch needs ranks (BatchNormalization)."""
    import onnx

    try:
        plain = onnx.ModelProto()
        plain.CopyFrom(model)
        del plain.opset_import[:]
        plain.opset_import.extend(o for o in model.opset_import if o.domain != "edgesdk_qat")
        for n in plain.graph.node:
            if n.op_type == "FakeQuant":   # same shape as its input: inferable as Identity
                n.op_type, n.domain = "Identity", ""
                del n.input[1:]
                del n.attribute[:]
        inferred = onnx.shape_inference.infer_shapes(plain).graph.value_info
    except Exception:  # a shape we cannot infer only loses the hint; conversion says what is wrong
        return
    have = {v.name for v in model.graph.value_info}
    model.graph.value_info.extend(v for v in inferred if v.name not in have)


def _dequantize_const(n: Any, inits: dict, g: Any, consumers: dict) -> ConstSlot:
    from onnx import numpy_helper

    q = _arr(inits, n.input[0])
    scale, zero = _arr(inits, n.input[1]).astype(np.float32), _zero(n, inits)
    ax = _axis(n) % max(1, q.ndim)
    value = (q.astype(np.float32) - _broadcast(zero, q.ndim, ax).astype(np.float32)) * _broadcast(scale, q.ndim, ax)
    g.initializer.append(numpy_helper.from_array(value.astype(np.float32), n.output[0]))
    inits[n.output[0]] = g.initializer[-1]
    slot = ConstSlot(n.name, n.output[0], ax, scale, zero.astype(np.float32), q.dtype)
    users = consumers.get(n.output[0], [])
    if len(users) == 1 and users[0][0].op_type in WEIGHTED_OPS and users[0][1] in (1, 2):
        slot.consumer, slot.role = users[0][0].name, ("weight" if users[0][1] == 1 else "bias")
    return slot


def write_back(qdq: Any, tg: TrainingGraph, act_scales: dict[str, float], consts: dict[str, np.ndarray],
               weight_scales: dict[str, np.ndarray]) -> Any:
    """A copy of `qdq` with the trained values.

    act_scales: Q node name -> scale (per tensor or per channel, as in `qdq`); consts: DQ output tensor or float initializer -> trained
    float value (weights, biases; others keep theirs); weight_scales: weight DQ output tensor ->
    per-channel scale."""
    import onnx
    from onnx import numpy_helper

    from .distill import constants_as_initializers

    out = quantize_constants(constants_as_initializers(qdq))   # the same graph training_graph read
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    by_name = {n.name or n.output[0]: n for n in g.node}
    producer = {o: n for n in g.node for o in n.output}

    def put(name: str, array: np.ndarray) -> str:
        g.initializer.append(numpy_helper.from_array(np.asarray(array), name))
        inits[name] = g.initializer[-1]
        return name

    for qname in tg.activations:
        q = by_name[qname]
        old = _arr(inits, q.input[1])
        new = put(f"{q.output[0]}__qat_scale", np.asarray(act_scales[qname], np.float32).reshape(old.shape))
        q.input[1] = new
        for n in g.node:
            if n.op_type == DQ and n.input[0] == q.output[0]:
                n.input[1] = new
    slots = {c.tensor: c for c in tg.consts}
    for c in tg.weights():
        _requantize(by_name[c.dq], c, consts.get(c.tensor), weight_scales.get(c.tensor, c.scale), put)
    for c in tg.consts:
        if c.role == "bias" and c.tensor in consts:
            _write_bias(by_name, producer, inits, c, consts[c.tensor], put)
    for name, value in consts.items():   # float initializers trained as they are (NNCF's biases)
        if name not in slots and name in inits:
            new = put(f"{name}__qat", value.astype(np.float32))
            for n in g.node:
                n.input[:] = [new if i == name else i for i in n.input]
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    return out


def _requantize(dq: Any, c: ConstSlot, value: Optional[np.ndarray], scale: np.ndarray, put) -> None:
    if value is None:
        return
    lo, hi = np.iinfo(c.dtype).min, np.iinfo(c.dtype).max
    scale = np.asarray(scale, np.float32).reshape(np.shape(c.scale))
    safe = np.where(scale > 0, scale, 1.0)   # all-zero channels
    q = np.rint(value / _broadcast(safe, value.ndim, c.axis)) + _broadcast(c.zero, value.ndim, c.axis)
    dq.input[0] = put(f"{c.tensor}__qat_q", np.clip(q, lo, hi).astype(c.dtype))
    dq.input[1] = put(f"{c.tensor}__qat_scale", scale)


def _write_bias(by_name: dict, producer: dict, inits: dict, c: ConstSlot, value: np.ndarray, put) -> None:
    """int32 bias at scale input x weight (what QLinearConv assumes); other dtypes at their own scale."""
    dq, node = by_name[c.dq], by_name[c.consumer]
    if c.dtype != np.int32:
        _requantize(dq, c, value, c.scale, put)
        return
    x_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
    if x_dq is None or w_dq is None or x_dq.op_type != DQ or w_dq.op_type != DQ:
        _requantize(dq, c, value, c.scale, put)
        return
    from onnx import numpy_helper

    x_scale = numpy_helper.to_array(inits[x_dq.input[1]]).astype(np.float32).reshape(-1)[0]
    w_scale = numpy_helper.to_array(inits[w_dq.input[1]]).astype(np.float32).reshape(-1)
    scale = (x_scale * w_scale).astype(np.float32)
    scale = scale if np.ndim(c.scale) == 1 or scale.size > 1 else scale.reshape(())
    safe = np.where(scale > 0, scale, 1.0)   # an all-zero weight channel has scale 0: its bias is 0 too
    with np.errstate(over="ignore"):        # a ~0 weight scale: the bias saturates int32, as the quantizer's does
        q = np.clip(np.rint(value.astype(np.float64) / safe), np.iinfo(np.int32).min, np.iinfo(np.int32).max)
    q = q.astype(np.int32)   # clipped in float64: float32 cannot hold int32's max
    dq.input[0] = put(f"{c.tensor}__qat_q", q)
    dq.input[1] = put(f"{c.tensor}__qat_scale", scale)
    if len(dq.input) > 2 and dq.input[2]:
        dq.input[2] = put(f"{c.tensor}__qat_zero", np.zeros(np.shape(scale), np.int32))
