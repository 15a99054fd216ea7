"""Pruning of ONNX models: unstructured magnitude pruning and structured channel pruning.

`magnitude_prune` zeroes the smallest weights of every Conv/ConvTranspose/Gemm/MatMul layer.
The model keeps its shapes, so dense CPU kernels (onnxruntime, OpenVINO, XNNPACK) run it
exactly as fast as before; only compressed size shrinks. It is here to measure how much
sparsity a model tolerates, not to make it faster.

`channel_prune` removes whole output channels of convolutions and everything that depends
on them, so the model really gets smaller and cheaper:

* every tensor with a channel axis is mapped to a *channel space* (a Conv/ConvTranspose
  output, or a Concat of such spaces along the channel axis);
* ops that keep channels apart (BatchNormalization, activations, pooling, Resize, depthwise
  Conv, elementwise ops with per-channel or scalar constants) pass the space through and get
  their per-channel parameters sliced;
* elementwise ops between two tensors (residual Add, squeeze-excitation Mul, FPN Add) tie
  their spaces: tied spaces form one group and lose the same channels;
* a space that reaches an op that mixes or reshapes channels (Reshape, Flatten, MatMul,
  Shape, Softmax, Split, a graph output, any op we do not know) is left whole, with the
  reason recorded in the report;
* consumers (the next Conv's input channels, ConvTranspose input channels) are sliced.

Without fine-tuning, accuracy drops: the report carries the FLOPs, parameters and size
before/after, and the caller measures fidelity (see `edgesdk convert`'s accuracy guard). A user
who starts from a PyTorch module can fine-tune the pruned network with
`converters.torch_export.prune_and_export(..., fine_tune=callback)`.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .errors import ConversionError
from .flops import ModelCost, count
from .graphedit import copy_model

PRUNABLE_WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

# ops that act on each channel separately: output channel c depends only on input channel c
_CHANNELWISE = {
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Clip", "Exp", "Log", "Sqrt", "Abs", "Neg", "Erf", "Gelu", "Mish", "Floor",
    "Ceil", "Round", "Reciprocal", "Sin", "Cos", "Identity", "Dropout", "Cast", "ThresholdedRelu",
    "Shrink", "Sign", "IsNaN", "Not",
    "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
    "Resize", "Upsample",
}
_ELEMENTWISE_BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where"}
_REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceSumSquare", "ReduceLogSumExp"}


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------

@dataclass
class LayerSparsity:
    name: str
    op_type: str
    weight: str
    elements: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.elements if self.elements else 0.0


@dataclass
class PrunedGroup:
    producers: list[str]          # nodes whose output channels were removed (tied ones together)
    channels_before: int
    channels_after: int


@dataclass
class PruneReport:
    method: str                                   # "magnitude" | "channel"
    requested: float                              # sparsity or channel ratio asked for
    criterion: Optional[str]
    cost_before: ModelCost
    cost_after: ModelCost
    actual: float                                 # weight sparsity reached / share of prunable channels removed
    layers: list[LayerSparsity] = field(default_factory=list)
    groups: list[PrunedGroup] = field(default_factory=list)
    skipped: list[tuple[list[str], str]] = field(default_factory=list)   # (producers, why left whole)
    plan: dict[str, list[int]] = field(default_factory=dict)  # producer node -> kept output channels
    compressed_before: int = 0                    # zlib size of the weights (what sparsity buys)
    compressed_after: int = 0
    notes: list[str] = field(default_factory=list)
    latency_ms: dict[str, tuple[float, float]] = field(default_factory=dict)  # backend -> (before, after) p50

    @property
    def flops_ratio(self) -> float:
        return self.cost_after.flops / self.cost_before.flops if self.cost_before.flops else 1.0

    @property
    def activations_ratio(self) -> float:
        """ModelCost.activation_elements after / before: what memory-bound engines (onnxruntime runs
        unfused activations, residual adds, resizes) pay, beside FLOPs."""
        b = self.cost_before.activation_elements
        return self.cost_after.activation_elements / b if b else 1.0

    @property
    def params_ratio(self) -> float:
        return self.cost_after.params / self.cost_before.params if self.cost_before.params else 1.0

    @property
    def size_ratio(self) -> float:
        return self.cost_after.size_bytes / self.cost_before.size_bytes if self.cost_before.size_bytes else 1.0

    def to_dict(self) -> dict[str, Any]:
        d = {
            "method": self.method, "requested": self.requested, "criterion": self.criterion,
            "actual": self.actual, "before": self.cost_before.to_dict(), "after": self.cost_after.to_dict(),
            "flops_ratio": self.flops_ratio, "activations_ratio": self.activations_ratio, "params_ratio": self.params_ratio, "size_ratio": self.size_ratio,
            "compressed_before": self.compressed_before, "compressed_after": self.compressed_after,
            "layers": [dict(asdict(l), sparsity=l.sparsity) for l in self.layers],
            "groups": [asdict(g) for g in self.groups],
            "skipped": [{"producers": p, "reason": r} for p, r in self.skipped],
            "notes": list(self.notes),
            "latency_ms": {k: {"before": v[0], "after": v[1]} for k, v in self.latency_ms.items()},
        }
        return d

    def to_markdown(self) -> str:
        b, a = self.cost_before, self.cost_after
        lines = [f"### Pruning ({self.method}, requested {self.requested:g}"
                 + (f", {self.criterion} criterion" if self.criterion else "") + ")", "",
                 "| | before | after | ratio |", "|---|---|---|---|",
                 f"| FLOPs | {b.flops / 1e9:.3f} G | {a.flops / 1e9:.3f} G | {self.flops_ratio:.3f} |",
                 f"| activation elements (non-conv ops) | {b.activation_elements / 1e6:.1f} M | "
                 f"{a.activation_elements / 1e6:.1f} M | {self.activations_ratio:.3f} |",
                 f"| parameters | {b.params:,} | {a.params:,} | {self.params_ratio:.3f} |",
                 f"| size | {b.size_bytes / 1e6:.2f} MB | {a.size_bytes / 1e6:.2f} MB | {self.size_ratio:.3f} |"]
        if self.compressed_before:
            lines.append(f"| zlib-compressed weights | {self.compressed_before / 1e6:.2f} MB | "
                         f"{self.compressed_after / 1e6:.2f} MB | "
                         f"{self.compressed_after / self.compressed_before:.3f} |")
        for backend, (before, after) in self.latency_ms.items():
            lines.append(f"| latency p50, {backend} | {before:.2f} ms | {after:.2f} ms | {after / before:.3f} |")
        lines.append("")
        if self.method == "magnitude":
            lines.append(f"Weight sparsity reached: {self.actual:.1%} over {len(self.layers)} layers.")
        else:
            lines.append(f"Channels removed: {self.actual:.1%} of the prunable ones, in {len(self.groups)} groups; "
                         f"{len(self.skipped)} groups left whole.")
        if self.skipped:
            lines += ["", "| left whole (producers) | why |", "|---|---|"]
            for producers, reason in self.skipped[:40]:
                lines.append(f"| {', '.join(producers[:3])}{' ...' if len(producers) > 3 else ''} | {reason} |")
        for n in self.notes:
            lines += ["", f"- {n}"]
        return "\n".join(lines) + "\n"


def _weights_zlib_size(model) -> int:
    from onnx import numpy_helper

    blob = b"".join(numpy_helper.to_array(t).tobytes() for t in model.graph.initializer)
    return len(zlib.compress(blob, 6))


def _ensure_model(model):
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    raise ConversionError(f"expected an onnx.ModelProto, got {type(model).__name__}; load the file with onnx.load first")


# --------------------------------------------------------------------------------------------
# unstructured magnitude pruning
# --------------------------------------------------------------------------------------------

def magnitude_prune(model, sparsity: float, input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
                    min_elements: int = 64):
    """Zero the `sparsity` fraction of smallest-magnitude weights of each Conv/ConvTranspose/Gemm/MatMul.

    Per layer (not global), so no layer is wiped out. Weights with fewer than `min_elements`
    values (biases, tiny kernels) are left alone. Returns (pruned model, PruneReport).

    Dense kernels do not skip zeros: latency does not change. Sparse weights only compress
    better (the report's zlib sizes) and show how much sparsity the model tolerates.
    """
    from onnx import numpy_helper

    from .graphedit import prepare

    _ensure_model(model)
    if not 0.0 <= float(sparsity) < 1.0:
        raise ConversionError(f"sparsity must be in [0, 1), got {sparsity}")
    m = prepare(model)
    inits = {t.name: t for t in m.graph.initializer}
    done: set[str] = set()
    layers: list[LayerSparsity] = []
    for node in m.graph.node:
        if node.op_type not in PRUNABLE_WEIGHT_OPS:
            continue
        candidates = [node.input[1]] if node.op_type != "MatMul" else [i for i in node.input[:2] if i in inits]
        for wname in candidates:
            if wname not in inits or wname in done:
                continue
            t = inits[wname]
            w = numpy_helper.to_array(t)
            if w.dtype.kind != "f" or w.size < min_elements:
                continue
            done.add(wname)
            k = int(np.floor(w.size * sparsity))
            if k > 0:
                flat = np.abs(w).ravel()
                # ties at the threshold: zero exactly k values by rank, not everything <= threshold
                order = np.argpartition(flat, k - 1)[:k]
                pruned = w.copy().ravel()
                pruned[order] = 0
                t.CopyFrom(numpy_helper.from_array(pruned.reshape(w.shape).astype(w.dtype), wname))
            zeros = int(np.count_nonzero(numpy_helper.to_array(t) == 0))
            layers.append(LayerSparsity(node.name, node.op_type, wname, int(w.size), zeros))
    total = sum(l.elements for l in layers)
    actual = sum(l.zeros for l in layers) / total if total else 0.0
    report = PruneReport(
        method="magnitude", requested=float(sparsity), criterion=None,
        cost_before=count(model, input_shapes), cost_after=count(m, input_shapes), actual=actual, layers=layers,
        # like with like: the unpruned weights after the same preparation
        compressed_before=_weights_zlib_size(prepare(model)), compressed_after=_weights_zlib_size(m),
        notes=["Unstructured sparsity does not make dense CPU kernels faster: FLOPs and latency stay the same; "
               "only the compressed size shrinks. Use channel pruning to make the model cheaper to run."])
    return m, report


# --------------------------------------------------------------------------------------------
# structured channel pruning: dependency analysis
# --------------------------------------------------------------------------------------------

@dataclass
class _Leaf:
    size: int
    rank: int
    producer: Optional[int] = None     # node index of the Conv/ConvTranspose making it, None if not prunable
    why_not: Optional[str] = None      # why it can never be pruned (graph input, grouped conv, ...)


@dataclass
class _Member:
    """A (node, input) whose tensor is sliced along `axis` by the kept channels of `view`."""
    node: int
    input: int
    axis: int
    view: tuple[int, ...]


class _Analysis:
    def __init__(self, model, shapes: Mapping[str, Sequence[int]]):
        from onnx import numpy_helper

        self.model = model
        self.shapes = shapes
        self.inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.leaves: list[_Leaf] = []
        self.parent: list[int] = []
        self.blocked: dict[int, str] = {}          # leaf -> reason (first one)
        self.view: dict[str, tuple[int, ...]] = {}  # tensor -> leaves along its channel axis
        self.members: list[_Member] = []
        self.group_attr: list[tuple[int, tuple[int, ...]]] = []  # depthwise convs: (node, view)
        self.consumers: list[_Member] = []          # Conv/ConvTranspose reading a view (weight axis = channel)

    # union-find over leaves
    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    def new_leaf(self, size: int, rank: int, producer: Optional[int], why_not: Optional[str] = None) -> int:
        self.leaves.append(_Leaf(size, rank, producer, why_not))
        self.parent.append(len(self.leaves) - 1)
        if why_not:
            self.blocked[len(self.leaves) - 1] = why_not
        return len(self.leaves) - 1

    def block(self, view: Optional[tuple[int, ...]], reason: str) -> None:
        for leaf in view or ():
            self.blocked.setdefault(leaf, reason)

    def size(self, view: tuple[int, ...]) -> int:
        return sum(self.leaves[l].size for l in view)

    def rank(self, view: tuple[int, ...]) -> int:
        return self.leaves[view[0]].rank

    def tie(self, a: tuple[int, ...], b: tuple[int, ...], reason: str) -> bool:
        """Make two views carry the same channels. False (and both blocked) if their layouts differ."""
        if len(a) == len(b) and all(self.leaves[x].size == self.leaves[y].size for x, y in zip(a, b)):
            for x, y in zip(a, b):
                self.union(x, y)
            return True
        self.block(a, reason)
        self.block(b, reason)
        return False

    # ----------------------------------------------------------------------------------------
    def run(self) -> None:
        from .graphedit import _has_subgraph, _subgraph_inputs

        g = self.model.graph
        inits = self.inits
        for inp in g.input:
            if inp.name in inits:
                continue
            shape = self.shapes.get(inp.name)
            if shape is not None and len(shape) >= 3 and shape[1] > 0:
                self.view[inp.name] = (self.new_leaf(shape[1], len(shape), None, "graph input"),)
        outer_refs = set()
        for node in g.node:
            if _has_subgraph(node):
                outer_refs |= _subgraph_inputs(node)

        for idx, node in enumerate(g.node):
            op = node.op_type
            data = [i for i in node.input if i and i not in inits]
            tracked = [i for i in data if i in self.view]
            try:
                handled = self._visit(idx, node, op, data, tracked)
            except _Unsupported as e:
                handled = False
                reason = str(e)
            else:
                reason = f"feeds {op} ({node.name})"
            if not handled:
                for t in tracked:
                    self.block(self.view[t], reason)
        for name in outer_refs:
            self.block(self.view.get(name), "used inside a subgraph (If/Loop/Scan)")
        for out in g.output:
            self.block(self.view.get(out.name), f"reaches graph output {out.name}")

    def _visit(self, idx: int, node, op: str, data: list[str], tracked: list[str]) -> bool:
        """Record what `node` does to channel spaces. False: block the tracked inputs (unknown effect)."""
        from .graphedit import attr

        inits = self.inits
        if node.domain not in ("", "ai.onnx"):
            return False
        if op in ("Conv", "ConvTranspose"):
            x, w = node.input[0], node.input[1]
            if w not in inits or (len(node.input) > 2 and node.input[2] and node.input[2] not in inits):
                raise _Unsupported(f"{op} {node.name} has computed (non-constant) weights")
            weight = inits[w]
            group = int(attr(node, "group", 1))
            rank = weight.ndim
            vin = self.view.get(x)
            has_bias = len(node.input) > 2 and bool(node.input[2])
            if op == "Conv":
                cout, cin_g = weight.shape[0], weight.shape[1]
                if group == 1:
                    if vin is not None:
                        self.members.append(_Member(idx, 1, 1, vin))
                        self.consumers.append(_Member(idx, 1, 1, vin))
                    leaf = self.new_leaf(cout, rank, idx)
                elif vin is not None and cin_g == 1 and cout == group == self.size(vin):
                    # depthwise: channel c in -> channel c out; prune it with its producer
                    self.members.append(_Member(idx, 1, 0, vin))
                    if has_bias:
                        self.members.append(_Member(idx, 2, 0, vin))
                    self.group_attr.append((idx, vin))
                    self.view[node.output[0]] = vin
                    return True
                else:
                    self.block(vin, f"feeds grouped Conv {node.name} (group={group})")
                    leaf = self.new_leaf(cout, rank, None, f"output of grouped Conv (group={group})")
                    self.view[node.output[0]] = (leaf,)
                    return True
                self.members.append(_Member(idx, 1, 0, (leaf,)))
                if has_bias:
                    self.members.append(_Member(idx, 2, 0, (leaf,)))
                self.view[node.output[0]] = (leaf,)
                return True
            # ConvTranspose: weight [Cin, Cout/group, *k]
            if group != 1:
                self.block(vin, f"feeds grouped ConvTranspose {node.name}")
                self.view[node.output[0]] = (self.new_leaf(weight.shape[1] * group, rank, None, "grouped ConvTranspose"),)
                return True
            if attr(node, "output_shape") is not None:
                raise _Unsupported(f"ConvTranspose {node.name} has an explicit output_shape")
            if vin is not None:
                self.members.append(_Member(idx, 1, 0, vin))
                self.consumers.append(_Member(idx, 1, 0, vin))
            leaf = self.new_leaf(weight.shape[1], rank, idx)
            self.members.append(_Member(idx, 1, 1, (leaf,)))
            if has_bias:
                self.members.append(_Member(idx, 2, 0, (leaf,)))
            self.view[node.output[0]] = (leaf,)
            return True

        if not tracked:
            return True  # nothing channel-tracked flows through this node
        if op == "BatchNormalization":
            v = self.view[node.input[0]]
            for k in range(1, 5):
                if node.input[k] not in inits:
                    raise _Unsupported(f"BatchNormalization {node.name} has computed parameters")
                self.members.append(_Member(idx, k, 0, v))
            self.view[node.output[0]] = v
            return True
        if op in ("InstanceNormalization",):
            v = self.view[node.input[0]]
            for k in (1, 2):
                self.members.append(_Member(idx, k, 0, v))
            self.view[node.output[0]] = v
            return True
        if op in _CHANNELWISE:
            if len(data) != 1 or data[0] != node.input[0]:
                raise _Unsupported(f"{op} {node.name} takes a computed second input")
            if op == "Resize" and len(node.input) > 3 and node.input[3]:
                raise _Unsupported(f"Resize {node.name} gives explicit sizes (they include the channel count)")
            if op == "PRelu":
                return False
            self.view[node.output[0]] = self.view[node.input[0]]
            return True
        if op == "Pad":
            pads = inits.get(node.input[1]) if len(node.input) > 1 else attr(node, "pads")
            v = self.view[node.input[0]]
            if pads is None or len(data) != 1:
                raise _Unsupported(f"Pad {node.name} has computed pads")
            pads = np.asarray(pads).ravel()
            r = self.rank(v)
            if len(node.input) > 3 and node.input[3]:
                raise _Unsupported(f"Pad {node.name} pads selected axes")
            if pads.size != 2 * r or pads[1] != 0 or pads[1 + r] != 0:
                raise _Unsupported(f"Pad {node.name} pads the channel axis")
            self.view[node.output[0]] = v
            return True
        if op in _REDUCE:
            v = self.view[node.input[0]]
            axes = attr(node, "axes")
            if axes is None and len(node.input) > 1 and node.input[1]:
                axes = inits.get(node.input[1])
                if axes is None:
                    raise _Unsupported(f"{op} {node.name} has computed axes")
            r = self.rank(v)
            if axes is None or not int(attr(node, "keepdims", 1)):
                raise _Unsupported(f"{op} {node.name} reduces over channels or drops axes")
            axes = {int(a) % r for a in np.asarray(axes).ravel()}
            if 1 in axes:
                raise _Unsupported(f"{op} {node.name} reduces over channels")
            self.view[node.output[0]] = v
            return True
        if op in _ELEMENTWISE_BINARY and op not in ("Where", "PRelu"):
            return self._elementwise(idx, node, data, tracked)
        if op == "Concat":
            v0 = self.view[tracked[0]]
            r = self.rank(v0)
            axis = int(attr(node, "axis", 0)) % r
            if len(data) != len([i for i in node.input if i]) or any(i not in self.view for i in data):
                raise _Unsupported(f"Concat {node.name} joins channel-tracked and other tensors")
            if axis == 1:
                out: tuple[int, ...] = ()
                for i in node.input:
                    out = out + self.view[i]
                self.view[node.output[0]] = out
                return True
            for i in node.input[1:]:
                self.tie(v0, self.view[i], f"Concat {node.name} along axis {axis} of different channel layouts")
            self.view[node.output[0]] = v0
            return True
        return False

    def _elementwise(self, idx: int, node, data: list[str], tracked: list[str]) -> bool:
        inits = self.inits
        view_out: Optional[tuple[int, ...]] = None
        for k, name in enumerate(node.input):
            if not name:
                continue
            if name in self.view:
                v = self.view[name]
                if view_out is None:
                    view_out = v
                elif v != view_out:
                    if self.size(v) == 1:
                        continue
                    if self.size(view_out) == 1:
                        view_out = v
                        continue
                    self.tie(view_out, v, f"{node.op_type} {node.name} combines different channel layouts")
                continue
        assert view_out is not None
        r = self.rank(view_out)
        c = self.size(view_out)
        for k, name in enumerate(node.input):
            if not name or name in self.view:
                continue
            if name in inits:
                shape = inits[name].shape
            else:
                shape = tuple(self.shapes.get(name) or ())
                if not shape:
                    raise _Unsupported(f"{node.op_type} {node.name} combines with a tensor of unknown shape")
            if len(shape) > r:
                raise _Unsupported(f"{node.op_type} {node.name} broadcasts to a higher rank")
            caxis = len(shape) - (r - 1)   # which axis of the operand lines up with the channel axis
            if caxis < 0 or shape[caxis] == 1:
                continue  # scalar / per-spatial: same for every channel
            if shape[caxis] == c and name in inits:
                self.members.append(_Member(idx, k, caxis, view_out))
                continue
            raise _Unsupported(f"{node.op_type} {node.name} combines with a per-channel tensor that is not a constant")
        self.view[node.output[0]] = view_out
        return True


class _Unsupported(Exception):
    pass


# --------------------------------------------------------------------------------------------
# structured channel pruning: choosing and applying
# --------------------------------------------------------------------------------------------

def _channel_scores(an: _Analysis, leaves: list[int], criterion: str) -> np.ndarray:
    """Importance of each channel of a group: the producers' filter norms, each producer
    normalized by its mean so that tied layers of different scale weigh alike."""
    g = an.model.graph
    total = None
    for leaf in leaves:
        node = g.node[an.leaves[leaf].producer]
        w = an.inits[node.input[1]].astype(np.float64)
        if node.op_type == "ConvTranspose":
            w = np.moveaxis(w, 1, 0)
        w = w.reshape(w.shape[0], -1)
        s = np.abs(w).sum(axis=1) if criterion == "l1" else np.sqrt((w * w).sum(axis=1))
        s = s / (s.mean() + 1e-12)
        total = s if total is None else total + s
    return total


def _activation_stats(model, tensors: Sequence[str], calib) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel mean and standard deviation (axis 1) of `tensors` over the calibration data."""
    from .pruning_refit import intermediate_activations

    sums: dict[str, Any] = {}
    for acts in intermediate_activations(model, tensors, calib_feeds(model, calib), "collect activation statistics"):
        for name, value in acts.items():
            v = np.moveaxis(np.asarray(value, dtype=np.float64), 1, 0).reshape(value.shape[1], -1)
            s1, s2, n = sums.get(name, (0.0, 0.0, 0))
            sums[name] = (s1 + v.sum(axis=1), s2 + (v * v).sum(axis=1), n + v.shape[1])
    out = {}
    for name, (s1, s2, n) in sums.items():
        mean = s1 / n
        out[name] = (mean, np.sqrt(np.maximum(s2 / n - mean * mean, 0.0)))
    return out


def calib_feeds(model, calib) -> list[dict[str, np.ndarray]]:
    """Calibration data as a list of feed dicts, one image at a time (keeps memory flat)."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if isinstance(calib, np.ndarray):
        if len(inputs) != 1:
            raise ConversionError(f"the model has {len(inputs)} inputs; pass calib as a dict name -> array")
        calib = {inputs[0].name: calib}
    if not isinstance(calib, Mapping) or not calib:
        raise ConversionError("calib must be a non-empty array (N, C, H, W) or a dict input name -> array")
    missing = [i.name for i in inputs if i.name not in calib]
    if missing:
        raise ConversionError(f"calibration data lacks the inputs {missing}")
    n = {len(np.asarray(v)) for v in calib.values()}
    if len(n) != 1 or 0 in n:
        raise ConversionError(f"calibration arrays must be non-empty and of one length, got lengths {sorted(n)}")
    return [{k: np.ascontiguousarray(np.asarray(v)[i:i + 1], dtype=np.float32) for k, v in calib.items()}
            for i in range(n.pop())]


def _activation_scores(an: "_Analysis", stats, groups: Mapping[int, list[int]]) -> dict[int, np.ndarray]:
    """Importance from data: for each channel, how much its variation reaches the consumers
    (std of the activation x norm of the consumer weights that read it). The mean part is
    not counted: bias compensation puts it back."""
    g = an.model.graph
    scores: dict[int, np.ndarray] = {}
    for mem in an.consumers:
        node = g.node[mem.node]
        _, std = stats[node.input[0]]
        w = np.moveaxis(an.inits[node.input[1]].astype(np.float64), mem.axis, 0)
        wn = np.sqrt((w.reshape(w.shape[0], -1) ** 2).sum(axis=1))
        contrib = std * wn
        contrib = contrib / (contrib.mean() + 1e-12)
        offset = 0
        for leaf in mem.view:
            size = an.leaves[leaf].size
            root = an.find(leaf)
            scores[root] = scores.get(root, np.zeros(size)) + contrib[offset:offset + size]
            offset += size
    return scores


def _compensate_biases(an: "_Analysis", model, stats, keep: Mapping[int, np.ndarray]) -> int:
    """Fold the mean activation of every removed channel into the consumer's bias, so that a
    consumer loses only the removed channels' variation, not their average. Returns how many
    consumers were adjusted. Runs before slicing (on the unsliced weights)."""
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    adjusted = 0
    for mem in an.consumers:
        if not any(an.find(l) in keep for l in mem.view):
            continue
        node = g.node[mem.node]
        mean, _ = stats[node.input[0]]
        kept = _kept_positions(an, mem.view, keep)
        removed = np.setdiff1d(np.arange(an.size(mem.view)), kept)
        if removed.size == 0:
            continue
        w = an.inits[node.input[1]].astype(np.float64)
        if node.op_type == "Conv":       # w [O, C, *k]: a constant input adds mean * sum over the kernel
            delta = (w[:, removed].reshape(w.shape[0], removed.size, -1).sum(axis=2) * mean[removed]).sum(axis=1)
        else:                            # ConvTranspose w [C, O, *k]: average over output pixels
            from .graphedit import attr

            strides = attr(node, "strides") or [1] * (w.ndim - 2)
            delta = (w[removed].reshape(removed.size, w.shape[1], -1).sum(axis=2)
                     * mean[removed, None]).sum(axis=0) / float(np.prod(strides))
        dtype = an.inits[node.input[1]].dtype
        has_bias = len(node.input) > 2 and bool(node.input[2])
        bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if has_bias else np.zeros(delta.shape)
        name = f"{node.name}_bias_compensated"
        g.initializer.append(numpy_helper.from_array((bias + delta).astype(dtype), name))
        if has_bias:
            node.input[2] = name
        else:
            node.input.append(name)
            out_view = an.view.get(node.output[0])
            if out_view is not None:  # the new bias must be sliced with the consumer's own output channels
                an.members.append(_Member(mem.node, 2, 0, out_view))
        adjusted += 1
    return adjusted


def _kept_positions(an: _Analysis, view: tuple[int, ...], keep: Mapping[int, np.ndarray]) -> np.ndarray:
    out, offset = [], 0
    for leaf in view:
        size = an.leaves[leaf].size
        k = keep.get(an.find(leaf))
        out.append(offset + (np.arange(size) if k is None else k))
        offset += size
    return np.concatenate(out).astype(np.int64)


def _round_channels(n_keep: int, size: int, multiple: int, mode: str) -> int:
    """Kept channel count as a multiple of `multiple` (never more than `size`, never 0)."""
    if mode == "nearest":
        n = int(np.floor(n_keep / multiple + 0.5)) * multiple
        if n <= 0:   # never 0 channels: one multiple, or the whole group when it is smaller
            n = multiple
        return min(size, n)
    return min(size, int(np.ceil(n_keep / multiple)) * multiple)


def channel_prune(model, ratio: float, criterion: str = "l1",
                  input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
                  min_channels: int = 1, multiple_of: int = 1, exclude: Sequence[str] = (),
                  plan: Optional[Mapping[str, Sequence[int]]] = None, verify: bool = True,
                  calib: Any = None, round_mode: str = "up", refit: bool = False):
    """Remove `ratio` of the output channels of every prunable group of convolutions.

    Args:
        model: an onnx.ModelProto (not modified).
        ratio: share of each group's channels to remove, in [0, 1).
        criterion: "l1" or "l2" norm of the producers' filters (the smallest go), or "activation":
            how much each channel's variation on `calib` reaches its consumers (needs `calib`).
        input_shapes: static input shapes for the FLOPs count and the verification run,
            e.g. {"x": [1, 3, 640, 640]}; dynamic dims otherwise stay dynamic (batch counts as 1).
        min_channels: never keep fewer channels than this in a group.
        multiple_of: round the kept channel count to a multiple of this (SIMD-friendly widths:
            onnxruntime's NCHWc convolutions block channels by 16 on AVX-512, 8 on AVX2; other
            counts fall back to slower kernels, so 0.56x FLOPs ran at 0.9x latency).
        round_mode: "up" (keep at least the requested channels) or "nearest" (the multiple
            nearest the requested count, so a 24-channel group at ratio 0.3 keeps 16, not 24;
            a group no larger than one multiple stays whole).
        exclude: producer node names whose groups must stay whole.
        plan: producer node -> kept channel indices (e.g. `PruneReport.plan` of an earlier run);
            groups it names keep exactly those channels, other groups are left whole.
        verify: check the result with onnx.checker and run it once with onnxruntime.
        calib: real input data, (N, C, H, W) float32 or {input name: array}, preprocessed as at run
            time. With it, each removed channel's mean activation is folded into the biases of the
            convolutions that read it (bias compensation), which keeps far more of the accuracy.
        refit: with `calib`, refit the weights and bias of every (group-1, 2-D) Conv of the pruned
            model by least squares, in depth order, so its output matches the unpruned layer's on
            the calibration data given the pruned model's own inputs (converters.pruning_refit).

    Returns (pruned model, PruneReport). Output shapes are unchanged.
    """
    from onnx import numpy_helper

    from .flops import infer_shapes
    from .graphedit import prepare, remove_unused_initializers, set_int_attr

    _ensure_model(model)
    if criterion not in ("l1", "l2", "activation"):
        raise ConversionError(f"unknown pruning criterion {criterion!r}; use 'l1', 'l2' or 'activation'")
    if refit and calib is None:
        raise ConversionError("refit needs calibration data: pass calib=... (real inputs, preprocessed)")
    if criterion == "activation" and calib is None:
        raise ConversionError("the 'activation' criterion needs calibration data: pass calib=...")
    if not 0.0 <= float(ratio) < 1.0:
        raise ConversionError(f"channel ratio must be in [0, 1), got {ratio}")
    if min_channels < 1 or multiple_of < 1:
        raise ConversionError("min_channels and multiple_of must be >= 1")
    if round_mode not in ("up", "nearest"):
        raise ConversionError(f"unknown round_mode {round_mode!r}; use 'up' or 'nearest'")
    m = prepare(model)
    an = _Analysis(m, infer_shapes(m, input_shapes))
    an.run()
    g = m.graph

    groups: dict[int, list[int]] = {}
    for leaf in range(len(an.leaves)):
        groups.setdefault(an.find(leaf), []).append(leaf)
    stats = None
    if calib is not None:
        stats = _activation_stats(m, [g.node[c.node].input[0] for c in an.consumers], calib)
    act_scores = _activation_scores(an, stats, groups) if criterion == "activation" else {}
    excluded = set(exclude)
    keep: dict[int, np.ndarray] = {}
    report_groups, skipped = [], []
    prunable_total = removed_total = 0
    new_plan: dict[str, list[int]] = {}
    for root, leaves in groups.items():
        producers = [g.node[an.leaves[l].producer].name for l in leaves if an.leaves[l].producer is not None]
        size = an.leaves[root].size
        reasons = [an.blocked[l] for l in leaves if l in an.blocked]
        if any(an.leaves[l].producer is None for l in leaves) and not reasons:
            reasons = ["tied to a tensor no Conv produces"]
        if reasons:
            if producers:
                skipped.append((producers, reasons[0]))
            continue
        if excluded.intersection(producers):
            skipped.append((producers, "excluded by the caller"))
            continue
        if plan is not None:
            given = [plan[p] for p in producers if p in plan]
            if not given:
                continue
            kept = np.asarray(sorted(int(i) for i in given[0]), dtype=np.int64)
            if kept.size == 0 or kept.min() < 0 or kept.max() >= size or len(set(kept.tolist())) != kept.size:
                raise ConversionError(f"plan for {producers[0]} keeps invalid channel indices for a {size}-channel layer")
        else:
            n_keep = size - int(np.floor(size * float(ratio) + 1e-9))
            n_keep = max(n_keep, min(min_channels, size))
            if multiple_of > 1:
                n_keep = _round_channels(n_keep, size, multiple_of, round_mode)
            prunable_total += size
            if n_keep >= size:
                continue
            scores = act_scores.get(root) if criterion == "activation" else None
            if scores is None:
                scores = _channel_scores(an, leaves, "l2" if criterion == "activation" else criterion)
            kept = np.sort(np.argsort(-scores, kind="stable")[:n_keep]).astype(np.int64)
        if plan is not None:
            prunable_total += size
        if kept.size == size:
            continue
        keep[root] = kept
        removed_total += size - kept.size
        report_groups.append(PrunedGroup(producers, size, int(kept.size)))
        for p in producers:
            new_plan[p] = kept.tolist()

    compensated = _compensate_biases(an, m, stats, keep) if stats is not None and keep else 0
    # slice every affected (node, input), copying an initializer that other nodes share
    slices: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    for mem in an.members:
        if not any(an.find(l) in keep for l in mem.view):
            continue
        slices.setdefault((mem.node, mem.input), []).append((mem.axis, _kept_positions(an, mem.view, keep)))
    uses: dict[str, int] = {}
    for node in g.node:
        for i in node.input:
            uses[i] = uses.get(i, 0) + 1
    inits = {t.name: t for t in g.initializer}
    existing = set(inits)
    for (ni, ii), cuts in slices.items():
        node = g.node[ni]
        name = node.input[ii]
        arr = numpy_helper.to_array(inits[name])
        for axis, idx in cuts:
            arr = np.take(arr, idx, axis=axis)
        if uses.get(name, 0) > 1:
            new_name, k = f"{name}_pruned", 1
            while new_name in existing:
                new_name, k = f"{name}_pruned{k}", k + 1
            existing.add(new_name)
            g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(arr), new_name))
            node.input[ii] = new_name
            uses[name] -= 1
        else:
            inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr), name))
    for ni, view in an.group_attr:
        if any(an.find(l) in keep for l in view):
            set_int_attr(g.node[ni], "group", len(_kept_positions(an, view, keep)))
    del g.value_info[:]
    refit_count = 0
    if refit and keep:
        from .pruning_refit import refit_pruned

        m, refit_count = refit_pruned(model, m, new_plan, calib_feeds(model, calib))
        g = m.graph
    remove_unused_initializers(m)

    if verify:
        _verify(model, m, input_shapes)
    actual = removed_total / prunable_total if prunable_total else 0.0
    notes = [
        "Without fine-tuning the pruned model's outputs drift from the original's; measure fidelity on real "
        "data (the accuracy guard) before shipping it.",
        "Constant nodes were turned into initializers and constant subgraphs folded (same function).",
    ]
    if multiple_of > 1:
        notes.append(f"Kept channel counts rounded {'to the nearest' if round_mode == 'nearest' else 'up to a'} "
                     f"multiple of {multiple_of}: onnxruntime's blocked (NCHWc) CPU convolutions need such widths; "
                     "other counts fall back to slower kernels (multiple_of=1 turns this off).")
    if refit_count:
        notes.append(f"Least-squares refit: {refit_count} convolutions were refit, in depth order, on "
                     f"{len(calib_feeds(model, calib))} calibration inputs to reproduce the unpruned layers' outputs.")
    if compensated:
        notes.append(f"Bias compensation: the mean activation of removed channels (measured on "
                     f"{len(calib_feeds(model, calib))} calibration inputs) was folded into {compensated} consumers' biases.")
    if removed_total == 0:
        notes.insert(0, "Nothing was pruned: no group of channels could be removed safely at this ratio.")
    report = PruneReport(method="channel", requested=float(ratio), criterion=criterion,
                         cost_before=count(model, input_shapes), cost_after=count(m, input_shapes),
                         actual=actual, groups=report_groups, skipped=skipped, plan=new_plan, notes=notes)
    return m, report


def measure_latency(report: PruneReport, original, pruned, feeds: Mapping[str, np.ndarray],
                    backends: Sequence[str] = ("onnxruntime", "openvino"), threads: Optional[int] = None,
                    iterations: int = 20, warmup: int = 3) -> dict[str, tuple[float, float]]:
    """Time the original and the pruned model on each installed backend (fp32 pinned: OpenVINO
    would otherwise run bf16 on AMX CPUs) and store p50 latencies in `report.latency_ms`: the
    median over 5 alternating rounds of iterations/5 calls each."""
    import os
    import tempfile

    import onnx

    from runtimes import load
    from runtimes.registry import is_available
    from runtimes.timing import measure

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, m in enumerate((original, pruned)):
            p = os.path.join(tmp, f"m{i}.onnx")
            onnx.save(m, p)
            paths.append(p)
        for backend in backends:
            if not is_available(backend):
                continue
            rts = [load(p, backend=backend, precision="fp32", threads=threads) for p in paths]
            for rt in rts:
                rt.activate()
            try:   # alternating rounds: a shared box's load changes within seconds, so timing one
                # model after the other skews their ratio (0.68x and 1.02x in two runs of one pruning)
                for rt in rts:
                    measure(rt, dict(feeds), warmup=warmup, iterations=1)
                rounds = [[measure(rt, dict(feeds), warmup=0, iterations=max(1, iterations // 5)).p50 for rt in rts]
                          for _ in range(5)]
            finally:
                for rt in rts:
                    rt.deactivate()
            report.latency_ms[backend] = tuple(float(np.median([r[k] for r in rounds])) for k in range(2))
    return report.latency_ms


@dataclass
class ConsumerMask:
    """What removing channels means for one consumer: its weight's `removed` slices along `axis`
    stop contributing. Zeroing them in the unpruned model gives exactly the pruned model's function
    (without bias compensation); `torch_export.prune_and_export` fine-tunes under these masks."""
    node: str
    op_type: str
    weight: np.ndarray      # the consumer's unpruned weight (to find the matching torch layer)
    axis: int               # 1 for Conv [O, C, *k], 0 for ConvTranspose [C, O, *k]
    removed: np.ndarray     # indices along `axis`


def consumer_masks(model, plan: Mapping[str, Sequence[int]],
                   input_shapes: Optional[Mapping[str, Sequence[int]]] = None) -> list[ConsumerMask]:
    """The consumer-side view of a pruning `plan` (producer node -> kept channels, as in
    `PruneReport.plan`) on `model` (the unpruned model the plan was made for)."""
    from .flops import infer_shapes
    from .graphedit import prepare

    m = prepare(model)
    an = _Analysis(m, infer_shapes(m, input_shapes))
    an.run()
    keep: dict[int, np.ndarray] = {}
    for leaf, info in enumerate(an.leaves):
        if info.producer is not None and m.graph.node[info.producer].name in plan:
            keep[an.find(leaf)] = np.asarray(sorted(plan[m.graph.node[info.producer].name]), dtype=np.int64)
    out = []
    for mem in an.consumers:
        if not any(an.find(l) in keep for l in mem.view):
            continue
        node = m.graph.node[mem.node]
        removed = np.setdiff1d(np.arange(an.size(mem.view)), _kept_positions(an, mem.view, keep))
        if removed.size:
            out.append(ConsumerMask(node.name, node.op_type, an.inits[node.input[1]], mem.axis, removed))
    return out


def _verify(original, pruned, input_shapes: Optional[Mapping[str, Sequence[int]]]) -> None:
    """onnx.checker + one onnxruntime run; output shapes must match the original's."""
    import onnx

    from .flops import _known, static_input_shapes

    try:
        onnx.checker.check_model(pruned)
    except onnx.checker.ValidationError as e:
        raise ConversionError(f"channel pruning produced an invalid model ({e}); "
                              "please report it and exclude the layer named there with exclude=[...]") from e
    shapes = static_input_shapes(pruned, input_shapes)
    if not all(_known(s) for s in shapes.values()):
        return  # dynamic spatial dims and no shapes given: nothing to run with
    try:
        import onnxruntime as ort
    except ImportError:
        return
    from onnx import helper

    rng = np.random.default_rng(0)
    outs = []
    for m in (original, pruned):
        feeds = {}
        for inp in m.graph.input:
            if inp.name in shapes:
                dtype = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
                feeds[inp.name] = rng.random(shapes[inp.name]).astype(dtype)
        try:
            sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            outs.append([o.shape for o in sess.run(None, feeds)])
        except Exception as e:  # engine errors come as many types; report them as one
            which = "original" if m is original else "pruned"
            raise ConversionError(f"the {which} model does not run on onnxruntime after pruning: {e}") from e
    if outs[0] != outs[1]:
        raise ConversionError(f"channel pruning changed output shapes {outs[0]} -> {outs[1]}; this is a bug")


@dataclass
class GroupSensitivity:
    producers: list[str]     # the group's Conv/ConvTranspose nodes (PruneReport.plan keys)
    cosine: float            # output cosine to the original with only this group pruned
    flops_saved: float       # share of the model's FLOPs this group's pruning removes
    activations_saved: float = 0.0   # share of ModelCost.activation_elements it removes (memory-bound engines)


def group_sensitivity(model, ratio: float, samples: np.ndarray, input_shapes: Mapping[str, Sequence[int]],
                      criterion: str = "l1", progress=None, **prune_kw) -> list[GroupSensitivity]:
    """Prune each prunable group alone at `ratio` and measure, on real `samples` (onnxruntime,
    one at a time), how far the first output moves and how many FLOPs it saves. Early layers
    of a detector backbone are often both cheap and fragile: this is what tells them apart.
    prune_kw (multiple_of, round_mode, calib) go to channel_prune, as for the real pruning; a
    refit is left out here (it costs seconds per group), so the ranking is of unrefit damage."""
    import onnxruntime as ort

    from .compare import cosine

    name = next(iter(input_shapes))

    def run(m) -> list[np.ndarray]:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return [sess.run(None, {name: samples[i:i + 1]})[0] for i in range(len(samples))]

    ref = run(model)
    prune_kw = {k: v for k, v in prune_kw.items() if k != "refit"}
    _, full = channel_prune(model, ratio, criterion=criterion, input_shapes=input_shapes, verify=False, **prune_kw)
    calib_only = {"calib": prune_kw["calib"]} if prune_kw.get("calib") is not None else {}
    out = []
    started = time.perf_counter()
    for k, g in enumerate(full.groups):
        one, rep = channel_prune(model, ratio, criterion=criterion, input_shapes=input_shapes,
                                 plan={p: full.plan[p] for p in g.producers}, verify=False,
                                 **calib_only)
        cos = float(np.mean([cosine(a, b) for a, b in zip(ref, run(one))]))
        out.append(GroupSensitivity(list(g.producers), cos, 1.0 - rep.flops_ratio, 1.0 - rep.activations_ratio))
        if progress:
            spent = time.perf_counter() - started
            progress(f"  sensitivity {k + 1}/{len(full.groups)}: {g.producers[0]} cosine {cos:.4f}, "
                     f"saves {1.0 - rep.flops_ratio:.1%} FLOPs; {spent:.0f} s, "
                     f"ETA {spent / (k + 1) * (len(full.groups) - k - 1):.0f} s")
    return out


def sensitive_to_exclude(groups: Sequence[GroupSensitivity], full_flops_ratio: float,
                         max_flops_ratio: float, full_activations_ratio: Optional[float] = None,
                         max_activations_ratio: Optional[float] = None) -> list[str]:
    """Producers of the groups to leave whole: the most damage per FLOP saved first, as long as
    pruning the others still reaches `max_flops_ratio` (savings taken as additive) and, with
    `max_activations_ratio`, `PruneReport.activations_ratio` stays under it too: onnxruntime's
    latency follows the unfused elementwise traffic (early high-resolution layers are cheap in
    FLOPs, not in memory), so a FLOPs budget alone kept it at 0.81x with FLOPs at 0.56x."""
    ranked = sorted(groups, key=lambda g: -(1.0 - g.cosine) / max(g.flops_saved, 1e-6))
    ratio, acts, out = full_flops_ratio, full_activations_ratio, []
    for g in ranked:
        if g.cosine >= 0.999 or ratio + g.flops_saved > max_flops_ratio:
            continue
        if max_activations_ratio is not None and acts is not None and acts + g.activations_saved > max_activations_ratio:
            continue
        ratio += g.flops_saved
        acts = acts + g.activations_saved if acts is not None else None
        out.append(g.producers[0])
    return out
