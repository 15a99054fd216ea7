"""Presets: known real models are recognised and wrapped into bundles with their facts."""
from __future__ import annotations

import json
import shutil

import pytest

from edgesdk.bundle import Bundle
from edgesdk.errors import BundleError, ConfigError
from edgesdk.presets import PRESETS, get_preset, list_presets, make_bundle, preset_for


@pytest.mark.parametrize("cache_name, preset", [
    ("ppocr_cls.onnx", "ppocr_cls"), ("ppocrv4_det.onnx", "ppocrv4_det"),
    ("blazeface_short.tflite", "blazeface_short"), ("blazeface_full.tflite", "blazeface_full"),
])
def test_real_models_are_recognised(model_paths, cache_name, preset):
    assert preset_for(model_paths[cache_name]).name == preset


def test_lookup_by_hash_name_and_stem(model_paths, tmp_path):
    renamed = tmp_path / "model.onnx"
    shutil.copyfile(model_paths["ppocr_cls.onnx"], renamed)
    assert preset_for(renamed).name == "ppocr_cls"  # by sha256
    fake = tmp_path / "ch_PP-OCRv4_det_infer.onnx"
    fake.write_bytes(b"x")
    assert preset_for(fake).name == "ppocrv4_det"  # by the wheel's file name
    assert preset_for(tmp_path / "ppocr_cls_int8.onnx").name == "ppocr_cls"  # converted, by stem
    assert preset_for(tmp_path / "blazeface_full.xml").name == "blazeface_full"
    assert preset_for(tmp_path / "ppocr_classifier.onnx") is None  # stem must end at a separator
    assert preset_for(tmp_path / "resnet50.onnx") is None


def test_preset_facts():
    cls, det, face = get_preset("ppocr_cls"), get_preset("ppocrv4_det"), get_preset("blazeface_short")
    assert cls.labels == ("0", "180") and cls.preprocess.size == (48, 192) and cls.decoder["threshold"] == 0.9
    assert det.preprocess.size_multiple == 32 and det.preprocess.mean == (0.5, 0.5, 0.5)
    assert (det.decoder["thresh"], det.decoder["box_thresh"], det.decoder["unclip_ratio"]) == (0.3, 0.5, 1.6)
    # PaddleOCR models were trained on OpenCV's BGR images
    assert cls.preprocess.color == det.preprocess.color == "BGR"
    assert face.preprocess.layout == "NHWC" and face.preprocess.color == "RGB"
    assert face.preprocess.scale == pytest.approx(2 / 255) and face.preprocess.mean == (1.0, 1.0, 1.0)
    assert list_presets() == sorted(PRESETS)
    with pytest.raises(ConfigError, match="unknown preset 'yolo'; known presets: blazeface_full"):
        get_preset("yolo")


def test_make_bundle_with_overrides(det_model, tmp_path):
    b = make_bundle(det_model, tmp_path / "det", size=(320, 320), box_thresh=0.6, precision="fp32",
                    profile="intel-xeon-avx512-vnni")
    m = Bundle.load(b.path).manifest
    assert m.task == "text_detection" and m.preprocess.size == (320, 320)
    assert m.decoder["box_thresh"] == 0.6 and m.decoder["unclip_ratio"] == 1.6
    assert m.runtime == {"precision": "fp32"} and m.profile == "intel-xeon-avx512-vnni"
    assert m.provenance["preset"] == "ppocrv4_det" and "rapidocr" in m.provenance["facts_from"]
    with pytest.raises(ConfigError, match="unknown setting 'boxthresh'"):
        make_bundle(det_model, tmp_path / "x", boxthresh=0.6)
    with pytest.raises(ConfigError, match="unknown preset"):
        make_bundle(det_model, tmp_path / "y", preset="nope")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_make_bundle_tflite_keeps_nhwc(blazeface_model, tmp_path):
    m = make_bundle(blazeface_model, tmp_path / "face").manifest
    assert m.backend == "litert" and m.inputs[0].shape == (1, 128, 128, 3) and m.inputs[0].layout == "NHWC"
    assert [o.shape for o in m.outputs] == [(1, 896, 16), (1, 896, 1)]
    assert m.decoder["type"] == "blazeface" and m.labels == ["face"]


def test_unknown_model_becomes_raw_bundle_with_guessed_preprocessing(tiny_models, tmp_path):
    m = make_bundle(tiny_models.conv_net(), tmp_path / "raw").manifest
    assert m.task == "raw" and m.decoder == {"type": "raw"} and "preset" not in m.provenance
    assert m.preprocess.size == (16, 16) and m.preprocess.layout == "NCHW"
    # a non-image model gets no preprocessing at all
    assert make_bundle(tiny_models.two_inputs(), tmp_path / "two").manifest.preprocess is None


def test_make_bundle_errors(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        make_bundle(tmp_path / "missing.onnx", tmp_path / "b")
    xml = tmp_path / "model.xml"
    xml.write_text("<net/>")
    with pytest.raises(BundleError, match="has no weights file model.bin"):
        from edgesdk.presets import model_files
        model_files(xml)


def test_manifest_is_plain_json(cls_model, tmp_path):
    b = make_bundle(cls_model, tmp_path / "cls")
    data = json.loads((b.path / "manifest.json").read_text())
    assert data["preprocess"]["resize"] == "fit_height" and data["decoder"]["type"] == "classification"
