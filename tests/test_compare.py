"""The accuracy guard's comparator (runtime interface only) and the layer-sensitivity guard."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from converters.compare import Comparator, cosine, load_eval_fn
from converters.errors import ConversionError
from converters.sensitivity import keep_sensitive_layers_float
from convdata import cls_crops, cls_samples


def test_cosine_edge_cases():
    assert cosine(np.zeros(4), np.zeros(4)) == 1.0
    assert cosine(np.zeros(4), np.ones(4)) == 0.0
    assert cosine([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert cosine([1, 0], [0, 1]) == pytest.approx(0.0)


@pytest.fixture(scope="module")
def cmp(cls_model):
    return Comparator(cls_model, cls_samples("heldout"), task="classification")


def test_same_model_on_another_backend_agrees(cmp, cls_model):
    c = cmp.compare(cls_model, backend="openvino", precision="fp32")  # pinned f32: no silent bf16
    assert c.samples == 28 and c.top1_agreement == 1.0
    assert c.cosine >= 0.99999 and c.max_abs <= 1e-4 and c.drop == 0.0
    assert c.kind == "top1" and "top-1 agreement 100.0%" in c.summary()


def test_a_broken_model_is_measured_as_broken(cmp, cls_model, tmp_path):
    """The classifier with its last layer's weights scaled by -1: a real model, wrong answers."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(cls_model))
    gemm_w = next(n.input[1] for n in m.graph.node if n.op_type in ("MatMul", "Gemm"))
    for t in m.graph.initializer:
        if t.name == gemm_w:
            t.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(t), t.name))
    for n in m.graph.node:  # PaddlePaddle exports keep weights in Constant nodes too
        if n.op_type == "Constant" and n.output[0] == gemm_w:
            n.attribute[0].t.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(n.attribute[0].t), gemm_w))
    path = tmp_path / "flipped.onnx"
    onnx.save(m, str(path))
    c = cmp.compare(path)
    assert c.top1_agreement < 0.5 and c.drop > 0.5, c.summary()


def _labelled():
    """Real crops with known labels: upright = class 0 ("0"), rotated = class 1 ("180")."""
    crops = cls_crops("heldout")
    x = cls_samples("heldout")
    y = np.array([i % 2 for i in range(len(crops))])  # cls_crops alternates upright, rotated
    return x, y


def accuracy(runtime) -> float:
    x, y = _labelled()
    pred = np.concatenate([runtime.infer(x[i:i + 1])[next(iter(runtime.outputs)).name] for i in range(len(x))])
    return float((pred.argmax(1) == y).mean())


def test_user_metric_plugs_in(cls_model):
    cmp = Comparator(cls_model, cls_samples("heldout")[:4], task="classification", eval_fn=accuracy)
    assert 0.6 <= cmp.reference_metric <= 1.0  # the real classifier on real crops
    c = cmp.compare(cls_model, backend="openvino", precision="fp32")
    assert c.kind == "metric" and c.metric == pytest.approx(cmp.reference_metric) and c.drop == pytest.approx(0.0)
    assert "accuracy" in c.summary()


def test_eval_spec_loading(tmp_path, monkeypatch):
    mod = tmp_path / "mymetrics.py"
    mod.write_text(textwrap.dedent("""
        def score(runtime):
            return 0.5
        def broken(runtime):
            raise RuntimeError("boom")
        def not_a_number(runtime):
            return "high"
    """))
    assert load_eval_fn(f"{mod}:score")(None) == 0.5
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mymetrics", None)
    assert load_eval_fn("mymetrics:score")(None) == 0.5
    with pytest.raises(ConversionError, match="module:function"):
        load_eval_fn("mymetrics.score")
    with pytest.raises(ConversionError, match="cannot import"):
        load_eval_fn("no_such_module_xyz:f")
    with pytest.raises(ConversionError, match="no function"):
        load_eval_fn("mymetrics:missing")


@pytest.mark.parametrize("fn, match", [("broken", "failed: RuntimeError: boom"), ("not_a_number", "must return a number")])
def test_failing_user_metric_is_reported(cls_model, tmp_path, monkeypatch, fn, match):
    (tmp_path / "badmetrics.py").write_text("def broken(rt):\n    raise RuntimeError('boom')\n"
                                            "def not_a_number(rt):\n    return 'high'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("badmetrics", None)
    with pytest.raises(ConversionError, match=match):
        Comparator(cls_model, cls_samples("heldout")[:2], eval_fn=load_eval_fn(f"badmetrics:{fn}"))


def test_no_held_out_samples_is_an_error(cls_model):
    with pytest.raises(ConversionError, match="held-out samples"):
        Comparator(cls_model, np.zeros((0, 3, 48, 192), np.float32))


def test_subset_reuses_reference_outputs(cmp):
    sub = cmp.subset(4)
    assert len(sub.samples) == 4 and sub.reference_outputs == cmp.reference_outputs[:4] and sub.kind == "cosine"
    assert cmp.subset(1000) is cmp


# ------------------------------------------------------------------ the sensitivity guard

def _toy(costs: dict[str, float], base: float, interaction: float = 0.0):
    """drop = base - sum of the gains of the layers kept float (+ a penalty for layer 'bad')."""
    calls = []

    def evaluate(excluded):
        calls.append(list(excluded))
        return max(0.0, base - sum(costs[n] for n in excluded) + (interaction if "bad" in excluded else 0.0))

    return evaluate, calls


def test_guard_keeps_the_most_sensitive_layers_float_until_the_budget_holds():
    evaluate, _ = _toy({"a": 0.001, "b": 0.03, "c": 0.015, "d": 0.0}, base=0.06)
    rep = keep_sensitive_layers_float(["a", "b", "c", "d"], evaluate, budget=0.02)
    assert rep.initial_drop == pytest.approx(0.06)
    assert rep.ranking[0][0] == "b" and rep.ranking[1][0] == "c"
    assert rep.excluded == ["b", "c"] and rep.within_budget and rep.stopped == "within budget"
    assert [s.layer for s in rep.steps] == ["b", "c"]
    d = rep.to_dict()
    assert d["float_layers"] == ["b", "c"] and d["steps"][1]["drop"] == pytest.approx(0.015)


def test_guard_puts_back_a_layer_that_does_not_help():
    # alone 'bad' looks good, but with 'b' already float it makes things worse
    costs = {"b": 0.03, "bad": 0.02, "c": 0.012}
    evaluate, _ = _toy(costs, base=0.06, interaction=0.04)

    def rank(excluded):  # ranking sees each layer alone
        return 0.06 - sum(costs[n] for n in excluded)

    rep = keep_sensitive_layers_float(list(costs), evaluate, budget=0.02, rank_evaluate=rank)
    assert [(s.layer, s.kept) for s in rep.steps] == [("b", True), ("bad", False), ("c", True)]
    assert rep.excluded == ["b", "c"] and rep.within_budget


def test_guard_stops_when_float_is_as_fast():
    evaluate, _ = _toy({"a": 0.01, "b": 0.01, "c": 0.01}, base=0.06)
    rep = keep_sensitive_layers_float(["a", "b", "c"], evaluate, budget=0.0, latency=lambda ex: 10.0 + len(ex),
                                      float_latency_ms=11.5)
    assert len(rep.excluded) == 2 and not rep.within_budget and "float wins" in rep.stopped
    assert rep.steps[-1].latency_ms == 12.0


def test_guard_within_budget_does_nothing_and_max_steps_bounds_it():
    evaluate, calls = _toy({"a": 0.01}, base=0.01)
    rep = keep_sensitive_layers_float(["a"], evaluate, budget=0.02)
    assert rep.excluded == [] and calls == [[]] and "within budget" in rep.stopped
    evaluate, _ = _toy({n: 0.001 for n in "abcdef"}, base=0.5)
    rep = keep_sensitive_layers_float(list("abcdef"), evaluate, budget=0.0, max_steps=3)
    assert len(rep.steps) == 3 and "after 3 steps" in rep.stopped and not rep.within_budget


def test_guard_on_the_real_classifier(cls_model, tmp_path):
    """OpenVINO INT8 of the real classifier with a strict cosine budget: the guard reverts real
    layers and each kept step lowers the measured drop."""
    from converters import openvino_ir
    from converters.passes import PassContext, default_passes, load_onnx, run_passes
    import onnx

    model, _ = run_passes(load_onnx(cls_model), default_passes(), PassContext(input_shapes={"x": [1, 3, 48, 192]}))
    prepared = tmp_path / "cls.onnx"
    onnx.save(model, str(prepared))
    fm = openvino_ir.read_onnx(prepared)
    q = openvino_ir.quantize(fm, cls_samples("calibration"))
    cmp = Comparator(cls_model, cls_samples("heldout")[:8])  # cosine-based drop
    sub = cmp.subset(3)
    path = tmp_path / "trial.xml"

    def drop(c, excluded):
        openvino_ir.save_ir(openvino_ir.revert_layers(q, excluded, fm), path)
        return c.compare(path, backend="openvino", precision="fp32").drop

    layers = openvino_ir.quantized_layers(q)[:16]  # the first layers: enough to see the effect, quick
    initial = drop(cmp, [])
    rep = keep_sensitive_layers_float(layers, lambda ex: drop(cmp, ex), budget=initial / 2,
                                      rank_evaluate=lambda ex: drop(sub, ex), max_steps=4)
    kept = [s for s in rep.steps if s.kept]
    assert kept, rep.to_dict()
    drops = [initial] + [s.drop for s in kept]
    assert all(b < a for a, b in zip(drops, drops[1:]))
    assert rep.final_drop < initial and set(rep.excluded) <= set(layers)


def test_guard_gives_up_after_layers_in_a_row_that_do_not_help():
    calls = []

    def evaluate(excluded):
        calls.append(list(excluded))
        return 0.05  # nothing helps on the full held-out set

    rep = keep_sensitive_layers_float(list("abcdef"), evaluate, budget=0.01,
                                      rank_evaluate=lambda ex: 0.05 - 0.001 * len(ex), max_misses=3)
    assert [s.kept for s in rep.steps] == [False, False, False] and "3 layers in a row" in rep.stopped
    assert rep.excluded == [] and rep.final_drop == 0.05


def test_samples_without_signal_do_not_decide_the_cosine():
    """A detector map that is ~0 (a photo without text) must not make float noise look like a
    large accuracy drop; a real disagreement on a sample with signal still counts."""
    from converters.compare import Comparator

    rng = np.random.default_rng(0)
    signal = rng.random((1, 1, 32, 32)).astype(np.float32)
    empty = np.full((1, 1, 32, 32), 1e-6, np.float32)
    reference = [{"maps": signal}, {"maps": empty}]
    comp = Comparator.__new__(Comparator)
    comp.reference_outputs, comp.task, comp.kind = reference, "text_detection", None
    comp.eval_fn, comp.reference_metric, comp.metric_name = None, None, None
    noisy = [{"maps": signal + 1e-6}, {"maps": empty + rng.random(empty.shape).astype(np.float32) * 1e-5}]
    result = comp.compare_outputs(noisy)
    assert result.outputs[0].uninformative == 1
    assert result.drop < 1e-4
    wrong = [{"maps": rng.random(signal.shape).astype(np.float32)}, {"maps": empty}]
    assert comp.compare_outputs(wrong).drop > 0.1
