"""Stated preprocessing: flags parsed and checked against the model, ONNX metadata read, sources recorded."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgesdk.errors import ConfigError
from edgesdk.model_metadata import parse_labels, read_model_facts
from edgesdk.preprocess import Preprocessor, PreprocessSpec
from edgesdk.preprocess_options import PreprocessOptions, resolve_preprocess

NCHW = [1, 3, 224, 224]


def test_normalize_expands_and_every_field_says_where_it_came_from():
    r = resolve_preprocess(PreprocessOptions(normalize="imagenet", resize="crop"), input_shape=NCHW)
    assert r.spec.mean == pytest.approx((0.485, 0.456, 0.406)) and r.spec.std == pytest.approx((0.229, 0.224, 0.225))
    assert r.spec.size == (224, 224) and r.spec.layout == "NCHW" and r.spec.resize == "crop"
    assert r.sources["mean"] == "option --normalize imagenet"
    assert r.sources["resize"] == "option --resize"
    assert r.sources["layout"] == "model input shape"
    assert r.assumed == ["color"] and r.normalization_stated  # crop does not pad: its pad value is no guess
    assert r.sources["pad_value"] == "unused (resize crop does not pad)"


@pytest.mark.parametrize("resize, pad_assumed", [("stretch", False), ("crop", False), ("letterbox", True),
                                                 ("fit-height", True)])
def test_the_pad_value_is_a_guess_only_where_the_resize_pads(resize, pad_assumed):
    r = resolve_preprocess(PreprocessOptions(normalize="imagenet", resize=resize, color="RGB"), input_shape=NCHW)
    assert ("pad_value" in r.assumed) == pad_assumed


def test_a_bare_model_warns_with_the_assumed_values_as_options(model_paths, photos, caplog):
    """A model nobody described: the warning names each guess as the option that states it
    (not a PreprocessSpec repr); with everything that matters stated there is no warning."""
    import logging

    from edgesdk.predictor import Predictor

    onnx_model = model_paths["efficientnet_lite0.onnx"]
    with caplog.at_level(logging.WARNING, logger="edgesdk.predictor"):
        Predictor(onnx_model, preset="none").close()
    assert "assumed --resize stretch, --color RGB, --scale 0.003922, --mean 0,0,0, --std 1,1,1." in caplog.text
    assert "PreprocessSpec(" not in caplog.text
    caplog.clear()
    stated = PreprocessOptions(normalize="imagenet", color="RGB", resize="stretch")
    with caplog.at_level(logging.WARNING, logger="edgesdk.predictor"):
        Predictor(onnx_model, preset="none", preprocess_options=stated).close()
    assert "no preset known" not in caplog.text


def test_nothing_stated_is_all_assumed():
    r = resolve_preprocess(None, input_shape=NCHW)
    assert not r.normalization_stated
    assert {"scale", "mean", "std", "color", "resize"} <= set(r.assumed)


@pytest.mark.parametrize("options, shape, words", [
    (dict(mean="0.5,0.5"), NCHW, ["--mean", "3 values", "got 2"]),
    (dict(std="1,2,x"), NCHW, ["--std", "numbers"]),
    (dict(normalize="imagenet", mean="0.5,0.5,0.5"), NCHW, ["--normalize imagenet", "--mean 0.5,0.5,0.5"]),
    (dict(normalize="symmetric", scale=1.0), NCHW, ["--normalize symmetric", "--scale"]),
    (dict(layout="NHWC"), NCHW, ["--layout NHWC", "NCHW"]),
    (dict(layout="NCHW"), [1, 128, 128, 3], ["--layout NCHW", "NHWC"]),
    (dict(color="RGB"), [1, 1, 28, 28], ["--color RGB", "3 channels", "has 1", "--color GRAY"]),
    (dict(mean="0.5,0.5,0.5", color="GRAY"), [1, 1, 28, 28], ["--mean", "3 values", "1 channel"]),
    # five channels: no --color can help, the advice says what can
    (dict(color="RGB"), [1, 5, 64, 64], ["has 5", "no image color has 5 channels", "--layout NHWC", "infer"]),
    (dict(normalize="zscore"), NCHW, ["--normalize", "imagenet"]),
    (dict(crop_ratio=1.5), NCHW, ["--crop-ratio"]),
    (dict(interpolation="bicubic"), NCHW, ["--interpolation", "lanczos"]),
])
def test_bad_options_name_the_option(options, shape, words):
    with pytest.raises(ConfigError) as exc:
        resolve_preprocess(PreprocessOptions(**options), input_shape=shape, input_name="x")
    for word in words:
        assert word in str(exc.value)


def test_layout_comes_from_an_nhwc_model_and_gray_from_one_channel():
    r = resolve_preprocess(PreprocessOptions(normalize="symmetric"), input_shape=[1, 128, 128, 3])
    assert r.spec.layout == "NHWC" and r.spec.size == (128, 128)
    g = resolve_preprocess(PreprocessOptions(normalize="unit"), input_shape=[1, 1, 28, 28])
    assert g.spec.color == "GRAY" and g.sources["color"].startswith("model input shape")


def test_mean_in_pixel_units_runs_unscaled_and_says_so():
    r = resolve_preprocess(PreprocessOptions(mean="123.675,116.28,103.53", std="58.395,57.12,57.375"), input_shape=NCHW)
    assert r.spec.scale == 1.0 and "0-255" in r.sources["scale"]
    x, _ = Preprocessor(r.spec)(np.full((224, 224, 3), 200, np.uint8))
    assert x[0, 0, 0, 0] == pytest.approx((200 - 123.675) / 58.395, rel=1e-5)


def _with_metadata(tmp_path, props: dict[str, str]):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    helper.set_model_props(model, props)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


def test_onnx_metadata_is_read_and_options_still_win(tmp_path):
    path = _with_metadata(tmp_path, {"mean": "0.5,0.5,0.5", "std": "[0.25, 0.25, 0.25]", "color": "bgr",
                                     "names": "{0: 'cat', 1: 'dog', 2: 'bird'}"})
    facts = read_model_facts(path)
    assert facts["labels"] == ["cat", "dog", "bird"]
    r = resolve_preprocess(PreprocessOptions(std="0.5,0.5,0.5"), model_facts=facts, input_shape=[1, 3, 8, 8])
    assert r.spec.mean == (0.5, 0.5, 0.5) and r.sources["mean"] == "model metadata"
    assert r.spec.std == (0.5, 0.5, 0.5) and r.sources["std"] == "option --std"
    assert r.spec.color == "BGR"


def test_labels_parse_every_common_form():
    assert parse_labels('["a", "b"]') == ["a", "b"]
    assert parse_labels('{"1": "b", "0": "a"}') == ["a", "b"]
    assert parse_labels("a\nb\n") == ["a", "b"]


def test_crop_ratio_resizes_the_short_side_before_the_center_crop():
    img = np.zeros((300, 400, 3), np.uint8)
    img[:, 200:] = 255  # right half white
    spec = PreprocessSpec(size=(224, 224), resize="crop", crop_ratio=0.875, scale=1.0, color="BGR")
    x, t = Preprocessor(spec)(img)
    # 300 -> 256 short side (341 wide), centre 224: columns 58..282 of the resized image
    assert t[0].ratio == pytest.approx((256 / 300, 256 / 300))
    row = x[0, 0, 100]
    assert row[:100].max() == 0 and row[-100:].min() == 255
    with pytest.raises(ConfigError):
        PreprocessSpec(crop_ratio=0)


def test_interpolation_is_stated_recorded_and_used():
    import numpy as np

    from edgesdk.preprocess import Preprocessor

    r = resolve_preprocess(PreprocessOptions(normalize="unit", interpolation="AREA"), input_shape=NCHW)
    assert r.spec.interpolation == "area" and r.sources["interpolation"] == "option --interpolation"
    assert r.spec.to_dict()["interpolation"] == "area"
    stripes = np.zeros((448, 448, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: area averages them, nearest keeps one of the two
    near = resolve_preprocess(PreprocessOptions(normalize="unit", interpolation="nearest"), input_shape=NCHW)
    a = Preprocessor(r.spec)([stripes])[0]
    b = Preprocessor(near.spec)([stripes])[0]
    assert abs(float(np.mean(a[0])) - 0.5) < 0.01 and float(np.std(b[0])) < 0.01 and float(np.mean(b[0])) in (0.0, 1.0)
