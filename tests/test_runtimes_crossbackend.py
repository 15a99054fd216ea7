"""The same real model gives the same answers on every backend, batched or looped.

PP-OCR's text-direction classifier on real text-line crops (skimage's page() and text()):
onnxruntime and OpenVINO agree (pinned f32: tight; bf16: a stated looser tolerance), and a
crop turned by 180 degrees flips the answer for a clear majority of crops.
"""
from __future__ import annotations

import numpy as np
import pytest

import runtimes
from runtimes import registry
from runtime_fixtures import cls_crops  # noqa: F401  (fixture)

BACKENDS = [b for b in ("onnxruntime", "openvino") if registry.is_available(b)]
F32_ATOL = 1e-5     # measured ~2e-6 between ORT and OpenVINO f32 on these crops
BF16_ATOL = 0.05    # measured ~0.027 max |p_bf16 - p_fp32| on these crops
BF16_MARGIN = 0.05  # bf16 labels must match wherever fp32 is at least this far from 0.5


@pytest.fixture(scope="module")
def crops(cls_crops):
    return cls_crops


@pytest.fixture(scope="module")
def ort_probs(cls_model, crops):
    with runtimes.load(cls_model, backend="onnxruntime") as rt:
        name = rt.outputs[0].name
        return {k: rt.infer(x)[name] for k, x in crops.items()}


@pytest.fixture(scope="module")
def cls_fixed_batch(cls_model, tmp_path_factory):
    """The classifier with its batch dim fixed to 1, so the runtime loops over a batch."""
    import onnx

    model = onnx.load(str(cls_model))
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = 1
    path = tmp_path_factory.mktemp("b1") / "ppocr_cls_b1.onnx"
    onnx.save(model, str(path))
    return path


def test_crops_are_real_text(crops):
    assert len(crops["upright"]) >= 30
    # not blank: each crop has ink darker than its paper (inputs are in [-1, 1])
    for x in crops["upright"]:
        filled = x[0][x[0] != 0]
        assert filled.max() - filled.min() > 0.4


@pytest.mark.skipif("openvino" not in BACKENDS, reason="needs the openvino extra")
def test_openvino_f32_matches_onnxruntime(cls_model, crops, ort_probs):
    with runtimes.load(cls_model, backend="openvino", precision="fp32") as rt:
        assert rt.precision == "fp32"
        name = rt.outputs[0].name
        for k, x in crops.items():
            got = rt.infer(x)[name]
            np.testing.assert_allclose(got, ort_probs[k], atol=F32_ATOL)
            np.testing.assert_array_equal(got.argmax(1), ort_probs[k].argmax(1))


@pytest.mark.skipif("openvino" not in BACKENDS, reason="needs the openvino extra")
def test_openvino_bf16_matches_within_the_bf16_tolerance(cls_model, crops, ort_probs):
    with runtimes.load(cls_model, backend="openvino", precision="bf16") as rt:
        if rt.precision != "bf16":
            pytest.skip(f"this CPU runs {rt.precision} when asked for bf16")
        name = rt.outputs[0].name
        for k, x in crops.items():
            got, ref = rt.infer(x)[name], ort_probs[k]
            assert np.abs(got - ref).max() <= BF16_ATOL
            assert np.abs(got - ref).max() > 1e-4  # bf16 really ran: it is not bit-close to f32
            sure = np.abs(ref[:, 1] - 0.5) >= BF16_MARGIN
            assert sure.mean() > 0.8
            np.testing.assert_array_equal(got.argmax(1)[sure], ref.argmax(1)[sure])


@pytest.mark.parametrize("backend", BACKENDS)
def test_turning_the_crop_180_degrees_flips_the_answer(cls_model, crops, backend):
    with runtimes.load(cls_model, backend=backend) as rt:
        name = rt.outputs[0].name
        up = rt.infer(crops["upright"])[name].argmax(1)    # label 0: "0 degrees"
        down = rt.infer(crops["flipped"])[name].argmax(1)  # label 1: "180 degrees"
    assert (up == 0).mean() >= 0.75
    assert (down == 1).mean() >= 0.75
    assert (up != down).mean() >= 0.75  # measured ~0.89: print is easy, handwriting is not


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_batched_call_equals_the_looped_fixed_batch_model(cls_model, cls_fixed_batch, crops, backend):
    x = crops["upright"][:8]
    with runtimes.load(cls_model, backend=backend) as dyn, runtimes.load(cls_fixed_batch, backend=backend) as fixed:
        assert dyn.max_batch is None and fixed.max_batch == 1
        name = dyn.outputs[0].name
        batched = dyn.infer(x)[name]
        looped = fixed.infer(x)[name]
        assert looped.shape == batched.shape == (8, 2)
        np.testing.assert_allclose(looped, batched, atol=F32_ATOL)
        np.testing.assert_allclose(fixed.submit(x).result(timeout=60)[name], batched, atol=F32_ATOL)
        np.testing.assert_allclose(dyn.submit(x).result(timeout=60)[name], batched, atol=F32_ATOL)


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two backends")
def test_batched_and_looped_agree_across_backends(cls_model, cls_fixed_batch, crops):
    x = crops["flipped"][:6]
    outs = []
    for backend in BACKENDS:
        for path in (cls_model, cls_fixed_batch):
            with runtimes.load(path, backend=backend) as rt:
                outs.append(rt.infer(x)[rt.outputs[0].name])
    for other in outs[1:]:
        np.testing.assert_allclose(other, outs[0], atol=F32_ATOL)
