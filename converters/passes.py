"""Graph preparation passes on ONNX models.

A pass is a small object with a `name` and `__call__(model, ctx) -> model`; it records what
it changed in `ctx`. A conversion is a list of passes, so the report can say (and a user can
replay) exactly what was done, like Olive's passes without the framework:

    ctx = PassContext(input_shapes={"x": [1, 3, 640, 640]})
    model, records = run_passes(onnx.load(path), default_passes(), ctx)

Passes never change what the model computes (up to float rounding in constant folding).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from runtimes.dims import merge_stated_dims
from runtimes.errors import first_line

from .errors import ConversionError
from .large_constants import GROWTH, LARGE_BYTES

#: per-channel QDQ quantization (onnxruntime) and OpenVINO's importer want opset >= 13
MIN_OPSET = 13


@dataclass
class PassRecord:
    """What one pass did."""

    name: str
    changes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: the serialized model's size before and after the pass (None: not measurable, over 2 GB)
    bytes_before: Optional[int] = None
    bytes_after: Optional[int] = None
    #: constants the graph builds at run time that folding left as nodes (bytes they would take)
    unfolded_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "changes": list(self.changes), "seconds": round(self.seconds, 3),
                "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "unfolded_bytes": self.unfolded_bytes}


@dataclass
class PassContext:
    """Settings the passes read, and the records they write."""

    #: input name -> static shape; None/absent dims stay as they are
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    min_opset: int = MIN_OPSET
    records: list[PassRecord] = field(default_factory=list)
    #: where a pass may write temporary files (None: a temp dir of its own)
    work_dir: Optional[Path] = None

    def record(self, name: str) -> PassRecord:
        rec = PassRecord(name)
        self.records.append(rec)
        return rec


class GraphPass:
    """Base: subclasses set `name` and implement `apply(model, ctx, record)`."""

    name = "pass"

    def __call__(self, model: Any, ctx: PassContext) -> Any:
        rec = ctx.record(self.name)
        start = time.perf_counter()
        rec.bytes_before = _byte_size(model)
        try:
            out = self.apply(model, ctx, rec)
        finally:
            rec.seconds = time.perf_counter() - start
        rec.bytes_after = _byte_size(out)
        return out

    def apply(self, model: Any, ctx: PassContext, record: PassRecord) -> Any:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def graph_inputs(model: Any) -> list[Any]:
    """The real inputs (not initializers listed as inputs, as IR < 4 models do)."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def input_dims(value_info: Any) -> list[Optional[int]]:
    """Dims of a graph input: ints, None for symbolic/unknown (also -1, which some exporters write)."""
    out: list[Optional[int]] = []
    for d in value_info.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None)
    return out


class MakeStatic(GraphPass):
    """Fix dynamic input dims to the shapes in `ctx.input_shapes` (from the profile or a flag).

    A fixed dim that disagrees with the asked shape is an error (the model cannot take it).
    Symbolic dims of outputs and intermediate value_info are cleared so shape inference
    recomputes them from the now static inputs.
    """

    name = "make_static"

    def apply(self, model: Any, ctx: PassContext, record: PassRecord) -> Any:
        inputs = {i.name: i for i in graph_inputs(model)}
        unknown = set(ctx.input_shapes) - set(inputs)
        if unknown:
            raise ConversionError(f"input shape given for {sorted(unknown)}, but the model's inputs are "
                                  f"{sorted(inputs)}; use one of those names")
        for name, shape in ctx.input_shapes.items():
            vi = inputs[name]
            merge_stated_dims(input_dims(vi), shape, name, error=ConversionError)  # rank and fixed dims agree
            for axis, (d, want) in enumerate(zip(vi.type.tensor_type.shape.dim, shape)):
                if want is None or (d.HasField("dim_value") and d.dim_value > 0):
                    continue
                was = d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?")
                d.Clear()
                d.dim_value = int(want)
                record.changes.append(f"input {name} axis {axis}: {was} -> {want}")
        if record.changes:
            for out in model.graph.output:
                for d in out.type.tensor_type.shape.dim:
                    if not (d.HasField("dim_value") and d.dim_value > 0):
                        d.Clear()
            del model.graph.value_info[:]
        return model


class InitializersNotInputs(GraphPass):
    """Weights listed as graph inputs (IR < 4 exporters list every initializer there) become
    plain initializers (IR version 4, which allows that): engines then treat them as constants
    (onnxruntime folds nothing that a caller could override), and converters see one real input."""

    name = "initializers_not_inputs"

    def apply(self, model: Any, ctx: PassContext, record: PassRecord) -> Any:
        inits = {t.name for t in model.graph.initializer}
        keep = [i for i in model.graph.input if i.name not in inits]
        dropped = len(model.graph.input) - len(keep)
        if not dropped:
            return model
        del model.graph.input[:]
        model.graph.input.extend(keep)
        if model.ir_version < 4:
            record.changes.append(f"IR version {model.ir_version} -> 4")
            model.ir_version = 4
        record.changes.append(f"{dropped} initializers no longer listed as graph inputs")
        return model


class UpgradeOpset(GraphPass):
    """Convert the default-domain opset up to `ctx.min_opset` with onnx.version_converter."""

    name = "upgrade_opset"

    def apply(self, model: Any, ctx: PassContext, record: PassRecord) -> Any:
        import onnx
        from onnx import version_converter

        current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        if current is None or current >= ctx.min_opset:
            return model
        try:
            upgraded = version_converter.convert_version(model, ctx.min_opset)
            onnx.checker.check_model(upgraded)
        except Exception as exc:  # the converter raises bare RuntimeErrors/ValidationErrors
            raise ConversionError(
                f"could not upgrade the model from opset {current} to {ctx.min_opset} (needed for per-channel "
                f"int8 and OpenVINO): {first_line(exc)}; re-export the model with opset >= "
                f"{ctx.min_opset}") from exc
        record.changes.append(f"opset {current} -> {ctx.min_opset}")
        return upgraded


class NameNodes(GraphPass):
    """Every node gets a unique name of [A-Za-z0-9_./-] (exclusion lists, onnx2tf and reports need them)."""

    name = "name_nodes"

    def apply(self, model: Any, ctx: PassContext, record: PassRecord) -> Any:
        from .graphedit import name_nodes

        changed = name_nodes(model)
        if changed:
            record.changes.append(f"{changed} nodes (re)named")
        return model


class FoldConstants(GraphPass):
    """Constant folding and simplification with onnxruntime's offline graph optimizer.

    Only the BASIC level runs: constant folding, redundant node elimination and fusions into
    standard ONNX ops (Conv+BatchNorm, Conv+Add/Mul, ...). The output holds only standard ops,
    so every backend can still read it. A ConstantOfShape/Expand/Tile that would store a large
    constant made from small ones stays a node (converters.large_constants; said in the record).
    """

    name = "fold_constants"

    def __init__(self, keep_expansions: bool = True) -> None:
        #: False folds them too (INT8 quantizers take stored weights only)
        self.keep_expansions = keep_expansions

    def apply(self, model: Any, ctx: PassContext, record: PassRecord) -> Any:
        import tempfile

        import onnx

        from .large_constants import find_expansions, held_unfoldable

        before = _op_counts(model)
        expansions = find_expansions(model) if self.keep_expansions else []
        if expansions:
            model = _copy(model)  # the caller's model keeps its inputs and nodes
        with tempfile.TemporaryDirectory(dir=ctx.work_dir) as tmp, held_unfoldable(model, expansions) as restore:
            src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
            onnx.save(model, str(src))
            out = restore(_ort_fold(src, dst))
        after = _op_counts(out)
        diff = {op: after.get(op, 0) - before.get(op, 0) for op in set(before) | set(after)}
        gone = ", ".join(f"{op} {d:+d}" for op, d in sorted(diff.items()) if d)
        total_before, total_after = sum(before.values()), sum(after.values())
        if total_before != total_after or gone:
            record.changes.append(f"nodes {total_before} -> {total_after}" + (f" ({gone})" if gone else ""))
        if expansions:
            record.unfolded_bytes = sum(e.out_bytes for e in expansions)
            record.changes.append(_expansions_line(expansions))
        return out


def _ort_fold(src: Path, dst: Path) -> Any:
    """onnxruntime's BASIC-level optimizer on the file `src`, its output read back from `dst`."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
        return onnx.load(str(dst))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ConversionError(f"constant folding failed (onnxruntime could not load the model): "
                              f"{first_line(exc)}") from exc


def _expansions_line(expansions: list[Any]) -> str:
    from runtimes.sizes import show_bytes

    ops = sorted({e.op for e in expansions})
    made, given = sum(e.out_bytes for e in expansions), sum(e.in_bytes for e in expansions)
    return (f"{len(expansions)} {'/'.join(ops)} node(s) kept unfolded: folding would store {show_bytes(made)} of "
            f"constants they build at run time from {show_bytes(given)} (a node is kept when its output is >= "
            f"{show_bytes(LARGE_BYTES)} and >= {GROWTH}x its inputs, like onnxsim's size threshold)")


def _copy(model: Any) -> Any:
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


class InferShapes(GraphPass):
    """ONNX shape inference (with data propagation), so quantizers and converters see every shape."""

    name = "infer_shapes"

    def apply(self, model: Any, ctx: PassContext, record: PassRecord) -> Any:
        import onnx

        try:
            out = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception as exc:  # inference is best effort: keep the model as it was
            record.changes.append(f"shape inference failed, kept as is: {first_line(exc, 200)}")
            return model
        known = sum(1 for v in out.graph.value_info
                    if v.type.tensor_type.HasField("shape")
                    and all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim))
        record.changes.append(f"{known} of {len(out.graph.value_info)} intermediate tensors have static shapes")
        return out


def _byte_size(model: Any) -> Optional[int]:
    try:
        return int(model.ByteSize())
    except Exception:  # protobuf refuses messages over 2 GB; the size is then not known
        return None


def _op_counts(model: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in model.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def default_passes(static: bool = True, fold: bool = True) -> list[GraphPass]:
    """The preparation every conversion runs, in order."""
    passes: list[GraphPass] = []
    if static:
        passes.append(MakeStatic())
    passes += [InitializersNotInputs(), UpgradeOpset(), NameNodes()]
    if fold:
        passes += [FoldConstants(), NameNodes()]
    passes.append(InferShapes())
    return passes


def run_passes(model: Any, passes: Sequence[Callable[[Any, PassContext], Any]],
               ctx: Optional[PassContext] = None) -> tuple[Any, list[PassRecord]]:
    """Apply `passes` in order; returns the model and the records of this run."""
    ctx = ctx or PassContext()
    start = len(ctx.records)
    for p in passes:
        model = p(model, ctx)
    return model, ctx.records[start:]


def load_onnx(path: Path) -> Any:
    """Load and check an ONNX file; a corrupt or truncated one is a ConversionError saying so."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"model file {str(path)!r} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ConversionError(f"{path.name} is not a readable ONNX model (corrupt or truncated?): "
                              f"{first_line(exc, 200)}; re-export or re-download it") from exc
    if not model.graph.node:
        raise ConversionError(f"{path.name} holds no graph nodes (corrupt or truncated?); re-export or re-download it")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError
        raise ConversionError(f"{path.name} is not a valid ONNX model: {first_line(exc)}") from exc
    return model
