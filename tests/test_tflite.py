"""ONNX -> TFLite via onnx2tf (optional extra, `make tflite`).

The conversions are marked `tflite_convert` (about 40 s each on 2 cores) and are skipped with
a reason when onnx2tf is not installed; the error paths run everywhere.

Thresholds, PP-OCR text-direction classifier on real held-out text-line crops, LiteRT vs
onnxruntime fp32 (probabilities of the 2 classes):
  fp32: max abs difference <= 1e-4, same top-1 everywhere;
  fp16: max abs difference <= 1e-2, same top-1 everywhere;
  int8: max abs difference <= 0.3, same top-1 wherever onnxruntime is confident (p >= 0.9),
        top-1 agreement >= 0.75 overall (8 calibration crops only; borderline crops may flip).
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from converters import tflite
from converters.errors import ConversionError

needs_onnx2tf = pytest.mark.skipif(not tflite.is_available(),
                                   reason="onnx2tf is not installed (optional extra): run `make tflite`")

THRESHOLDS = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.3}


def _cls_batch(split: str, n: int) -> np.ndarray:
    import cv2

    from convdata import text_lines

    out = []
    for img in text_lines(split, n):
        x = cv2.resize(img, (192, 48)).astype(np.float32) / 255.0
        out.append(((x - 0.5) / 0.5).transpose(2, 0, 1))
    return np.stack(out)


def test_missing_onnx2tf_names_make_tflite(monkeypatch, tmp_path, cls_model):
    monkeypatch.setattr(tflite, "is_available", lambda: False)
    with pytest.raises(ConversionError, match="make tflite"):
        tflite.onnx_to_tflite(cls_model, tmp_path, "fp32", np.zeros((1, 3, 48, 192), np.float32))
    assert not any(tmp_path.iterdir())


def test_bad_arguments_are_refused_before_converting(tmp_path, cls_model):
    calib = np.zeros((2, 3, 48, 192), np.float32)
    with pytest.raises(ConversionError, match="precision"):
        tflite.onnx_to_tflite(cls_model, tmp_path, "int4", calib)
    if not tflite.is_available():
        pytest.skip("the remaining checks run after the onnx2tf availability check: run `make tflite`")
    with pytest.raises(ConversionError, match="not found"):
        tflite.onnx_to_tflite(tmp_path / "missing.onnx", tmp_path, "fp32", calib)
    with pytest.raises(ConversionError, match=r"\(N, C, H, W\)"):
        tflite.onnx_to_tflite(cls_model, tmp_path, "fp32", np.zeros((0, 3, 48, 192), np.float32))
    with pytest.raises(ConversionError, match=r"\(N, C, H, W\)"):
        tflite.onnx_to_tflite(cls_model, tmp_path, "fp32", np.zeros((3, 48, 192), np.float32))
    with pytest.raises(ConversionError, match="NaN"):
        tflite.onnx_to_tflite(cls_model, tmp_path, "fp32", np.full((1, 3, 48, 192), np.nan, np.float32))
    with pytest.raises(ConversionError, match="does not fit"):
        tflite.onnx_to_tflite(cls_model, tmp_path, "fp32", np.zeros((1, 4, 48, 192), np.float32))
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07not an onnx model")
    with pytest.raises(ConversionError, match="cannot read"):
        tflite.onnx_to_tflite(bad, tmp_path / "out", "fp32", calib)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@needs_onnx2tf
@pytest.mark.tflite_convert
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_classifier_to_tflite_matches_onnxruntime(precision, cls_model, tmp_path):
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    calib = _cls_batch("calibration", 8)
    held = _cls_batch("heldout", 12)
    lines = []
    result = tflite.onnx_to_tflite(cls_model, tmp_path, precision, calib, progress=lines.append)
    assert result.path.is_file() and result.layout == "NHWC"
    assert result.input_shape == [1, 48, 192, 3]
    assert lines and "wrote" in lines[-1]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tflite-")]  # work dir cleaned
    if precision == "int8":
        assert {"integer_quant", "full_integer_quant"} <= set(result.variants)
    sess = ort.InferenceSession(str(cls_model), providers=["CPUExecutionProvider"])
    it = Interpreter(model_path=str(result.path), num_threads=2)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    want, got = [], []
    for x in held:
        it.set_tensor(inp["index"], x[None].transpose(0, 2, 3, 1))  # NCHW -> NHWC
        it.invoke()
        got.append(it.get_tensor(out["index"])[0].copy())
        want.append(sess.run(None, {"x": x[None]})[0][0])
    want, got = np.array(want), np.array(got)
    diff = float(np.abs(want - got).max())
    agree = want.argmax(1) == got.argmax(1)
    print(f"\nPP-OCR cls -> TFLite {precision}: {result.seconds:.0f} s, {result.path.stat().st_size / 1e3:.0f} kB, "
          f"max abs diff {diff:.2e}, top-1 agreement {agree.mean():.2f}", file=sys.stderr)
    assert diff <= THRESHOLDS[precision]
    if precision == "int8":
        assert agree[want.max(1) >= 0.9].all() and agree.mean() >= 0.75
    else:
        assert agree.all()


def test_multi_input_models_are_refused(tmp_path):
    if not tflite.is_available():
        pytest.skip("onnx2tf is not installed: run `make tflite`")
    import prunemodels

    two = prunemodels.low_rank(tmp_path)
    with pytest.raises(ConversionError, match="single-input"):
        tflite.onnx_to_tflite(two, tmp_path / "out", "fp32", np.zeros((1, 4, 64, 1), np.float32))


@needs_onnx2tf
def test_a_converter_that_runs_too_long_is_killed_and_leaves_nothing(cls_model, tmp_path):
    with pytest.raises(ConversionError, match="did not finish within 1 s"):
        tflite.onnx_to_tflite(cls_model, tmp_path, "fp32", _cls_batch("calibration", 1), timeout=1, progress=None)
    assert not any(tmp_path.iterdir())


def test_a_converter_process_failure_is_one_line_naming_what_went_wrong():
    """The TFLite INT8 worker's crash reached the report as 15 log lines (absl and oneDNN banners, a
    traceback); the error is the line that says what failed."""
    from converters.tflite import log_reason

    worker = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
              "I0000 00:00:1796222857.828834   25623 port.cc:153] oneDNN custom operations are on.\n"
              "Traceback (most recent call last):\n  File \"<string>\", line 49, in <module>\n"
              "TypeError: 'NoneType' object is not iterable\n\n")
    assert log_reason(worker) == "TypeError: 'NoneType' object is not iterable"
    onnx2tf = "\x1b[32mINFO:\x1b[0m onnx_op_type: Conv\n\x1b[31mERROR:\x1b[0m The trace log is below.\nmore\n"
    assert log_reason(onnx2tf) == "ERROR: The trace log is below."
    assert log_reason("only progress\nlast words\n") == "last words" and log_reason("") == "(empty log)"
