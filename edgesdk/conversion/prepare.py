"""Stage "prepare": the model as ONNX, what it is (ModelFacts: input, preprocessing, task, labels),
and the graph preparation passes (static shapes, opset, names, folding, shape inference)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .context import Context


@dataclass
class Prepared:
    src_path: Path                   # the model file the bundle is made from (a PyTorch model: its export)
    source_proto: Any                # the ONNX model as loaded
    facts: Any                       # edgesdk.convert.ModelFacts
    prepared_path: Path              # work/prepared.onnx (compress overwrites it)
    prepared_model: Any              # the passes' output, before any compression
    passes: list[Any]                # converters.passes records
    name: str                        # the bundle's name

    def summary(self) -> str:
        f = self.facts
        changed = [r.name for r in self.passes if r.changes]
        return (f"{self.src_path.name}: input {f.input_name} {f.shape} {f.dtype}; task {f.task}; "
                f"preset {f.preset.name if f.preset else 'none'}; passes that changed the graph: "
                f"{', '.join(changed) or 'none'}")


def prepare(ctx: Context) -> Prepared:
    import onnx

    from converters.passes import PassContext, default_passes, run_passes

    from ..convert import _load_model, _model_facts

    o = ctx.opts
    src_path, proto = _load_model(ctx.model, ctx.work, o.torch_example, ctx.say, o.example_shape)
    facts = _model_facts(ctx.model, src_path, proto, o.preset, o.input_shape, o.preprocess, o.preprocess_options,
                         o.task, o.labels, o.calib, o.assume_preprocess, ctx.say, o.decoder)
    ctx.say(f"{src_path.name}: input {facts.input_name} {facts.shape}; preset "
            f"{facts.preset.name if facts.preset else 'none'}; task {facts.task}; profile {ctx.prof.name} "
            f"(this host: {ctx.this_host}); budget {o.budget}")
    pass_ctx = PassContext(input_shapes={facts.input_name: facts.shape}, work_dir=ctx.work)
    prepared_model, records = run_passes(proto, default_passes(), pass_ctx)
    prepared = ctx.work / "prepared.onnx"
    onnx.save(prepared_model, str(prepared))
    ctx.say("graph prepared: " + "; ".join(f"{r.name}: {', '.join(r.changes)}" for r in records if r.changes))
    return Prepared(src_path, proto, facts, prepared, prepared_model, records, o.name or facts.name)
