"""The accuracy guard's comparator (runtime interface only) and the layer-sensitivity guard."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from converters.compare import Comparator, cosine, load_eval_fn
from converters.errors import ConversionError
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
