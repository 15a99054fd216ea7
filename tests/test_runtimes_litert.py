"""LiteRT backend: the real BlazeFace model on real photos, NHWC specs, quantized tensors,
dynamic batch by resize, the engine import ladder, devices and error paths."""
from __future__ import annotations

import logging
import sys
import threading
import types

import cv2
import numpy as np
import pytest

import runtimes
from runtimes import BackendUnavailableError, InputMismatchError, ModelLoadError
from runtimes import registry
from runtimes import litert as litert_mod
from runtimes.litert import LiteRTRuntime

pytest.importorskip("ai_edge_litert")
import tinytflite  # noqa: E402  (needs ai_edge_litert's schema)
from runtime_fixtures import fresh_warnings  # noqa: E402,F401  (fixture)


def blazeface_input(bgr: np.ndarray) -> np.ndarray:
    """1x128x128x3 RGB float in [-1, 1], as BlazeFace short range takes it."""
    rgb = cv2.cvtColor(cv2.resize(bgr, (128, 128), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    return (rgb.astype(np.float32) / 127.5 - 1.0)[None]


def face_score(outputs: dict) -> float:
    logits = outputs["classificators"].astype(np.float64)
    return float((1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))).max())


@pytest.fixture(scope="module")
def face_rt(blazeface_model):
    with runtimes.load(blazeface_model, threads=2) as rt:
        yield rt


# ----------------------------------------------------------------- the real model
def test_blazeface_finds_the_face_and_no_face_where_there_is_none(face_rt):
    from realdata import faces, no_faces

    assert isinstance(face_rt, LiteRTRuntime) and face_rt.device == "CPU"
    for img in faces():
        assert face_score(face_rt.infer(blazeface_input(img))) > 0.7
    for img in no_faces():
        assert face_score(face_rt.infer(blazeface_input(img))) < 0.5


def test_specs_are_nhwc_with_fixed_batch_one(face_rt):
    (inp,) = face_rt.inputs
    assert inp.name == "input" and inp.shape == (1, 128, 128, 3) and inp.layout == "NHWC"
    assert inp.dtype == np.float32 and inp.quantization is None
    assert {o.name: o.shape for o in face_rt.outputs} == {"regressors": (1, 896, 16), "classificators": (1, 896, 1)}
    assert face_rt.max_batch == 1 and face_rt.precision == "fp32"


def test_fixed_batch_is_looped_and_equals_one_by_one(face_rt, photos):
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera"]
    batch = np.concatenate([blazeface_input(photos[n]) for n in names])
    together = face_rt.infer(batch)
    assert together["classificators"].shape == (5, 896, 1)
    for i, n in enumerate(names):
        alone = face_rt.infer(batch[i:i + 1])
        for k in alone:
            np.testing.assert_array_equal(together[k][i:i + 1], alone[k])
    async_out = face_rt.submit(batch).result(timeout=60)
    np.testing.assert_array_equal(async_out["regressors"], together["regressors"])


def test_xnnpack_off_gives_the_same_answer(blazeface_model, photos):
    x = blazeface_input(photos["astronaut"])
    with runtimes.load(blazeface_model) as on, runtimes.load(blazeface_model, xnnpack=False) as off:
        a, b = on.infer(x), off.infer(x)
    np.testing.assert_allclose(a["classificators"], b["classificators"], atol=1e-3)
    assert abs(face_score(a) - face_score(b)) < 1e-3


def test_interpreter_is_guarded_against_concurrent_callers(face_rt, photos):
    """Threads calling infer and submit at once on one interpreter still get their own answers."""
    inputs = [blazeface_input(photos[n]) for n in ("astronaut", "coffee", "rocket", "horse")]
    expected = [face_rt.infer(x)["classificators"] for x in inputs]
    errors = []

    def worker(k: int) -> None:
        for j in range(6):
            i = (k + j) % len(inputs)
            out = face_rt.infer(inputs[i]) if j % 2 else face_rt.submit(inputs[i]).result(timeout=60)
            if not np.array_equal(out["classificators"], expected[i]):
                errors.append((k, j))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# ----------------------------------------------------------------- batching and quantization
def test_dynamic_batch_is_one_resized_call_and_equals_the_looped_model(tmp_path):
    dyn, fixed = tinytflite.double(tmp_path, dynamic_batch=True), tinytflite.double(tmp_path, dynamic_batch=False)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with runtimes.load(dyn) as d, runtimes.load(fixed) as f:
        assert d.inputs[0].shape == (None, 4) and d.max_batch is None
        assert f.inputs[0].shape == (1, 4) and f.max_batch == 1
        calls = []
        real = d._interp.invoke
        d._interp.invoke = lambda: (calls.append(1), real())[1]
        one_call = d.infer(x)["y"]
        assert len(calls) == 1  # the whole batch in one engine call
        np.testing.assert_array_equal(one_call, 2 * x)
        np.testing.assert_array_equal(one_call, f.infer(x)["y"])
        np.testing.assert_array_equal(d.infer(x[:2])["y"], 2 * x[:2])  # shrinks back
        np.testing.assert_array_equal(d.submit(x).result(timeout=60)["y"], 2 * x)


def test_quantized_tensors_expose_scale_and_zero_point(tmp_path):
    with runtimes.load(tinytflite.requantize(tmp_path)) as rt:
        (inp,), (out,) = rt.inputs, rt.outputs
        assert inp.dtype == np.uint8 and inp.quantization == tinytflite.IN_QUANT
        assert out.dtype == np.int8 and out.quantization == tinytflite.OUT_QUANT
        assert rt.precision == "int8"
        q = np.array([[128, 130, 100, 250]], np.uint8)
        got = rt.infer(q)["q_out"]
        # real = 0.5 * (q - 128); q_out = round(real / 0.25), saturated to int8
        want = np.clip(np.round(0.5 * (q.astype(np.float64) - 128) / 0.25), -128, 127).astype(np.int8)
        np.testing.assert_array_equal(got, want)
        with pytest.raises(InputMismatchError, match="expects dtype uint8, got float32"):
            rt.infer(q.astype(np.float32))


def test_asking_for_another_precision_warns(blazeface_model, fresh_warnings, caplog):
    with caplog.at_level(logging.WARNING, logger="runtimes"):
        with runtimes.load(blazeface_model, precision="int8") as rt:
            assert rt.precision == "fp32"
    assert "precision it is stored in (fp32)" in caplog.text


# ----------------------------------------------------------------- engine and devices
def test_engine_ladder_prefers_ai_edge_litert_then_falls_back(monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    assert litert_mod.import_interpreter()[2] == "ai_edge_litert.interpreter"
    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter, fake.load_delegate = Interpreter, None
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    assert litert_mod.import_interpreter()[2] == "tflite_runtime.interpreter"


def test_no_engine_at_all_names_the_extra(blazeface_model, monkeypatch):
    for name in litert_mod.ENGINES:
        monkeypatch.setitem(sys.modules, name, None)
    rt = runtimes.load(blazeface_model)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'edgesdk\[litert\]'"):
        rt.activate()


def test_missing_engine_per_registry_probe_names_the_extra(blazeface_model, monkeypatch):
    module, cls, _, extra = registry.BACKENDS["litert"]
    monkeypatch.setitem(registry.BACKENDS, "litert", (module, cls, ("no_such_tflite_module",), extra))
    with pytest.raises(BackendUnavailableError, match=r"pip install 'edgesdk\[litert\]'"):
        runtimes.load(blazeface_model)


def test_missing_npu_delegate_falls_back_once_or_raises_when_strict(blazeface_model, fresh_warnings, caplog):
    with caplog.at_level(logging.WARNING, logger="runtimes"):
        for _ in range(2):
            with runtimes.load(blazeface_model, device="NPU", delegate="/nonexistent/libedgetpu.so.1") as rt:
                assert rt.device == "CPU"
    assert sum("no NPU delegate" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(BackendUnavailableError, match="no NPU delegate"):
        runtimes.load(blazeface_model, device="NPU", delegate="/nonexistent/libedgetpu.so.1", strict=True).activate()


# ----------------------------------------------------------------- errors
def test_corrupt_tflite_is_a_model_load_error(blazeface_model, tmp_path):
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(blazeface_model.read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="litert could not load cut.tflite"):
        runtimes.load(bad).activate()


def test_custom_operator_is_named_with_what_to_do(model_paths, tmp_path, capsys):
    """A real MediaPipe model with a custom op: the refusal names the operator, not a cut file,
    and convert stops before writing anything."""
    from clitools import cli

    model = model_paths["face_landmark_with_attention.tflite"]
    with pytest.raises(ModelLoadError, match="custom operator Landmarks2TransformMatrix") as err:
        runtimes.load(model).activate()
    assert "re-download" not in str(err.value)
    code, _, errs = cli(["convert", str(model), "-p", "amd-epyc-zen4", "-o", str(tmp_path / "b")], capsys)
    assert code != 0 and "custom operator Landmarks2TransformMatrix" in errs and "Traceback" not in errs
    assert not (tmp_path / "b").exists()


def test_litert_refuses_other_formats(cls_model):
    with pytest.raises(ModelLoadError, match="litert backend cannot run .onnx"):
        runtimes.load(cls_model, backend="litert")


@pytest.mark.parametrize("feeds, needle", [
    (np.zeros((1, 3, 128, 128), np.float32), "axis 1: 128 != 3"),  # NCHW given to an NHWC model
    (np.zeros((1, 128, 128, 3), np.uint8), "expects dtype float32, got uint8"),
    (np.zeros((128, 128, 3), np.float32), "expects rank 4"),
])
def test_wrong_input_is_refused(face_rt, feeds, needle):
    with pytest.raises(InputMismatchError, match=needle):
        face_rt.infer(feeds)
