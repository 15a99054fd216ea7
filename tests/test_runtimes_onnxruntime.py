"""onnxruntime backend: providers per device with fallback, run_async futures, engine errors,
and the registry that picks a backend."""
from __future__ import annotations

import logging
import sys
from concurrent.futures import as_completed

import numpy as np
import pytest

import runtimes
from runtimes import BackendUnavailableError, InferenceError, ModelLoadError
from runtimes.onnxruntime import OnnxRuntime
from runtime_fixtures import fresh_warnings  # noqa: F401  (fixture)

ort = pytest.importorskip("onnxruntime")


@pytest.fixture
def only_cpu_providers(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])


@pytest.fixture
def reshape_to_four(tmp_path):
    """x [N, M] -> Reshape to [4]: any input passes the checks, only 4 elements run."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "M"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    shape = numpy_helper.from_array(np.array([4], np.int64), "shape")
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "r", [x], [y], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "reshape4.onnx"
    onnx.save(model, str(path))
    return path


def test_missing_gpu_provider_falls_back_to_cpu_once(cls_model, only_cpu_providers, fresh_warnings, caplog):
    with caplog.at_level(logging.WARNING, logger="runtimes"):
        for _ in range(2):
            with runtimes.load(cls_model, device="GPU") as rt:
                assert rt.device == "CPU" and rt.providers == ["CPUExecutionProvider"]
    assert sum("falling back to CPU" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("device", ["GPU", "NPU"])
def test_missing_provider_with_strict_raises(cls_model, only_cpu_providers, device):
    with pytest.raises(BackendUnavailableError, match=f"no execution provider for {device}"):
        runtimes.load(cls_model, device=device, strict=True).activate()


def test_auto_takes_what_is_there(cls_model, only_cpu_providers):
    with runtimes.load(cls_model, device="AUTO") as rt:
        assert rt.device == "AUTO" and rt.providers == ["CPUExecutionProvider"]


def test_precision_request_warns_and_threads_are_set(cls_model, fresh_warnings, caplog):
    with caplog.at_level(logging.WARNING, logger="runtimes"):
        with runtimes.load(cls_model, precision="fp16", threads=1) as rt:
            assert rt.precision == "fp32"  # what the file holds, not what was asked
            assert rt.session.get_session_options().intra_op_num_threads == 1
    assert "stored in (fp32); convert the model" in caplog.text


@pytest.fixture
def qdq_model(tmp_path):
    """x -> QuantizeLinear -> DequantizeLinear -> y: the QDQ form of an int8 model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "qdq", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "qdq.onnx"
    onnx.save(model, str(path))
    return path


def test_precision_says_what_the_model_holds(cls_model, qdq_model, tiny_models, monkeypatch):
    with runtimes.load(qdq_model) as rt:
        assert rt.precision == "int8"
        np.testing.assert_array_equal(rt.infer(np.array([[0.9, 1.1, -3, 100]], np.float32))["y"],
                                      [[1.0, 1.0, -3.0, 63.5]])  # rounded to 0.5 steps, saturated
    with runtimes.load(tiny_models.add_one(dtype=np.float16)) as rt:
        assert rt.precision == "fp16"
    monkeypatch.setitem(sys.modules, "onnx", None)  # a device without the onnx package
    with runtimes.load(cls_model) as rt:
        assert rt.precision == "native"


def test_run_async_futures_each_get_their_own_result(cls_model):
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1, 3, 48, 192)).astype(np.float32) for _ in range(10)]
    with runtimes.load(cls_model) as rt:
        name = rt.outputs[0].name
        futures = {rt.submit(x): i for i, x in enumerate(xs)}
        assert sorted(futures[f] for f in as_completed(futures, timeout=60)) == list(range(10))
        for f, i in futures.items():
            np.testing.assert_allclose(f.result()[name], rt.infer(xs[i])[name], atol=1e-6)


def test_engine_failure_is_an_inference_error_sync_and_async(reshape_to_four):
    with runtimes.load(reshape_to_four) as rt:
        np.testing.assert_array_equal(rt.infer(np.ones((2, 2), np.float32))["y"], np.ones(4))
        with pytest.raises(InferenceError, match="onnxruntime failed on reshape4.onnx"):
            rt.infer(np.ones((3, 3), np.float32))
        with pytest.raises(InferenceError, match="onnxruntime failed on reshape4.onnx"):
            rt.submit(np.ones((3, 3), np.float32)).result(timeout=60)
        np.testing.assert_array_equal(rt.infer(np.ones((2, 2), np.float32))["y"], np.ones(4))  # still works


def test_missing_onnxruntime_names_the_package(cls_model, monkeypatch):
    rt = runtimes.load(cls_model)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailableError, match="pip install onnxruntime"):
        rt.activate()


# ----------------------------------------------------------------- registry
def test_backend_by_suffix_and_by_name(cls_model, blazeface_model, tmp_path):
    assert type(runtimes.load(cls_model)) is OnnxRuntime
    assert runtimes.load(cls_model, backend="ov").backend == "openvino"  # OpenVINO runs .onnx too
    assert runtimes.load(blazeface_model).backend == "litert"
    assert runtimes.backend_for("model.XML") == "openvino"
    available = runtimes.available_backends()
    assert "onnxruntime" in available
    assert all(runtimes.backend_class(b).backend == b for b in available)
    with pytest.raises(ModelLoadError, match="onnxruntime backend cannot run .tflite"):
        runtimes.load(blazeface_model, backend="onnxruntime")
