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


def test_first_line_passes_over_openvino_trace_lines():
    from converters.openvino_ir import OV_TRACE_LINES

    trace = RuntimeError("Exception from src/core/shape.cpp:12:\nCheck 'rank == 4' failed at shape.cpp:12:\n"
                         "Convolution expects a 4-D input, got 3-D\n")
    assert first_line(trace, skip=OV_TRACE_LINES) == "Convolution expects a 4-D input, got 3-D"
    only_trace = RuntimeError("Exception from src/core/shape.cpp:12:\n")
    assert first_line(only_trace, skip=OV_TRACE_LINES) == "Exception from src/core/shape.cpp:12:"
    assert first_line(trace) == "Exception from src/core/shape.cpp:12:"


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


def _onnx_wheel_model(name: str):
    """A model-zoo architecture the onnx wheel ships (backend test data, IR 3, opset 9; weights
    made by ConstantOfShape nodes, every initializer also listed as a graph input)."""
    from pathlib import Path

    import onnx

    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"
    assert path.is_file(), f"the onnx wheel no longer ships {path.name}"
    return path


@pytest.mark.parametrize("name", ["squeezenet", "resnet50"])
def test_ir3_models_keep_one_real_input_through_the_passes(name):
    """onnxruntime's folding kept the input entries of the initializers it folded away: the
    prepared model then asked for 18 (squeezenet) or 213 (resnet50) inputs."""
    import numpy as np
    import onnxruntime as ort

    from converters.passes import default_passes, graph_inputs, run_passes

    original = load_onnx(_onnx_wheel_model(name))
    assert original.ir_version == 3 and len(original.graph.input) > 1
    feed = graph_inputs(original)[0].name
    model, records = run_passes(load_onnx(_onnx_wheel_model(name)), default_passes(),
                                PassContext(input_shapes={feed: [1, 3, 224, 224]}))
    assert [i.name for i in model.graph.input] == [feed] and model.ir_version >= 4
    done = {r.name: r.changes for r in records}
    assert any("no longer listed as graph inputs" in c for c in done["initializers_not_inputs"])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    want = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {feed: x})
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {feed: x})
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_an_ir3_model_zoo_model_converts_via_the_cli(precision, photos, tmp_path, capsys):
    import cv2

    from clitools import cli

    calib = tmp_path / "calib"
    calib.mkdir()
    for key, img in photos.items():
        cv2.imwrite(str(calib / f"{key}.png"), img)
    out = tmp_path / "b"
    code, stdout, stderr = cli(["convert", str(_onnx_wheel_model("squeezenet")), "-p", "generic-x86-64",
                                "--precision", precision, "--backend", "onnxruntime", "--calib", str(calib),
                                "--normalize", "imagenet", "--color", "RGB", "--resize", "stretch",
                                "--no-measure", "-o", str(out), "-q"], capsys)
    assert code == 0, stdout + stderr
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == precision and [i["name"] for i in manifest["inputs"]] == ["data_0"]


def test_a_pooled_n_c_1_1_output_reads_as_nchw():
    """squeezenet/densenet121 end in [1, 1000, 1, 1]: `info` called it NHWC (1000 rows of 1 pixel)."""
    from runtimes.spec import guess_layout

    assert guess_layout([1, 1000, 1, 1]) == "NCHW"
    assert guess_layout([1, 224, 224, 3]) == "NHWC" and guess_layout([1, 3, 224, 224]) == "NCHW"
    assert guess_layout([1, 1, 1, 3]) == "NCHW"  # unchanged: channels first wins a tie
