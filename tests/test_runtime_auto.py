"""Load errors that say what the engine refused, and backend="auto"."""
from __future__ import annotations

import logging

import numpy as np
import pytest

import runtimes
from runtimes import BackendUnavailableError, ModelLoadError
from runtimes.base import _warned


def _model(tmp_path, name, node, opset, domain_opsets=()):
    import onnx
    from onnx import TensorProto as T, helper

    x = helper.make_tensor_value_info("x", T.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", T.FLOAT, [2, 3])
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in domain_opsets]
    model = helper.make_model(helper.make_graph([node], name, [x], [y]), opset_imports=opsets)
    model.ir_version = 7
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture
def old_opset_add(tmp_path):
    """Add at opset 6, for which onnxruntime has no kernel (its Add kernels start at 7)."""
    from onnx import helper
    return _model(tmp_path, "add6", helper.make_node("Add", ["x", "x"], ["y"]), opset=6)


def test_refused_operator_is_named_with_opset_and_what_to_do(old_opset_add):
    with pytest.raises(ModelLoadError) as err:
        runtimes.load(old_opset_add, backend="onnxruntime").activate()
    text = str(err.value)
    assert "operator Add at opset 6" in text and "imports opset ai.onnx 6" in text
    assert "backend='auto'" in text
    assert err.value.refused["operator"] == "Add" and err.value.refused["opset"] == "6"


def test_auto_falls_back_and_logs_once(old_opset_add, caplog):
    _warned.clear()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with caplog.at_level(logging.WARNING, logger="runtimes"):
        for _ in range(2):
            with runtimes.load(old_opset_add, backend="auto") as rt:
                np.testing.assert_array_equal(rt.infer(x)["y"], 2 * x)
    fallbacks = [r for r in caplog.records if "backend='auto'" in r.getMessage()]
    assert len(fallbacks) == 1
    assert "operator Add at opset 6" in fallbacks[0].getMessage()
    assert rt.backend in ("openvino", "onnxruntime")


def test_auto_converts_the_opset_when_no_backend_takes_the_model_as_is(old_opset_add, monkeypatch):
    from runtimes import registry
    monkeypatch.setattr(registry, "available_backends", lambda: ["onnxruntime"])
    with runtimes.load(old_opset_add, backend="auto") as rt:
        assert rt.backend == "onnxruntime"
        assert rt.converted_from == old_opset_add
        assert "opset" in rt.model_path.name and rt.model_path.parent != old_opset_add.parent
        x = np.ones((2, 3), np.float32)
        np.testing.assert_array_equal(rt.infer(x)["y"], 2 * x)


def test_auto_says_what_every_backend_refused(tmp_path):
    from onnx import helper
    path = _model(tmp_path, "custom", helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example"),
                  opset=17, domain_opsets=[("com.example", 1)])
    with pytest.raises(ModelLoadError) as err:
        runtimes.load(path, backend="auto")
    text = str(err.value)
    assert "no installed backend loads custom.onnx" in text
    assert "onnxruntime" in text and "Frobnicate" in text
    if "openvino" in runtimes.available_backends():
        assert "openvino:" in text


def test_auto_on_missing_corrupt_and_unknown_files(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        runtimes.load(tmp_path / "missing.onnx", backend="auto")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelLoadError, match="no installed backend loads corrupt.onnx"):
        runtimes.load(corrupt, backend="AUTO")
    with pytest.raises(ModelLoadError, match="cannot tell the model format"):
        (tmp_path / "model.weird").write_bytes(b"x")
        runtimes.load(tmp_path / "model.weird", backend="auto")


def test_backend_names_are_checked_without_loading_anything():
    from runtimes.registry import check_backend_name
    assert check_backend_name("AUTO") == "auto" and check_backend_name("ov") == "openvino"
    assert check_backend_name(None) is None
    with pytest.raises(BackendUnavailableError, match="unknown backend 'no-such-backend'.*auto"):
        check_backend_name("no-such-backend")


def test_real_model_loads_on_auto_without_a_fallback(cls_model, caplog):
    with caplog.at_level(logging.WARNING, logger="runtimes"):
        with runtimes.load(cls_model, backend="auto") as rt:
            assert rt.backend == "onnxruntime"
            assert rt.infer(np.zeros((1, 3, 48, 192), np.float32))
    assert not [r for r in caplog.records if "backend='auto'" in r.getMessage()]


@pytest.mark.parametrize("case, backend, named", [
    ("test_wrap_pad", "openvino", "cannot convert operator Pad at opset 25 (Unsupported padding mode: [wrap])"),
    ("test_unsqueeze_unsorted_axes", "openvino", "does not support operator Unsqueeze when its input rank"),
    ("test_top_k_uint64", "onnxruntime", "no kernel for operator TopK at opset 24"),
    ("test_momentum", "onnxruntime", "does not know operator Momentum (domain 'ai.onnx.preview.training'"),
])
def test_real_engine_refusals_are_named(case, backend, named):
    """Conformance models the engines really refuse (not models written for this test)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import conformance

    if backend not in runtimes.available_backends():
        pytest.skip(f"{backend} is not installed")
    folder = {conformance.case_name(c): c for c in conformance.corpus()[0]}[case]
    with pytest.raises(ModelLoadError) as err:
        runtimes.load(folder / "model.onnx", backend=backend).activate()
    assert named in str(err.value) and "backend='auto'" in str(err.value)
