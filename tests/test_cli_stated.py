"""predict / run take the stated preprocessing flags for bare model files, and refuse them for bundles."""
from __future__ import annotations

import json

import cv2
import pytest

from clitools import cli as _cli

FLAGS = ["--normalize", "symmetric", "--resize", "crop", "--crop-ratio", "0.875", "--color", "RGB"]



def test_predict_a_bare_classifier_fed_as_stated(model_paths, photos, tmp_path, capsys):
    img = tmp_path / "coffee.png"
    cv2.imwrite(str(img), photos["coffee"])
    code, out, _ = _cli(["predict", str(model_paths["efficientnet_lite0.onnx"]), str(img), "--json", *FLAGS], capsys)
    assert code == 0
    d = json.loads(out.splitlines()[0])
    assert "argmax 967" in d["outputs"]["logits"]["summary"]  # ImageNet 967: espresso


def test_predict_raw_outputs_in_full(model_paths, photos, tmp_path, capsys):
    img = tmp_path / "coffee.png"
    cv2.imwrite(str(img), photos["coffee"])
    code, out, _ = _cli(["predict", str(model_paths["efficientnet_lite0.onnx"]), str(img), "--json",
                         "--raw-outputs", *FLAGS], capsys)
    assert code == 0 and len(json.loads(out.splitlines()[0])["outputs"]["logits"]["values"]) == 1000


def test_flags_on_a_bundle_are_refused(model_paths, photos, tmp_path, capsys):
    from edgesdk.presets import make_bundle

    bundle = make_bundle(model_paths["ppocr_cls.onnx"], tmp_path / "cls.bundle")
    img = tmp_path / "page.png"
    cv2.imwrite(str(img), photos["page"])
    for cmd in (["predict", str(bundle.path), str(img)],
                ["run", str(bundle.path), "--source", str(tmp_path)]):
        code, _, err = _cli(cmd + ["--normalize", "unit"], capsys)
        assert code == 2 and "--normalize unit" in err and "bundle records its own preprocessing" in err
