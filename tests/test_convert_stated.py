"""`edgesdk convert` on a real classifier EdgeSDK has no preset for (EfficientNet-Lite0, ImageNet),
with its preprocessing stated by flags; refusals name the option; NHWC models keep NHWC."""
from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clitools import cli as _cli
from clitools import convert_args as _convert

FLAGS = ["--normalize", "symmetric", "--resize", "crop", "--crop-ratio", "0.875", "--color", "RGB"]


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("photos")
    for name, img in photos.items():
        cv2.imwrite(str(d / f"{name}.png"), img)
    return d




def test_image_calibration_without_stated_preprocessing_is_refused(model_paths, photo_dir, tmp_path, capsys):
    out = tmp_path / "cls.bundle"
    code, _, err = _cli(_convert(model_paths["efficientnet_lite0.onnx"], out, photo_dir), capsys)
    assert code == 8
    assert "--normalize" in err and "--assume-preprocess" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".*"))


def test_assumed_preprocessing_is_loud_and_recorded(model_paths, photo_dir, tmp_path, capsys):
    out = tmp_path / "cls.bundle"
    code, _, err = _cli(_convert(model_paths["efficientnet_lite0.onnx"], out, photo_dir, "--assume-preprocess"), capsys)
    assert code == 0 and "ASSUMED" in err
    prov = json.loads((out / "manifest.json").read_text())["provenance"]
    assert {"scale", "mean", "std"} <= set(prov["preprocess_sources"]["assumed"])
    # nothing named the task either: raw is a default, said with the option that sets it
    notes = json.loads((out / "report.json").read_text())["notes"]
    assert any(n.startswith("task raw: no preset or model metadata names what the outputs are") and "--task" in n
               for n in notes)


def test_stated_classifier_names_its_classes_and_agrees_with_pytorch(model_paths, photo_dir, photos, tmp_path, capsys):
    import torch

    from edgesdk.predictor import Predictor
    from fetch_models import efficientnet_lite0

    out = tmp_path / "cls.bundle"
    code, _, _ = _cli(_convert(model_paths["efficientnet_lite0.onnx"], out, photo_dir, *FLAGS, "--task",
                               "classification", "--labels", str(model_paths["imagenet_labels.txt"])), capsys)
    assert code == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["name"] == "efficientnet_lite0" and m["task"] == "classification" and len(m["labels"]) == 1000
    assert m["preprocess"]["mean"] == [0.5, 0.5, 0.5] and m["preprocess"]["crop_ratio"] == 0.875
    assert m["provenance"]["preprocess_sources"]["sources"]["mean"] == "option --normalize symmetric"
    code, text, _ = _cli(["predict", str(out), str(photo_dir / "coffee.png")], capsys)
    assert code == 0 and "espresso" in text
    # the bundle's pipeline against the original module fed by hand (resize 256, crop 224)
    imgs = [photos[n] for n in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")]
    with Predictor(out) as p:
        ours = [r.topk[0][0] for r in p.predict(imgs)]
    ref = []
    for bgr in imgs:
        h, w = bgr.shape[:2]
        r = 256 / min(h, w)
        x = cv2.resize(np.ascontiguousarray(bgr[..., ::-1]), (round(w * r), round(h * r)))
        t, l = (x.shape[0] - 224) // 2, (x.shape[1] - 224) // 2
        x = (x[t:t + 224, l:l + 224].astype(np.float32) / 255 - 0.5) / 0.5
        with torch.no_grad():
            ref.append(int(efficientnet_lite0()(torch.from_numpy(x.transpose(2, 0, 1)[None])).argmax()))
    assert ours == ref


def test_labels_of_the_wrong_length_are_refused(model_paths, photo_dir, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    out = tmp_path / "cls.bundle"
    code, _, err = _cli(_convert(model_paths["efficientnet_lite0.onnx"], out, photo_dir, *FLAGS, "--task",
                                 "classification", "--labels", str(labels)), capsys)
    assert code == 8 and "--labels labels.txt has 2 names" in err and "1000 classes" in err
    assert not out.exists()


@pytest.mark.parametrize("extra, words", [
    (["--mean", "0.5,0.5"], ["--mean", "3 values"]),
    (["--normalize", "imagenet", "--mean", "0.5,0.5,0.5"], ["--normalize imagenet", "--mean"]),
    (["--normalize", "unit", "--layout", "NHWC"], ["--layout NHWC", "NCHW"]),
])
def test_bad_flags_get_one_line_naming_the_option(model_paths, photo_dir, tmp_path, capsys, extra, words):
    code, _, err = _cli(_convert(model_paths["efficientnet_lite0.onnx"], tmp_path / "b", photo_dir, *extra), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    for word in words:
        assert word in err


def _nhwc_model(path):
    """A small NHWC image model (as tf2onnx writes them): NHWC -> Transpose -> Conv -> sigmoid."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["y"])]
    g = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 64, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 64, 64])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_an_nhwc_model_gets_an_nhwc_bundle_that_runs(photo_dir, photos, tmp_path, capsys):
    from edgesdk.bundle import Bundle

    model = _nhwc_model(tmp_path / "palm_like.onnx")
    out = tmp_path / "nhwc.bundle"
    code, _, err = _cli(_convert(model, out, photo_dir, "--normalize", "symmetric", "--layout", "NHWC"), capsys)
    assert code == 0, err
    b = Bundle.load(out)
    assert b.manifest.preprocess.layout == "NHWC" and b.manifest.name == "palm_like"
    x, _ = b.preprocessor()(photos["astronaut"])
    assert x.shape == (1, 64, 64, 3)
    with b.runtime() as rt:
        y = rt.infer({"x": x})
    assert list(y.values())[0].shape == (1, 4, 64, 64)


def test_edgesdk_convert_is_the_function():
    from edgesdk import convert

    assert callable(convert)
    import edgesdk.convert as module

    assert module.convert.__name__ == "convert"


@pytest.mark.parametrize("settings, words", [
    (dict(precision="int4"), ["--precision", "int4"]),
    (dict(task="pose"), ["--task", "pose"]),
    (dict(max_accuracy_drop=1.5), ["--max-accuracy-drop"]),
    (dict(calib_method="kl"), ["--calib-method"]),
    (dict(prune=1.0), ["--prune"]),
])
def test_convert_options_are_validated_once_naming_the_option(settings, words):
    from edgesdk.convert_options import ConvertOptions
    from edgesdk.errors import ConversionError

    with pytest.raises(ConversionError) as exc:
        ConvertOptions(**settings)
    for word in words:
        assert word in str(exc.value)


def test_prepared_options_drive_a_conversion_and_the_report_replays_them(model_paths, photo_dir, tmp_path):
    from edgesdk import convert
    from edgesdk.convert_options import ConvertOptions
    from edgesdk.preprocess_options import PreprocessOptions

    opts = ConvertOptions(precision="fp32", calib=str(photo_dir), backends=["onnxruntime"], task="classification",
                          preprocess_options=PreprocessOptions(normalize="symmetric", resize="crop", crop_ratio=0.875))
    result = convert(model_paths["efficientnet_lite0.onnx"], "amd-epyc-zen4", tmp_path / "b", options=opts, progress=None)
    assert result.report["options"]["precision"] == "fp32"
    assert "--normalize symmetric" in result.report["options"]["preprocess_options"]
    assert result.bundle.manifest.task == "classification"


def test_dynamic_dims_the_bundle_fixes_are_said_with_where_from_and_how_to_change(model_paths, photo_dir, tmp_path,
                                                                                  capsys):
    """nudenet (YOLOv8, batch x 3 x height x width) was built for 1x3x320x320 and only the pass record said so,
    without where 320 came from (the Ultralytics metadata) or how to change it."""
    out = tmp_path / "det.bundle"
    code, _, err = _cli(["convert", str(model_paths["nudenet_320n.onnx"]), "-p", "generic-x86-64", "--precision",
                         "fp32", "--backend", "onnxruntime", "--no-measure", "--calib", str(photo_dir), "--normalize",
                         "unit", "--color", "RGB", "--resize", "letterbox", "-o", str(out)], capsys)
    assert code == 0, err
    line = ("input images ?x3x?x? has dynamic dims: the bundle is built for 1x3x320x320 (batch 1; the rest from the "
            "preprocessing size (ultralytics metadata)); --input-shape sets them, -1 keeps one dynamic")
    assert line in err and any(n.startswith(line) for n in json.loads((out / "report.json").read_text())["notes"])
    code, _, err = _cli(["convert", str(model_paths["nudenet_320n.onnx"]), "-p", "generic-x86-64", "--precision",
                         "fp32", "--backend", "onnxruntime", "--no-measure", "--calib", str(photo_dir), "--normalize",
                         "unit", "--color", "RGB", "--resize", "letterbox", "--input-shape", "1,3,256,256",
                         "-o", str(tmp_path / "stated.bundle")], capsys)
    assert code == 0 and "has dynamic dims" not in err  # stated: nothing guessed to say
