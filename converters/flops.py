"""Count the arithmetic cost of an ONNX model: FLOPs (2 x MACs), parameters, bytes.

FLOPs are counted for the layers that dominate vision and sequence models: Conv,
ConvTranspose, Gemm and MatMul. Shapes come from ONNX shape inference; dynamic input
dimensions must be pinned with `input_shapes` (a dynamic batch defaults to 1). Nodes whose
shapes stay unknown are listed in `ModelCost.uncounted` so a partial count is never
mistaken for a complete one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

COUNTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class LayerCost:
    name: str
    op_type: str
    flops: int


@dataclass
class ModelCost:
    flops: int                      # 2 x multiply-accumulates of Conv/ConvTranspose/Gemm/MatMul
    params: int                     # elements of all weight tensors (initializers + Constant nodes)
    size_bytes: int                 # serialized model size
    layers: list[LayerCost] = field(default_factory=list)
    uncounted: list[str] = field(default_factory=list)  # counted-op nodes whose shapes were unknown
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    #: elements written by ops other than Conv/ConvTranspose/Gemm/MatMul (activations, residual
    #: adds, resizes): a CPU engine that does not fuse them runs them memory-bound, so its latency
    #: follows this more than FLOPs (pruned PP-OCRv4 det: FLOPs 0.56x, these 0.81x, onnxruntime 0.82x)
    activation_elements: int = 0

    @property
    def complete(self) -> bool:
        return not self.uncounted

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {"flops": self.flops, "params": self.params, "size_bytes": self.size_bytes,
                "activation_elements": self.activation_elements,
                "complete": self.complete, "uncounted": list(self.uncounted),
                "input_shapes": {k: list(v) for k, v in self.input_shapes.items()}}


def _load(model: Any):
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    return onnx.load(str(model))


def static_input_shapes(model, input_shapes: Optional[Mapping[str, Sequence[int]]] = None) -> dict[str, list[int]]:
    """Each graph input's shape with `input_shapes` applied and a dynamic batch set to 1.

    Other dynamic dims stay -1 (unknown)."""
    inits = {t.name for t in model.graph.initializer}
    given = {k: [int(d) for d in v] for k, v in (input_shapes or {}).items()}
    out: dict[str, list[int]] = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        if inp.name in given:
            out[inp.name] = given[inp.name]
            continue
        dims = []
        for i, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(1 if i == 0 else -1)
        out[inp.name] = dims
    return out


def with_static_inputs(model, shapes: Mapping[str, Sequence[int]]):
    """A copy of `model` whose graph inputs carry the given dims (-1 stays symbolic)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in m.graph.input:
        if inp.name not in shapes:
            continue
        dims = inp.type.tensor_type.shape.dim
        new = list(shapes[inp.name])
        if len(dims) != len(new):
            from .errors import ConversionError

            raise ConversionError(
                f"input {inp.name!r} has rank {len(dims)} but the shape given for it, {new}, has rank {len(new)}")
        for d, v in zip(dims, new):
            if v > 0:
                d.Clear()
                d.dim_value = int(v)
            elif not d.HasField("dim_param"):
                d.Clear()
                d.dim_param = f"{inp.name}_dyn"
    return m


def infer_shapes(model, input_shapes: Optional[Mapping[str, Sequence[int]]] = None) -> dict[str, list[int]]:
    """name -> shape (-1 for unknown dims) for every tensor shape inference could resolve."""
    import onnx

    shapes = static_input_shapes(model, input_shapes)
    m = with_static_inputs(model, shapes)
    del m.graph.value_info[:]
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception:  # shape inference is best effort; unknown shapes are reported as uncounted
        pass
    out: dict[str, list[int]] = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        out[vi.name] = [int(d.dim_value) if d.HasField("dim_value") else -1 for d in t.shape.dim]
    for init in m.graph.initializer:
        out[init.name] = list(init.dims)
    for node in m.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = list(a.t.dims)
    return out


def _known(shape: Optional[Sequence[int]]) -> bool:
    return shape is not None and all(d > 0 for d in shape)


def _attr(node, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def node_flops(node, shapes: Mapping[str, Sequence[int]]) -> Optional[int]:
    """FLOPs (2 x MACs) of one Conv/ConvTranspose/Gemm/MatMul node, None if shapes are unknown."""
    op = node.op_type
    if op == "Conv":
        w, y = shapes.get(node.input[1]), shapes.get(node.output[0])
        if not (_known(w) and _known(y)):
            return None
        # every output element takes (Cin/group) * prod(kernel) MACs; w is [Cout, Cin/group, *k]
        return 2 * int(np.prod(y, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
    if op == "ConvTranspose":
        x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
        if not (_known(x) and _known(w)):
            return None
        # every input element is scattered into (Cout/group) * prod(kernel) outputs; w is [Cin, Cout/group, *k]
        return 2 * int(np.prod(x, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
    if op == "Gemm":
        a, y = shapes.get(node.input[0]), shapes.get(node.output[0])
        if not (_known(a) and _known(y)):
            return None
        k = a[0] if _attr(node, "transA", 0) else a[1]
        return 2 * int(y[0]) * int(y[1]) * int(k)
    if op == "MatMul":
        a, y = shapes.get(node.input[0]), shapes.get(node.output[0])
        if not (_known(a) and _known(y)):
            return None
        k = a[-1] if len(a) >= 1 else 1
        return 2 * int(np.prod(y, dtype=np.int64)) * int(k)
    return 0


def _shapes_by_running(model, input_shapes: Mapping[str, Sequence[int]], names: set) -> dict[str, list[int]]:
    """Shapes shape inference could not resolve (e.g. Reshape fed by Shape/Slice/Concat), found by
    running the model once on zeros with onnxruntime. Needs every input dim known; {} otherwise."""
    if not names or not all(_known(s) for s in input_shapes.values()):
        return {}
    import onnx
    from onnx import helper

    try:
        import onnxruntime as ort
    except ImportError:
        return {}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output} | {i.name for i in m.graph.initializer}
    wanted = sorted(n for n in names if n and n not in known)
    for n in wanted:
        m.graph.output.append(helper.ValueInfoProto(name=n))
    feeds = {}
    for inp in m.graph.input:
        if inp.name in input_shapes:
            dtype = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
            feeds[inp.name] = np.zeros(input_shapes[inp.name], dtype=dtype)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        names_out = [o.name for o in sess.get_outputs()]
        values = sess.run(names_out, feeds)
    except Exception:  # best effort: the layers stay in `uncounted`
        return {}
    return {n: list(v.shape) for n, v in zip(names_out, values) if n in names}


def count_params(model) -> int:
    total = 0
    for init in model.graph.initializer:
        total += int(np.prod(init.dims, dtype=np.int64))
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    total += int(np.prod(a.t.dims, dtype=np.int64))
    return total


def count(model: Any, input_shapes: Optional[Mapping[str, Sequence[int]]] = None) -> ModelCost:
    """FLOPs, parameters and size of `model` (a ModelProto or a path).

    `input_shapes` pins dynamic input dims, e.g. {"x": [1, 3, 640, 640]}; without it a dynamic
    batch counts as 1 and layers behind other dynamic dims land in `uncounted`.
    """
    model = _load(model)
    shapes = infer_shapes(model, input_shapes)
    missing = [n for n in model.graph.node if n.op_type in COUNTED_OPS and node_flops(n, shapes) is None]
    if missing:
        shapes.update(_shapes_by_running(model, static_input_shapes(model, input_shapes),
                                         {t for n in missing for t in list(n.input[:2]) + [n.output[0]]}))
    layers, uncounted, total = [], [], 0
    for i, node in enumerate(model.graph.node):
        if node.op_type not in COUNTED_OPS:
            continue
        f = node_flops(node, shapes)
        name = node.name or f"{node.op_type}_{i}"
        if f is None:
            uncounted.append(name)
            continue
        layers.append(LayerCost(name, node.op_type, f))
        total += f
    return ModelCost(flops=total, params=count_params(model), size_bytes=model.ByteSize(), layers=layers,
                     uncounted=uncounted, input_shapes=static_input_shapes(model, input_shapes),
                     activation_elements=activation_elements(model, shapes))


def activation_elements(model, shapes: Mapping[str, Sequence[int]]) -> int:
    """Elements of every tensor written by a node that is not a counted (FLOPs) op or a Constant,
    where its shape is known: the memory traffic of the unfused elementwise part of the graph."""
    total = 0
    for node in model.graph.node:
        if node.op_type in COUNTED_OPS or node.op_type == "Constant" or not node.output:
            continue
        shape = shapes.get(node.output[0])
        if _known(shape):
            total += int(np.prod(shape, dtype=np.int64))
    return total
