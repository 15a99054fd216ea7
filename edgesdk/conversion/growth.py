"""A bundle much larger than the model it was made from is said, with why (never silently).

The onnx wheel's light_resnet50 (80 KB) builds its weights at run time with ConstantOfShape;
folding them made a 102 MB bundle and nothing said so. The graph passes now keep such nodes
(converters.large_constants), but an engine's converter or INT8 (stored weights only) may still
store them: `growth_warning` names which step made the file larger, from the pass records'
sizes and the constants they kept unfolded.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

#: the bundle's model files at least this many times the input's size ...
GROWTH_RATIO = 3.0
#: ... and at least this many bytes larger get a warning
GROWTH_MIN_BYTES = 1_000_000
#: a pass that grows the graph by this factor and this many bytes is named as a cause
PASS_GROWTH_RATIO = 2.0
PASS_GROWTH_BYTES = 100_000


def source_bytes(path: Any, proto: Any = None) -> int:
    """The input's size: its file, or the serialized model when its weights live beside it
    (ONNX external data)."""
    from pathlib import Path

    size = Path(path).stat().st_size
    try:
        return max(size, int(proto.ByteSize())) if proto is not None else size
    except Exception:  # protobuf refuses to size messages over 2 GB: the file size stands
        return size


def growth_warning(source_name: str, source: int, bundle: int, variant: Any,
                   passes: Sequence[dict[str, Any]] = ()) -> Optional[str]:
    """One line when the bundle's model files are much larger than the input, naming why; None
    otherwise. `passes` are the report's pass records (converters.passes.PassRecord.to_dict)."""
    from runtimes.sizes import show_bytes

    if source <= 0 or bundle < GROWTH_RATIO * source or bundle - source < GROWTH_MIN_BYTES:
        return None
    reasons = [f"the {p['name']} pass grew the graph {show_bytes(p['bytes_before'])} -> {show_bytes(p['bytes_after'])}"
               for p in passes if _grew(p)]
    unfolded = sum(p.get("unfolded_bytes") or 0 for p in passes)
    if unfolded:
        how = ("INT8 quantizes stored weights only" if "int8" in variant.precision or variant.precision == "mixed"
               else f"the {variant.backend} converter folds them into its file")
        reasons.append(f"the model builds {show_bytes(unfolded)} of constants at run time from small ones "
                       f"(ConstantOfShape/Expand/Tile; the graph passes kept them unfolded) and {variant.key} stores "
                       f"them: {how}; onnxruntime fp32 keeps them as nodes (--backend onnxruntime --precision fp32)")
    if not reasons:
        reasons.append(f"the {variant.backend} {variant.precision} converter wrote the larger file (compare the Graph "
                       "preparation sizes in report.json 'passes')")
    return (f"the bundle's model files ({show_bytes(bundle)}) are {bundle / source:.0f}x the input {source_name} "
            f"({show_bytes(source)}): " + "; ".join(reasons))


def _grew(record: dict[str, Any]) -> bool:
    before, after = record.get("bytes_before"), record.get("bytes_after")
    return bool(before and after and after >= PASS_GROWTH_RATIO * before and after - before >= PASS_GROWTH_BYTES)
