"""FLOPs / parameter / size counting on hand-checkable graphs and the real PP-OCR models."""
from __future__ import annotations

import pytest

onnx = pytest.importorskip("onnx")

from converters.errors import ConversionError  # noqa: E402
from converters.flops import count  # noqa: E402


def test_conv_net_flops_by_hand(tiny_models):
    path = tiny_models.conv_net(size=16, channels=(8, 16))
    cost = count(path)  # dynamic batch counts as 1
    conv0 = 2 * (8 * 16 * 16) * (3 * 3 * 3)
    conv1 = 2 * (16 * 16 * 16) * (8 * 3 * 3)
    fc = 2 * 10 * 16
    assert cost.complete
    assert cost.flops == conv0 + conv1 + fc
    assert cost.params == 8 * 27 + 8 + 16 * 72 + 16 + 160 + 10
    assert cost.size_bytes == onnx.load(str(path)).ByteSize()
    assert count(path, {"x": [4, 3, 16, 16]}).flops == 4 * cost.flops
    assert {l.op_type for l in cost.layers} == {"Conv", "Gemm"}


def test_wrong_rank_shape_is_refused(tiny_models):
    with pytest.raises(ConversionError, match="rank"):
        count(tiny_models.conv_net(), {"x": [1, 3, 16]})


def test_detector_needs_its_input_size(det_model):
    cost = count(det_model, {"x": [1, 3, 640, 640]})
    assert cost.complete and 4.0e9 < cost.flops < 5.5e9   # ConvTranspose and depthwise included
    assert cost.params == 1171841
    partial = count(det_model)  # dynamic H, W: the convolutions cannot be counted, and it says so
    assert not partial.complete and len(partial.uncounted) > 40


def test_shapes_behind_computed_reshapes_are_found_by_running(cls_model, model_paths):
    # the classifier's final MatMul sits behind Shape -> Slice -> Concat -> Reshape, and the
    # recognizer's attention MatMuls behind computed reshapes: shape inference alone misses them
    cls = count(cls_model, {"x": [1, 3, 48, 192]})
    assert cls.complete and any(l.op_type == "MatMul" for l in cls.layers)
    rec = count(model_paths["ppocrv4_rec.onnx"], {"x": [1, 3, 48, 320]})
    assert rec.complete and sum(l.op_type == "MatMul" for l in rec.layers) == 13
