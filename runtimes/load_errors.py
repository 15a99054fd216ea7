"""Say what an engine refused when a model does not load, and what to do about it.

Engines answer a model they cannot take with a long C++ message; the words a user needs
(which operator, at which opset, which element type, which IR version) are in there. They
are picked out here, once for every backend, and kept on the error as `refused` so
`backend="auto"` can tell an opset problem (worth an opset conversion) from a corrupt file.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from .errors import ModelLoadError

# (pattern, what it says); named groups become the `refused` facts
_PATTERNS = (
    (re.compile(r"(?:Could not find an implementation for|Failed to find kernel for) (?P<operator>\w+)\((?P<opset>\d+)\)"),
     "has no kernel for operator {operator} at opset {opset} (for the element types this model uses)"),
    (re.compile(r"(?P<domain>[\w.]*):(?P<operator>\w+)\((?P<opset>-?\d+)\) is not a registered function/op"),
     "does not know operator {operator} (domain {domain!r}, opset {opset})"),
    # OpenVINO's report: "-- Pad-25 with a message:\n<trace lines>\n<the reason>\n\n"
    (re.compile(r"Failed operations detailed log:\s*-- (?P<operator>\w+)-(?P<opset>\d+) with a message:"
                r"(?:[^\n]*\n)*?(?P<reason>[^\n]+)\n\s*\n"),
     "cannot convert operator {operator} at opset {opset} ({reason})"),
    (re.compile(r"does not support the following ONNX operations: (?P<operator>[\w.:, ]+?)(?:\s*$|\s{2}|\.\s)"),
     "does not support the ONNX operation(s) {operator}"),
    (re.compile(r"doesn't support (?P<operator>\w+) operation with dynamic rank"),
     "does not support operator {operator} when its input rank is not known before running"),
    (re.compile(r"Unsupported model IR version: (?P<ir>\d+), max supported IR version: (?P<max_ir>\d+)"),
     "supports ONNX IR version up to {max_ir}; this model has IR version {ir}"),
    (re.compile(r"[Oo]pset (?P<opset>\d+) (?:is )?(?:under development|not supported|is not supported)"),
     "does not support opset {opset}"),
    (re.compile(r"Type \((?P<type>[\w()]+)\) of (?:input|output) (?:parameter|arg) \((?P<tensor>[^)]*)\)"),
     "does not take element type {type} for tensor {tensor!r}"),
    (re.compile(r"(?:[Uu]nsupported|[Nn]ot supported) (?:element |data )?type:? ?(?P<type>[\w()]+)"),
     "does not support element type {type}"),
    (re.compile(r"Loading input model\s+Unsupported type(?P<type>)"),
     "does not support an element type this model uses (it does not say which; the model's "
     "tensor types are listed by edgesdk info on a backend that opens it)"),
)


def refused_facts(text: str) -> tuple[Optional[str], dict[str, str]]:
    """(a sentence fragment saying what was refused, its facts) from an engine message."""
    for pattern, template in _PATTERNS:
        m = pattern.search(text)
        if m:
            facts = {k: v.strip() for k, v in m.groupdict().items() if v}
            return template.format(**{k: m.group(k) for k in pattern.groupindex}), facts
    return None, {}


def model_opsets(path: Path) -> dict[str, int]:
    """The opsets an ONNX model imports ({} when it is not ONNX or onnx is not installed)."""
    if path.suffix.lower() != ".onnx":
        return {}
    try:
        import onnx
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # no onnx on a device, or a file onnx cannot parse: no facts to add
        return {}
    return {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}


def load_failure(engine: str, path: Path, engine_text: str, fallback: str,
                 cause: Optional[BaseException] = None) -> ModelLoadError:
    """A ModelLoadError naming what `engine` refused and what to do; `fallback` is the
    message for when the engine's text names nothing (a corrupt or truncated file)."""
    what, facts = refused_facts(engine_text)
    if what is None:
        error = ModelLoadError(fallback)
    else:
        opsets = model_opsets(path)
        stamped = f" (the model imports opset {', '.join(f'{d} {v}' for d, v in opsets.items())})" if opsets else ""
        error = ModelLoadError(
            f"{engine} cannot load {path.name}: it {what}{stamped}. "
            f"What to do: load it with backend='auto' (--backend auto on the command line), which tries the other "
            f"installed backends and, for ONNX, a conversion to another opset; or re-export the model "
            f"at an opset {engine} supports; or update {engine}. Engine said: {' '.join(engine_text.split())[:200]}")
        facts["engine"] = engine
        if opsets:
            facts["model_opset"] = str(opsets.get("ai.onnx", ""))
    error.refused = facts  # type: ignore[attr-defined]
    if cause is not None:
        error.__cause__ = cause
    return error
