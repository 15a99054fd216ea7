"""Low-rank factorization: exact on really low-rank weights, leaves full-rank ones alone, and
makes the real PP-OCRv4 recognizer cheaper (with the drift measured and reported)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from converters.errors import ConversionError  # noqa: E402
from converters.lowrank import factorize  # noqa: E402

import prunemodels  # noqa: E402


def _run(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _feeds(seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((4, 64)).astype(np.float32),
            "img": rng.standard_normal((1, 32, 8, 8)).astype(np.float32)}


def test_energy_one_is_exact_and_factorizes_only_low_rank_weights(tmp_path):
    model = onnx.load(str(prunemodels.low_rank(tmp_path, rank=3)))
    out, report = factorize(model, energy=1.0)
    onnx.checker.check_model(out)
    by_name = {l.name: l for l in report.layers}
    assert {n for n, l in by_name.items() if l.factorized} == {"mm1", "gemm2", "conv1x1"}
    assert all(by_name[n].rank == 3 for n in ("mm1", "gemm2", "conv1x1"))
    assert not by_name["mm_full"].factorized and "would not save" in by_name["mm_full"].reason
    for a, b in zip(_run(model, _feeds()), _run(out, _feeds())):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
    assert report.cost_after.flops < report.cost_before.flops
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("Conv") == 2 and ops.count("Gemm") == 1


def test_target_speedup_sets_the_rank(tmp_path):
    model = onnx.load(str(prunemodels.low_rank(tmp_path, rank=20)))
    out, report = factorize(model, target_speedup=4.0)
    mm1 = next(l for l in report.layers if l.name == "mm1")
    assert mm1.rank == int(64 * 96 / (4.0 * (64 + 96)))
    assert mm1.flops_ratio <= 0.25 + 1e-9 and mm1.rel_error > 0   # rank 9 < 20: lossy, and says so
    assert _run(out, _feeds())[0].shape == (4, 80)


def test_bad_arguments(tmp_path):
    model = onnx.load(str(prunemodels.low_rank(tmp_path)))
    with pytest.raises(ConversionError, match="energy"):
        factorize(model, energy=0.0)
    with pytest.raises(ConversionError, match="target_speedup"):
        factorize(model, target_speedup=0.5)
    with pytest.raises(ConversionError, match="ModelProto"):
        factorize(str(tmp_path / "low_rank.onnx"))


@pytest.fixture(scope="session")
def rec_input(model_paths):
    import cv2

    from convdata import text_lines

    lines = text_lines("heldout", 2)
    x = [((cv2.resize(l, (320, 48)).astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1) for l in lines]
    return np.stack(x)


def test_recognizer_factorized_is_cheaper_valid_and_reported(model_paths, rec_input):
    model = onnx.load(str(model_paths["ppocrv4_rec.onnx"]))
    out, report = factorize(model, energy=0.9, input_shapes={"x": [1, 3, 48, 320]})
    onnx.checker.check_model(out)
    done = report.factorized
    assert any(l.op_type == "MatMul" for l in done) and any(l.op_type == "Conv" for l in done)
    assert all(l.macs_per_row_after < l.macs_per_row_before for l in done)
    assert all(0.0 <= l.rel_error <= np.sqrt(1 - 0.9) + 1e-6 for l in done)
    assert report.cost_after.flops < 0.9 * report.cost_before.flops
    a = _run(model, {"x": rec_input})[0]
    b = _run(out, {"x": rec_input})[0]
    assert a.shape == b.shape
    agree = float((a.argmax(-1) == b.argmax(-1)).mean())
    cos = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
    print(f"\nrecognizer energy 0.9: {len(done)} layers factorized, FLOPs x{report.flops_ratio:.3f}, "
          f"cosine {cos:.3f}, per-step argmax agreement {agree:.2f} (no fine-tuning)", file=sys.stderr)
    assert "| p2o.MatMul.24 |" in report.to_markdown()


def _softmax_then_reshape(tail: str, seed: int = 0):
    """x [1,4,8] -> MatMul -> logits [1,4,10] -> Flatten -> Softmax -> `tail` -> output, as opset
    conversion writes a Softmax on a non-last axis (the PP-OCRv4 recognizer's head)."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((8, 10)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"]),
             helper.make_node("Flatten", ["logits"], ["flat"], axis=2),
             helper.make_node("Softmax", ["flat"], ["probs"], axis=-1)]
    if tail == "reshape":
        nodes.append(helper.make_node("Reshape", ["probs", "shape"], ["out"]))
    else:  # arithmetic after the Softmax: the output is no longer a Softmax's
        nodes.append(helper.make_node("Mul", ["probs", "two"], ["out"]))
    graph = helper.make_graph(
        nodes, "softmax_reshape", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 10])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1, 4, 10], np.int64), "shape"),
         numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_distillation_matches_the_logits_of_a_softmax_behind_shape_only_ops():
    from converters.distill import matching_features, output_logits

    teacher, student = _softmax_then_reshape("reshape", 0), _softmax_then_reshape("reshape", 1)
    assert output_logits(student) == [["logits", "flat"]]
    feats = matching_features(teacher, student, {"x": [1, 4, 8]})
    assert feats[0] == "logits"            # the logits, in the layout before the Flatten
    assert "probs" not in feats            # the output seen through the Reshape: the output loss has it
    other = _softmax_then_reshape("mul", 1)
    assert output_logits(other) == []      # arithmetic after the Softmax: not a Softmax output
    assert "probs" in matching_features(_softmax_then_reshape("mul", 0), other, {"x": [1, 4, 8]})


def test_recognizer_distillation_matches_its_logits_not_its_probabilities(model_paths):
    from converters.distill import matching_features, output_logits
    from converters.passes import PassContext, default_passes, load_onnx, run_passes

    shapes = {"x": [1, 3, 48, 320]}
    model, _ = run_passes(load_onnx(model_paths["ppocrv4_rec.onnx"]), default_passes(), PassContext(input_shapes=shapes))
    student, _ = factorize(model, energy=0.9, input_shapes=shapes)
    producer = {o: n for n in model.graph.node for o in n.output}
    out = model.graph.output[0].name
    assert producer[out].op_type == "Reshape"     # the converted head: ... -> Flatten -> Softmax -> Reshape
    chains = output_logits(student)
    assert len(chains) == 1 and producer[chains[0][-1]].op_type == "Flatten"
    feats = matching_features(model, student, shapes)
    assert feats[0] in chains[0]
    softmax_out = producer[out].input[0]
    assert producer[softmax_out].op_type == "Softmax" and softmax_out not in feats


def test_data_aware_factors_fit_the_inputs_better_than_the_weights_svd():
    from converters.lowrank import _data_aware_factors

    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 24))
    x = rng.standard_normal((500, 32)) * np.linspace(3.0, 0.05, 32)   # inputs use a few directions most
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    plain = (u[:, :6] * s[:6]) @ vt[:6]
    a, b = _data_aware_factors(w, x.T @ x, 6)
    assert a.shape == (32, 6) and b.shape == (6, 24)
    err_plain, err_aware = (np.linalg.norm(x @ w - x @ p) for p in (plain, a @ b))
    assert err_aware < 0.9 * err_plain   # the optimum on these inputs; 575 vs 700 here


def test_recognizer_factorized_on_real_lines_keeps_the_ranks_and_is_closer_on_held_out_lines(model_paths):
    from convdata import rec_samples
    from converters.passes import PassContext, default_passes, load_onnx, run_passes

    shapes = {"x": [1, 3, 48, 320]}
    model, _ = run_passes(load_onnx(model_paths["ppocrv4_rec.onnx"]), default_passes(),
                          PassContext(input_shapes=shapes))
    plain, plain_rep = factorize(model, energy=0.9, input_shapes=shapes)
    aware, aware_rep = factorize(model, energy=0.9, input_shapes=shapes, calib=rec_samples("calibration", 8))
    assert [l.rank for l in aware_rep.layers] == [l.rank for l in plain_rep.layers]   # same FLOPs
    assert aware_rep.flops_ratio == pytest.approx(plain_rep.flops_ratio)
    held = rec_samples("heldout", 8)   # other photos, page half and words than the calibration lines

    def cos(m):
        ref, out = (np.concatenate([_run(g, {"x": x[None]})[0] for x in held]) for g in (model, m))
        return float(np.mean([np.dot(r.ravel(), o.ravel()) / (np.linalg.norm(r) * np.linalg.norm(o))
                              for r, o in zip(ref, out)]))

    c_plain, c_aware = cos(plain), cos(aware)
    print(f"\nrecognizer energy 0.9 on held-out lines: cosine {c_plain:.3f} (weights' SVD) -> {c_aware:.3f} "
          f"(factors fitted to 8 calibration lines)", file=sys.stderr)
    assert c_aware > c_plain + 0.05
