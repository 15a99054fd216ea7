"""Predictor end to end on real models and real photos: bundles, bare models, batching."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

import runtimes
from edgesdk.decoders.ppocr_det import crop_text
from edgesdk.errors import BundleError, SourceError
from edgesdk.predictor import Predictor
from edgesdk.presets import make_bundle


@pytest.fixture(scope="module")
def text_crops(det_model, photos):
    """Real text crops: the printed lines of skimage's page() found by the PP-OCR detector,
    straightened (crop_text) and cut into pieces of about 4:1, the shape the direction
    classifier is trained on."""
    with Predictor(det_model, threads=2) as det:
        (r,) = det.predict(photos["page"])
    crops = []
    for poly in r.polygons:
        line = crop_text(photos["page"], poly)
        h = line.shape[0]
        crops += [line[:, x:x + 4 * h] for x in range(0, line.shape[1] - 2 * h, 4 * h)]
    assert len(crops) >= 15
    return crops


@pytest.fixture(scope="module")
def cls_predictor(cls_model):
    with Predictor(cls_model, threads=2) as p:
        yield p


def test_text_direction_flips_with_the_crop(cls_predictor, text_crops):
    upright = cls_predictor.predict(text_crops)
    flipped = cls_predictor.predict([cv2.rotate(c, cv2.ROTATE_180) for c in text_crops])
    up = np.array([r.topk[0][1] == "0" for r in upright])
    down = np.array([r.topk[0][1] == "180" for r in flipped])
    # a mobile classifier on a photographed page: most, not all, crops are right
    assert up.mean() >= 0.85 and down.mean() >= 0.85, (up, down)
    assert (up & down).mean() >= 0.8
    # when it says it is confident (cls_thresh 0.9) it is right
    conf_up = np.array([r.meta["confident"] for r in upright])
    assert up[conf_up].mean() >= 0.9 and conf_up.sum() >= 0.6 * len(upright)
    assert all(r.meta["batch_size"] == min(8, len(text_crops)) for r in upright[:8])


def test_batched_equals_one_by_one(cls_predictor, text_crops):
    crops = text_crops[:5]
    batched = cls_predictor.predict(crops)
    single = [cls_predictor.predict(c)[0] for c in crops]
    for b, s in zip(batched, single):
        assert b.topk[0][:2] == s.topk[0][:2]
        assert b.topk[0][2] == pytest.approx(s.topk[0][2], abs=1e-4)


def test_bundle_and_bare_model_agree(cls_model, cls_predictor, text_crops, tmp_path):
    bundle = make_bundle(cls_model, tmp_path / "cls")
    with Predictor(bundle.path, threads=2) as p:
        assert p.task == "classification" and p.bundle is not None
        a = p.predict(text_crops[:3])
    b = cls_predictor.predict(text_crops[:3])
    assert [r.topk for r in a] == [r.topk for r in b]


def test_openvino_pinned_fp32_agrees_with_onnxruntime(cls_model, cls_predictor, text_crops):
    if "openvino" not in runtimes.available_backends():
        pytest.skip("openvino not installed")
    with Predictor(cls_model, backend="openvino", threads=2) as p:
        assert p.runtime.precision == "fp32"  # never silently bf16 on AMX
        ov = p.predict(text_crops[:6])
    ort = cls_predictor.predict(text_crops[:6])
    for a, b in zip(ov, ort):
        assert a.topk[0][0] == b.topk[0][0] and a.topk[0][2] == pytest.approx(b.topk[0][2], abs=1e-3)


def test_blazeface_predictor_batches_a_fixed_batch_one_model(blazeface_model, photos):
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera"]
    with Predictor(blazeface_model) as p:
        assert p.runtime.max_batch == 1
        rs = p.predict([photos[n] for n in names])
    counts = dict(zip(names, (len(r) for r in rs)))
    # camera() is the cameraman: a face too
    assert counts == {"astronaut": 1, "coffee": 0, "chelsea": 0, "rocket": 0, "camera": 1}
    assert 200 < (rs[0].boxes[0, 0] + rs[0].boxes[0, 2]) / 2 < 250


def test_blazeface_full_range(model_paths, photos):
    with Predictor(model_paths["blazeface_full.tflite"]) as p:
        face, nothing = p.predict([photos["astronaut"], photos["coffee"]])
    assert len(face) == 1 and len(nothing) == 0
    assert 200 < (face.boxes[0, 0] + face.boxes[0, 2]) / 2 < 250


def test_dynamic_size_model_groups_images_by_input_size(det_model, photos, tmp_path):
    bundle = make_bundle(det_model, tmp_path / "det", limit_side_len=320)  # smaller than 736: faster
    with Predictor(bundle.path, threads=2) as p:
        assert p.preprocessor.target_size(*photos["page"].shape[:2]) == (320, 640)
        small = np.full((100, 300, 3), 255, np.uint8)  # -> 320 x 960
        rs = p.predict([photos["page"], small, photos["page"]])
    assert len(rs[0]) == len(rs[2]) >= 3 and len(rs[1]) == 0
    assert rs[0].meta["batch_size"] == 2 and rs[1].meta["batch_size"] == 1


def test_image_paths_and_errors(cls_predictor, text_crops, tmp_path):
    path = tmp_path / "crop.png"
    cv2.imwrite(str(path), text_crops[0])
    (r,) = cls_predictor.predict(str(path))
    assert r.topk[0][1] == cls_predictor.predict(text_crops[0])[0].topk[0][1]
    with pytest.raises(SourceError, match="does not exist"):
        cls_predictor.predict([tmp_path / "missing.png"])
    assert cls_predictor.predict([]) == []
    with pytest.raises(BundleError, match="does not exist"):
        Predictor(tmp_path / "nothing.onnx")


def test_unknown_model_gives_raw_outputs(tiny_models, caplog):
    with caplog.at_level(logging.WARNING, logger="edgesdk.predictor"):
        with Predictor(tiny_models.conv_net()) as p:
            rs = p.predict([np.zeros((32, 32, 3), np.uint8)] * 3)
    assert "no preset known" in caplog.text
    assert len(rs) == 3 and rs[0].meta["outputs"]["logits"].shape == (10,)


def test_model_without_image_input_refuses_images(tiny_models):
    with Predictor(tiny_models.two_inputs()) as p:
        with pytest.raises(BundleError, match="no preprocessing is known"):
            p.predict([np.zeros((8, 8, 3), np.uint8)])


def test_a_non_image_model_is_refused_naming_its_inputs(tiny_models):
    """Like silero-vad (audio + state): the refusal names the inputs and the way to feed them,
    and offers no preprocessing options that could not help."""
    with Predictor(tiny_models.two_inputs()) as p:
        with pytest.raises(BundleError) as exc:
            p.preprocess([np.zeros((8, 8, 3), np.uint8)])
    text = str(exc.value)
    assert "not one image tensor: a: float32[?x4]" in text and "b: float32[?x4]" in text
    assert "runtimes.load(model).infer(" in text and "--normalize" not in text
    assert "edgesdk convert --freeze-input NAME=V1,V2" in text  # where the other inputs are per-deployment values


def test_layout_mismatch_between_manifest_and_model_is_transposed(cls_model, cls_predictor, text_crops, tmp_path):
    # a manifest saying NHWC for an NCHW model (as after a TFLite round trip the other way)
    bundle = make_bundle(cls_model, tmp_path / "nhwc", layout="NHWC")
    assert bundle.manifest.preprocess.layout == "NHWC" and bundle.manifest.inputs[0].layout == "NCHW"
    with Predictor(bundle.path) as p:
        batch, _ = p.preprocess(text_crops[:2])
        assert batch.shape == (2, 48, 192, 3)
        assert p.feeds(batch)["x"].shape == (2, 3, 48, 192)
        got = p.predict(text_crops[:2])
    want = cls_predictor.predict(text_crops[:2])
    assert [r.topk[0][:2] for r in got] == [r.topk[0][:2] for r in want]
