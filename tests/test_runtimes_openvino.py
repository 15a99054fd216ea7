"""OpenVINO backend: IR and ONNX, pinned precision read back, devices, native async, errors.

Runs on the real PP-OCR text-direction classifier (and its IR) and real text crops.
"""
from __future__ import annotations

import logging
import shutil
import sys
from concurrent.futures import as_completed

import numpy as np
import pytest

import runtimes
from runtimes import BackendUnavailableError, InferenceError, InputMismatchError, ModelLoadError
from runtimes import registry
from runtimes.openvino import OpenVINORuntime
from runtime_fixtures import cls_crops, fresh_warnings  # noqa: F401  (fixtures)

ov = pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def cls_ir(cls_model, tmp_path_factory):
    """The classifier saved as OpenVINO IR (fp32 weights)."""
    path = tmp_path_factory.mktemp("ir") / "ppocr_cls.xml"
    ov.save_model(ov.Core().read_model(str(cls_model)), str(path), compress_to_fp16=False)
    return path


@pytest.fixture(scope="module")
def crops(cls_crops):
    return cls_crops["upright"]


@pytest.fixture
def only_cpu(monkeypatch):
    """Make this host look like a CPU-only OpenVINO host, whatever it has."""
    monkeypatch.setattr(OpenVINORuntime, "_available_devices", staticmethod(lambda core: ["CPU"]))


def _cpu_has_bf16() -> bool:
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


# ----------------------------------------------------------------- formats and specs
def test_ir_and_onnx_give_the_same_outputs(cls_ir, cls_model, crops):
    with runtimes.load(cls_ir) as ir, runtimes.load(cls_model, backend="openvino") as onnx:
        assert isinstance(ir, OpenVINORuntime) and ir.backend == "openvino"
        spec = ir.inputs[0]
        assert spec.name == "x" and spec.shape == (None, 3, None, None)  # dynamic dims are None
        assert spec.dtype == np.float32 and spec.layout == "NCHW"
        assert ir.max_batch is None
        assert [o.name for o in ir.outputs] == [o.name for o in onnx.outputs]
        a, b = ir.infer(crops), onnx.infer(crops)
        name = ir.outputs[0].name
        assert a[name].shape == (len(crops), 2)
        np.testing.assert_allclose(a[name], b[name], atol=1e-6)


def test_runs_the_dynamic_shape_onnx_at_several_sizes(cls_model):
    with runtimes.load(cls_model, backend="openvino") as rt:
        for shape in [(1, 3, 48, 192), (3, 3, 48, 320), (2, 3, 64, 100)]:
            probs = rt.infer(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
            (out,) = probs.values()
            assert out.shape == (shape[0], 2)
            np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


# ----------------------------------------------------------------- precision
@pytest.mark.parametrize("asked", [None, "fp32"])
def test_fp32_is_pinned_and_read_back(cls_model, asked):
    with runtimes.load(cls_model, backend="openvino", precision=asked) as rt:
        assert rt.compiled_model.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
        assert rt.precision == "fp32" and rt.inference_precision == "fp32"
        assert rt.config["INFERENCE_PRECISION_HINT"] == "f32"


def test_bf16_request_reports_bf16_on_this_cpu(cls_model, fresh_warnings, caplog):
    if not _cpu_has_bf16():
        pytest.skip("this CPU has no bf16 compute; the bf16 path is exercised on AVX-512 BF16/AMX hosts")
    with caplog.at_level(logging.WARNING, logger="runtimes"):
        with runtimes.load(cls_model, backend="openvino", precision="bf16") as rt:
            assert rt.compiled_model.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
            assert rt.precision == "bf16"
    assert not caplog.records  # it got what it asked for: nothing to warn about


def test_fp16_request_reports_what_really_runs(cls_model, fresh_warnings, caplog):
    with caplog.at_level(logging.WARNING, logger="runtimes"):
        with runtimes.load(cls_model, backend="openvino", precision="fp16") as rt:
            runs = rt.compiled_model.get_property("INFERENCE_PRECISION_HINT").get_type_name()
            assert rt.precision == {"f16": "fp16", "bf16": "bf16", "f32": "fp32"}[runs]
    if rt.precision != "fp16":  # e.g. this CPU: no fp16 compute, the plugin picks bf16
        assert f"asked for fp16 but runs {rt.precision}" in caplog.text


def test_int8_request_on_a_float_model_warns_and_runs_fp32(cls_model, fresh_warnings, caplog):
    with caplog.at_level(logging.WARNING, logger="runtimes"):
        with runtimes.load(cls_model, backend="openvino", precision="int8") as rt:
            assert rt.precision == "fp32"
    assert "holds no int8 quantization" in caplog.text


def test_unknown_precision_is_refused(cls_model):
    with pytest.raises(ValueError, match="precision 'fp8'"):
        runtimes.load(cls_model, backend="openvino", precision="fp8").activate()


def test_threads_and_throughput_hint_reach_the_engine(cls_model):
    with runtimes.load(cls_model, backend="openvino", threads=1, performance_hint="throughput") as rt:
        assert rt.compiled_model.get_property("INFERENCE_NUM_THREADS") == 1
        assert str(rt.compiled_model.get_property("PERFORMANCE_HINT")).upper().endswith("THROUGHPUT")


# ----------------------------------------------------------------- devices
def test_missing_gpu_falls_back_to_cpu_and_logs_once(cls_model, only_cpu, fresh_warnings, caplog):
    with caplog.at_level(logging.WARNING, logger="runtimes"):
        for _ in range(2):
            with runtimes.load(cls_model, backend="openvino", device="GPU") as rt:
                assert rt.requested_device == "GPU" and rt.device == "CPU"
                assert rt.precision == "fp32"
    fallbacks = [r for r in caplog.records if "falling back to CPU" in r.getMessage()]
    assert len(fallbacks) == 1


def test_missing_npu_walks_npu_gpu_cpu(cls_model, only_cpu, fresh_warnings, caplog):
    with caplog.at_level(logging.WARNING, logger="runtimes"):
        with runtimes.load(cls_model, backend="openvino", device="npu") as rt:
            assert rt.device == "CPU"
    assert "no NPU device" in caplog.text and "no GPU device" in caplog.text


@pytest.mark.parametrize("device", ["GPU", "NPU"])
def test_missing_device_with_strict_raises(cls_model, only_cpu, device):
    rt = runtimes.load(cls_model, backend="openvino", device=device, strict=True)
    with pytest.raises(BackendUnavailableError, match=f"no {device} device"):
        rt.activate()


def test_no_device_at_all_raises_even_without_strict(cls_model, monkeypatch):
    monkeypatch.setattr(OpenVINORuntime, "_available_devices", staticmethod(lambda core: []))
    with pytest.raises(BackendUnavailableError, match="no CPU device"):
        runtimes.load(cls_model, backend="openvino").activate()


def test_auto_device_keeps_the_f32_pin(cls_model, crops):
    with runtimes.load(cls_model, backend="openvino", device="AUTO") as auto, \
            runtimes.load(cls_model, backend="openvino") as cpu:
        assert auto.device == "AUTO" and auto.precision == "fp32"
        name = auto.outputs[0].name
        np.testing.assert_allclose(auto.infer(crops[:8])[name], cpu.infer(crops[:8])[name], atol=1e-5)


# ----------------------------------------------------------------- async
def test_submit_runs_several_in_flight_and_each_future_gets_its_own_result(cls_model, crops):
    with runtimes.load(cls_model, backend="openvino", num_requests=3) as rt:
        name = rt.outputs[0].name
        singles = [crops[i:i + 1] for i in range(12)]
        futures = {rt.submit(x): i for i, x in enumerate(singles)}
        assert rt.num_requests == 3
        done = [futures[f] for f in as_completed(futures, timeout=60)]
        assert sorted(done) == list(range(12))
        for future, i in futures.items():
            np.testing.assert_allclose(future.result()[name], rt.infer(singles[i])[name], atol=1e-5)
        # a whole batch in one future, and the caller may overwrite its array right away
        batch = crops[:6].copy()
        future = rt.submit(batch)
        batch[:] = 0
        np.testing.assert_allclose(future.result(timeout=60)[name], rt.infer(crops[:6])[name], atol=1e-5)


def test_engine_failure_is_an_inference_error_sync_and_async(cls_model):
    # dims are dynamic, so a 1x1 image passes the checks; the model's pooling cannot take it
    tiny = np.zeros((1, 3, 1, 1), np.float32)
    with runtimes.load(cls_model, backend="openvino", num_requests=2) as rt:
        with pytest.raises(InferenceError, match="openvino failed on ppocr_cls.onnx"):
            rt.infer(tiny)
        failed = [rt.submit(tiny) for _ in range(3)]  # more than the pool: requests come back
        for f in failed:
            with pytest.raises(InferenceError, match="openvino failed"):
                f.result(timeout=60)
        assert 1 <= rt.recoveries <= 4  # the sync failure, then once per failed generation
        for _ in range(3):  # every request of the pool failed once; all must work again
            ok = rt.submit(np.zeros((1, 3, 48, 192), np.float32)).result(timeout=60)
            assert next(iter(ok.values())).shape == (1, 2)
        assert next(iter(rt.infer(np.zeros((1, 3, 48, 192), np.float32)).values())).shape == (1, 2)


def test_close_and_activate_again(cls_model):
    rt = runtimes.load(cls_model, backend="openvino")
    with rt:
        first = rt.infer(np.ones((1, 3, 48, 192), np.float32))
        rt.submit(np.ones((1, 3, 48, 192), np.float32)).result(timeout=60)
    rt.activate()
    again = rt.infer(np.ones((1, 3, 48, 192), np.float32))
    rt.close()
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])


# ----------------------------------------------------------------- errors
def test_corrupt_xml_is_a_model_load_error(cls_ir, tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text(cls_ir.read_text()[:400])
    shutil.copy(cls_ir.with_suffix(".bin"), tmp_path / "bad.bin")
    with pytest.raises(ModelLoadError, match="openvino could not read bad.xml.*complete OpenVINO IR"):
        runtimes.load(bad).activate()


def test_truncated_bin_is_a_model_load_error(cls_ir, tmp_path):
    xml = tmp_path / "cut.xml"
    shutil.copy(cls_ir, xml)
    weights = cls_ir.with_suffix(".bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ModelLoadError, match="could not read cut.xml.*weights"):
        runtimes.load(xml).activate()


def test_missing_bin_is_a_model_load_error(cls_ir, tmp_path):
    xml = tmp_path / "alone.xml"
    shutil.copy(cls_ir, xml)
    with pytest.raises(ModelLoadError, match="weights file alone.bin is missing"):
        runtimes.load(xml).activate()


@pytest.mark.parametrize("feeds, needle", [
    (np.zeros((1, 3, 48, 192), np.float64), "expects dtype float32, got float64"),
    (np.zeros((1, 48, 192, 3), np.float32), "axis 1: 3 != 48"),
    (np.zeros((3, 48, 192), np.float32), "expects rank 4"),
    ({"image": np.zeros((1, 3, 48, 192), np.float32)}, "missing ['x']"),
])
def test_wrong_input_never_reaches_the_engine(cls_model, monkeypatch, feeds, needle):
    with runtimes.load(cls_model, backend="openvino") as rt:
        def engine(*_a, **_k):
            raise AssertionError("the engine was called with a wrong input")
        monkeypatch.setattr(rt, "_infer_impl", engine)
        monkeypatch.setattr(rt, "_submit_impl", engine)
        with pytest.raises(InputMismatchError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            rt.infer(feeds)
        with pytest.raises(InputMismatchError):
            rt.submit(feeds)


def test_missing_engine_per_registry_probe_names_the_extra(cls_ir, monkeypatch):
    module, cls, _, extra = registry.BACKENDS["openvino"]
    monkeypatch.setitem(registry.BACKENDS, "openvino", (module, cls, ("no_such_openvino_module",), extra))
    assert "openvino" not in runtimes.available_backends()
    with pytest.raises(BackendUnavailableError, match=r"pip install 'edgesdk\[openvino\]'"):
        runtimes.load(cls_ir)


def test_engine_import_failure_names_the_extra(cls_model, monkeypatch):
    rt = runtimes.load(cls_model, backend="openvino")
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    with pytest.raises(BackendUnavailableError, match=r"pip install 'edgesdk\[openvino\]'"):
        rt.activate()


# ----------------------------------------------------------------- the lean call path
@pytest.fixture
def two_outputs(tmp_path):
    """x [N, 4] -> zeta = x + 1, alpha = 2 x: outputs whose names do not sort in graph order."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in ("zeta", "alpha")]
    inits = [numpy_helper.from_array(np.array([1.0], np.float32), "one"),
             numpy_helper.from_array(np.array([2.0], np.float32), "two")]
    nodes = [helper.make_node("Add", ["x", "one"], ["zeta"]), helper.make_node("Mul", ["x", "two"], ["alpha"])]
    model = helper.make_model(helper.make_graph(nodes, "two_outputs", [x], outs, inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "two_outputs.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "public-api"])
def test_outputs_and_inputs_keep_their_names_on_both_call_paths(two_outputs, tiny_models, direct):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    with runtimes.load(two_outputs, backend="openvino", direct_call=direct) as rt, \
            runtimes.load(tiny_models.two_inputs(), backend="openvino", direct_call=direct) as mul:
        assert (rt._direct is not None) == direct
        out = rt.infer(x)
        assert list(out) == ["zeta", "alpha"]
        np.testing.assert_array_equal(out["zeta"], x + 1)
        np.testing.assert_array_equal(out["alpha"], 2 * x)
        got = mul.infer({"b": np.full((3, 4), 3, np.float32), "a": x})  # dict order is not input order
        np.testing.assert_array_equal(got["z"], 3 * x)


def test_non_contiguous_input_gives_the_same_answer(cls_model, crops):
    x = np.ascontiguousarray(crops[:2])
    strided = np.asfortranarray(x)  # same values and shape, other memory order
    assert not strided.flags.c_contiguous
    with runtimes.load(cls_model, backend="openvino") as rt:
        name = rt.outputs[0].name
        np.testing.assert_array_equal(rt.infer(strided)[name], rt.infer(x)[name])


def test_failed_calls_and_freed_inputs_do_not_break_later_calls(cls_model):
    """Two engine traps: a request that failed stays broken (OpenVINO 2026.4 CPU: every later
    call on it raises the old error), and the lean path's shared input Tensors must not outlive
    the caller's arrays (that aborted pytest with heap corruption in ~40% of runs)."""
    rng = np.random.default_rng(0)
    rt = runtimes.load(cls_model, backend="openvino", num_requests=2)
    for _ in range(2):
        with rt:
            for _ in range(3):
                with pytest.raises(InferenceError):
                    rt.infer(np.zeros((1, 3, 1, 1), np.float32))  # a temporary, freed at once
                good = rt.infer(np.asfortranarray(rng.standard_normal((2, 3, 48, 192)).astype(np.float32)))
                junk = [np.ones(n, np.float32) for n in range(1, 200, 7)]  # reuse freed memory
                del junk
                assert np.isfinite(next(iter(good.values()))).all()
            assert rt.recoveries == 3  # one recompile per failure
            rt.submit(rng.standard_normal((1, 3, 48, 192)).astype(np.float32)).result(timeout=60)
