"""Graph passes word an engine's failure in one line, even when the engine's exception says
nothing (runtimes.errors.first_line), and shapes print one way everywhere (runtimes.dims)."""
from __future__ import annotations

import pytest

from converters.passes import FoldConstants, PassContext, UpgradeOpset, load_onnx
from runtimes.dims import show_dims
from runtimes.errors import ConversionError, first_line
from runtimes.spec import TensorSpec


def test_first_line_of_multiline_blank_and_empty_messages():
    assert first_line(RuntimeError("\n  [ONNXRuntimeError] bad graph \nat line 2")) == "[ONNXRuntimeError] bad graph"
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(ValueError("x" * 500), 20) == "x" * 20


def test_upgrade_opset_failure_with_an_empty_message_is_a_conversion_error(cls_model, monkeypatch):
    from onnx import version_converter

    def refuse(model, target):
        raise RuntimeError()  # what a bare converter failure looks like: no text at all

    monkeypatch.setattr(version_converter, "convert_version", refuse)
    with pytest.raises(ConversionError, match=r"from opset 11 to 13 .*: RuntimeError; re-export"):
        UpgradeOpset()(load_onnx(cls_model), PassContext())


def test_fold_constants_failure_names_the_engine_error(cls_model, monkeypatch):
    import onnxruntime as ort

    def refuse(*args, **kwargs):
        raise RuntimeError("\n[ONNXRuntimeError] : 10 : INVALID_GRAPH : nope\nmore")

    monkeypatch.setattr(ort, "InferenceSession", refuse)
    with pytest.raises(ConversionError, match=r"constant folding failed .*: \[ONNXRuntimeError\] : 10 : INVALID_GRAPH : nope$"):
        FoldConstants()(load_onnx(cls_model), PassContext())


def test_shapes_print_one_way():
    assert show_dims([1, 3, None, None]) == "1x3x?x?"
    assert str(TensorSpec("x", (None, 3, 48, 192), "float32", "NCHW")) == "x: float32[?x3x48x192] NCHW"
