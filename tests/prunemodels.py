"""Small ONNX graphs with the structures channel pruning must get right (residual Add, depthwise
conv, BatchNorm, squeeze-excitation Mul, Concat, per-channel constants), and low-rank weights.
Unit-test material only: the real PP-OCR models carry the evidence."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _conv(name, x, cin, cout, k, rng, inits, group=1, bias=True, out=None):
    from onnx import helper, numpy_helper

    w = (rng.standard_normal((cout, cin // group, k, k)) * 0.3).astype(np.float32)
    inits.append(numpy_helper.from_array(w, f"{name}_w"))
    ins = [x, f"{name}_w"]
    if bias:
        inits.append(numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), f"{name}_b"))
        ins.append(f"{name}_b")
    return helper.make_node("Conv", ins, [out or name], name=name, kernel_shape=[k, k], pads=[k // 2] * 4,
                            group=group)


def _bn(name, x, c, rng, inits):
    from onnx import helper, numpy_helper

    params = [rng.uniform(0.5, 1.5, c), rng.uniform(-0.2, 0.2, c), rng.uniform(-0.2, 0.2, c), rng.uniform(0.5, 1.5, c)]
    names = []
    for p, suffix in zip(params, ("scale", "bias", "mean", "var")):
        inits.append(numpy_helper.from_array(p.astype(np.float32), f"{name}_{suffix}"))
        names.append(f"{name}_{suffix}")
    return helper.make_node("BatchNormalization", [x] + names, [name], name=name)


def _save(nodes, name: str, inputs, outputs, inits, folder: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(folder) / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def branchy(folder: Path, seed: int = 0) -> Path:
    """x[1,3,16,16] -> A(conv3x3)+BN+Relu -> depthwise -> B(1x1) + residual Add with the depthwise
    output, squeeze-excitation Mul on it -> C and D (3x3) concatenated -> per-channel Mul ->
    E (1x1, 4 ch) -> output. Every producer but E can be pruned."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits: list = []
    n = [
        _conv("A", "x", 3, 8, 3, rng, inits), _bn("A_bn", "A", 8, rng, inits),
        helper.make_node("Relu", ["A_bn"], ["A_r"], name="A_relu"),
        _conv("DW", "A_r", 8, 8, 3, rng, inits, group=8),
        helper.make_node("Relu", ["DW"], ["DW_r"], name="DW_relu"),
        _conv("B", "DW_r", 8, 8, 1, rng, inits, bias=False),
        helper.make_node("Add", ["B", "DW_r"], ["res"], name="residual"),
        helper.make_node("GlobalAveragePool", ["res"], ["se_p"], name="se_pool"),
        _conv("SE1", "se_p", 8, 4, 1, rng, inits),
        helper.make_node("Relu", ["SE1"], ["SE1_r"], name="se_relu"),
        _conv("SE2", "SE1_r", 4, 8, 1, rng, inits),
        helper.make_node("Sigmoid", ["SE2"], ["SE2_s"], name="se_sigmoid"),
        helper.make_node("Mul", ["res", "SE2_s"], ["se_out"], name="se_mul"),
        _conv("C", "se_out", 8, 6, 3, rng, inits),
        _conv("D", "se_out", 8, 6, 3, rng, inits),
        helper.make_node("Concat", ["C", "D"], ["cat"], name="concat", axis=1),
        helper.make_node("Mul", ["cat", "scale"], ["cat_s"], name="per_channel_scale"),
        helper.make_node("Relu", ["cat_s"], ["cat_r"], name="cat_relu"),
        _conv("E", "cat_r", 12, 4, 1, rng, inits),
    ]
    inits.append(numpy_helper.from_array(rng.uniform(0.5, 1.5, (1, 12, 1, 1)).astype(np.float32), "scale"))
    return _save(n, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                 [helper.make_tensor_value_info("E", TensorProto.FLOAT, [1, 4, 16, 16])], inits, folder)


def concat_tied(folder: Path, seed: int = 0) -> Path:
    """Concat(P, Q) added to a third conv R: the concat layout cannot be tied to R's, so all of
    P, Q and R must stay whole."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    inits: list = []
    n = [
        _conv("P", "x", 3, 4, 3, rng, inits), _conv("Q", "x", 3, 4, 3, rng, inits),
        _conv("R", "x", 3, 8, 3, rng, inits),
        helper.make_node("Concat", ["P", "Q"], ["cat"], name="concat", axis=1),
        helper.make_node("Add", ["cat", "R"], ["sum"], name="add"),
        _conv("OUT", "sum", 8, 2, 1, rng, inits),
    ]
    return _save(n, "concat_tied", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                 [helper.make_tensor_value_info("OUT", TensorProto.FLOAT, [1, 2, 8, 8])], inits, folder)


def low_rank(folder: Path, rank: int = 3, seed: int = 0) -> Path:
    """x[N,64] -> MatMul(64x96, rank `rank`) -> Gemm(96x80 transB, rank `rank`) -> y, plus a
    full-rank MatMul branch (z) that factorization must leave alone at energy 1.0; and a 1x1
    Conv path: img[1,32,8,8] -> Conv 32->48 (rank `rank`) -> c."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def lowrank_matrix(k, n):
        return (rng.standard_normal((k, rank)) @ rng.standard_normal((rank, n)) / np.sqrt(rank)).astype(np.float32)

    w1 = lowrank_matrix(64, 96)
    w2 = lowrank_matrix(80, 96)  # Gemm transB=1: stored [N, K]
    w3 = rng.standard_normal((64, 64)).astype(np.float32)
    wc = lowrank_matrix(48, 32).reshape(48, 32, 1, 1)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(rng.standard_normal(80).astype(np.float32), "b2"),
             numpy_helper.from_array(w3, "w3"), numpy_helper.from_array(wc, "wc"),
             numpy_helper.from_array(rng.standard_normal(48).astype(np.float32), "bc")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], name="gemm2", transB=1, alpha=0.5, beta=2.0),
             helper.make_node("MatMul", ["x", "w3"], ["z"], name="mm_full"),
             helper.make_node("Conv", ["img", "wc", "bc"], ["c"], name="conv1x1", kernel_shape=[1, 1])]
    return _save(nodes, "low_rank",
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64]),
                  helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 32, 8, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 80]),
                  helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 64]),
                  helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 48, 8, 8])], inits, folder)
