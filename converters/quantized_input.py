"""Whether an ONNX model arrives already quantized (QDQ pairs, QLinear* / *Integer operators):
such a model is taken as given, never quantized or cast again under another label."""
from __future__ import annotations

from collections import Counter
from typing import Any

#: operators that only a quantized graph carries
QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                       "ConvInteger", "QLinearConv", "QLinearMatMul", "QAttention", "DynamicQuantizeMatMul"})


def _is_quant(op_type: str) -> bool:
    return op_type in QUANT_OPS or op_type.startswith("QLinear")


def quantized_ops(model: Any) -> dict[str, int]:
    """{operator: count} of the quantization operators in the main graph and its subgraphs."""
    counts: Counter = Counter()

    def walk(graph: Any) -> None:
        for node in graph.node:
            if _is_quant(node.op_type):
                counts[node.op_type] += 1
            for attr in node.attribute:
                if attr.g is not None and len(attr.g.node):
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(model.graph)
    return dict(counts)


def describe(counts: dict[str, int]) -> str:
    """'12 QuantizeLinear, 12 DequantizeLinear' (most common first); '' for a float model."""
    return ", ".join(f"{n} {op}" for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
