"""float16 ONNX models (weights, I/O and casts in float16, as onnxconverter-common writes them)
convert to INT8: prepare widens them to float32 (converters/fp16_io.py) and says so."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from clitools import cli
from converters.fp16_io import FLOAT16, is_float16_model, to_float32, with_float16_io
from edgesdk import Bundle
from convdata import cls_crops, cls_samples, write_images

#: float16 keeps ~3 decimal digits: softmax scores of the float16 and the widened model agree to this
FP16_ATOL = 1e-2


def _float16(model_path, keep_io_types: bool) -> onnx.ModelProto:
    float16 = pytest.importorskip("onnxconverter_common.float16")
    return float16.convert_float_to_float16(onnx.load(str(model_path)), keep_io_types=keep_io_types)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed_type = np.float16 if "float16" in sess.get_inputs()[0].type else np.float32
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(feed_type)})[0].astype(np.float32)


def _has_float16(model: onnx.ModelProto) -> bool:
    g = model.graph
    return (any(t.data_type == FLOAT16 for t in g.initializer)
            or any(v.type.tensor_type.elem_type == FLOAT16 for v in [*g.input, *g.output, *g.value_info])
            or any(a.HasField("t") and a.t.data_type == FLOAT16 for n in g.node for a in n.attribute)
            or any(n.op_type == "Cast" and a.name == "to" and a.i == FLOAT16 for n in g.node for a in n.attribute))


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return cls_samples("calibration")[:16]


@pytest.mark.parametrize("keep_io_types", [False, True], ids=["fp16-io", "fp32-io-fp16-inside"])
def test_widened_model_matches_the_float16_model(cls_model, crops, keep_io_types):
    half = _float16(cls_model, keep_io_types)
    assert is_float16_model(half)
    wide, changes = to_float32(half)
    onnx.checker.check_model(wide)
    assert not _has_float16(wide) and not is_float16_model(wide)
    assert changes and "float16 -> float32" in changes[0]
    assert any("graph I/O" in c for c in changes) == (not keep_io_types)
    if keep_io_types:  # the input's Cast to float16 is float32 -> float32 now: gone
        assert sum(n.op_type == "Cast" for n in wide.graph.node) < sum(n.op_type == "Cast" for n in half.graph.node)
    want, got = _run(half, crops), _run(wide, crops)
    np.testing.assert_allclose(got, want, atol=FP16_ATOL)
    assert (got.argmax(1) == want.argmax(1)).mean() >= 15 / 16
    assert half.graph.input[0].type.tensor_type.elem_type == (1 if keep_io_types else FLOAT16)  # input untouched


def test_a_float32_model_passes_unchanged(cls_model):
    model = onnx.load(str(cls_model))
    assert not is_float16_model(model)
    same, changes = to_float32(model)
    assert same is model and changes == []


def test_with_float16_io_restores_the_float16_contract(cls_model, crops):
    wide, _ = to_float32(_float16(cls_model, keep_io_types=False))
    back = with_float16_io(wide)
    onnx.checker.check_model(back)
    sess = ort.InferenceSession(back.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(float16)" and sess.get_outputs()[0].type == "tensor(float16)"
    np.testing.assert_allclose(_run(back, crops), _run(wide, crops), atol=FP16_ATOL)


@pytest.fixture(scope="module")
def half_model(cls_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("fp16") / "cls_fp16.onnx"
    onnx.save(_float16(cls_model, keep_io_types=False), str(path))
    return path


@pytest.fixture(scope="module")
def cls_images(tmp_path_factory):
    return write_images(cls_crops("calibration") + cls_crops("heldout"), tmp_path_factory.mktemp("cls_images"))


def test_int8_convert_of_a_float16_model_via_the_cli(half_model, cls_images, tmp_path, capsys):
    out = tmp_path / "b"
    code, stdout, stderr = cli(["convert", str(half_model), "-p", "amd-epyc-zen4", "--precision", "int8",
                                "--backend", "onnxruntime", "--preset", "ppocr_cls", "--calib", str(cls_images),
                                "--no-measure", "-o", str(out)], capsys)
    assert code == 0, stdout + stderr
    assert "stored in float16" in stdout + stderr and "with_float16_io" in stdout + stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["inputs"][0]["dtype"] == "float32"
    report = json.loads((out / "report.json").read_text())
    assert report["passes"][0]["name"] == "float16_to_float32"
    assert any("widened to float32" in n for n in report["notes"])
    # the INT8 bundle agrees with the float16 model on real held-out crops
    held = cls_samples("heldout")
    with Bundle.load(out).runtime() as rt:
        got = next(iter(rt.infer(held).values()))
    want = _run(onnx.load(str(half_model)), held)
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("backend,widened", [("openvino", False), ("onnxruntime", True)])
def test_fp16_variants_of_a_float16_model(half_model, cls_images, tmp_path, capsys, backend, widened):
    """OpenVINO takes the float16 model as stored (float16 I/O kept); onnxruntime's fp16 converter
    refuses a model already in float16, so it gets the widened one (float32 I/O, stated)."""
    out = tmp_path / "b"
    code, stdout, stderr = cli(["convert", str(half_model), "-p", "amd-epyc-zen4", "--precision", "fp16",
                                "--backend", backend, "--preset", "ppocr_cls", "--calib", str(cls_images),
                                "--no-measure", "-o", str(out)], capsys)
    assert code == 0, stdout + stderr
    report = json.loads((out / "report.json").read_text())
    assert ("float16_to_float32" in [p["name"] for p in report["passes"]]) == widened
    dtype = json.loads((out / "manifest.json").read_text())["inputs"][0]["dtype"]
    assert dtype == ("float32" if widened else "float16")


@pytest.mark.tflite_convert
def test_tflite_of_a_float16_model_via_the_cli(half_model, cls_images, tmp_path, capsys):
    """onnx2tf takes float32 graphs; before the widening the check fed the TFLite model float16
    samples ("expects dtype float32, got float16")."""
    from converters import tflite

    if not tflite.is_available():
        pytest.skip("onnx2tf is not installed (optional extra): run `make tflite`")
    out = tmp_path / "b"
    code, stdout, stderr = cli(["convert", str(half_model), "-p", "raspberry-pi-4", "--backend", "litert",
                                "--precision", "fp32", "--preset", "ppocr_cls", "--calib", str(cls_images),
                                "--no-measure", "-o", str(out)], capsys)
    assert code == 0, stdout + stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == "litert" and manifest["inputs"][0]["dtype"] == "float32"
    assert "widened to float32" in (out / "report.md").read_text()
