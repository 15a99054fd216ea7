"""Small ONNX graph helpers shared by the pruning and factorization passes.

`prepare(model)` turns a model into the form those passes edit: Constant nodes become
initializers and subgraphs computed only from constants (e.g. Paddle's Reshape of a bias
constant) are folded. The result computes exactly what the input did.
"""
from __future__ import annotations

import numpy as np

# ops whose output depends on more than their inputs, or that we never fold
_NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
            "Bernoulli", "If", "Loop", "Scan", "SequenceConstruct", "Constant"}
_FOLD_MAX_ELEMENTS = 1 << 22


def copy_model(model):
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def _has_subgraph(node) -> bool:
    from onnx import AttributeProto

    return any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute)


def _set_nodes(model, nodes) -> None:
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def constants_to_initializers(model) -> int:
    """Move every `Constant` node holding a tensor into the initializers (in place). Returns the count."""
    from onnx import numpy_helper

    keep, moved = [], 0
    for node in model.graph.node:
        if node.op_type == "Constant" and not node.domain:
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                t = numpy_helper.from_array(numpy_helper.to_array(value.t), node.output[0])
                model.graph.initializer.append(t)
                moved += 1
                continue
        keep.append(node)
    if moved:
        _set_nodes(model, keep)
    return moved


def fold_constants(model) -> int:
    """Evaluate nodes whose inputs are all initializers and store their outputs as initializers.

    Uses onnx's reference evaluator one node at a time; a node it cannot evaluate is left alone.
    Returns how many nodes were folded."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph_inputs = {i.name for i in model.graph.input}
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name not in graph_inputs}
    outputs = {o.name for o in model.graph.output}
    opset = {o.domain: o.version for o in model.opset_import}
    keep, folded = [], 0
    for node in model.graph.node:
        ins = [i for i in node.input if i]
        foldable = (not node.domain and node.op_type not in _NO_FOLD and not _has_subgraph(node)
                    and ins and all(i in values for i in ins)
                    and not any(o in outputs for o in node.output)
                    and sum(values[i].size for i in ins) <= _FOLD_MAX_ELEMENTS)
        if foldable:
            try:
                single = helper.make_model(
                    helper.make_graph([node], "fold", [], [helper.ValueInfoProto(name=o) for o in node.output],
                                      [numpy_helper.from_array(values[i], i) for i in set(ins)]),
                    opset_imports=[helper.make_opsetid("", opset.get("", 13))])
                results = ReferenceEvaluator(single).run(None, {})
            except Exception:  # the reference evaluator lacks some ops: keep the node as it is
                results = None
            if results is not None:
                for name, value in zip(node.output, results):
                    values[name] = np.asarray(value)
                    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
                folded += 1
                continue
        keep.append(node)
    if folded:
        _set_nodes(model, keep)
        remove_unused_initializers(model)
    return folded


def remove_unused_initializers(model) -> int:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    for node in model.graph.node:  # names referenced from inside subgraphs
        if _has_subgraph(node):
            used |= _subgraph_inputs(node)
    keep = [t for t in model.graph.initializer if t.name in used]
    removed = {t.name for t in model.graph.initializer} - {t.name for t in keep}
    if removed:
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
        inputs = [i for i in model.graph.input if i.name not in removed]  # IR < 4 lists them as inputs too
        del model.graph.input[:]
        model.graph.input.extend(inputs)
    return len(removed)


def _subgraph_inputs(node) -> set:
    from onnx import AttributeProto

    names = set()
    for a in node.attribute:
        graphs = [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs) if a.type == AttributeProto.GRAPHS else []
        for g in graphs:
            for n in g.node:
                names.update(n.input)
                if _has_subgraph(n):
                    names |= _subgraph_inputs(n)
    return names


def name_nodes(model) -> int:
    """Give every node a unique name made of [A-Za-z0-9_./-] (in place). Returns how many changed."""
    import re

    seen, changed = set(), 0
    for i, node in enumerate(model.graph.node):
        name = re.sub(r"[^A-Za-z0-9_./-]", "_", node.name) if node.name else f"{node.op_type}_{i}"
        base, k = name, 1
        while name in seen:
            name = f"{base}_{k}"
            k += 1
        seen.add(name)
        if name != node.name:
            node.name = name
            changed += 1
    return changed


def prepare(model):
    """A copy of `model` with constants as initializers, constant subgraphs folded and every node named."""
    m = copy_model(model)
    if m.ir_version < 4:  # initializers must be graph inputs before IR 4; we add them without
        m.ir_version = 4
    constants_to_initializers(m)
    fold_constants(m)
    name_nodes(m)
    return m


def attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def set_int_attr(node, name: str, value: int) -> None:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            a.i = int(value)
            return
    node.attribute.append(helper.make_attribute(name, int(value)))
