"""MediaPipe's palm detector and selfie segmenter (.tflite, NHWC, from the mediapipe 0.10.14 wheel)
from the CLI to readable `predict` output, checked on real photos against MediaPipe's own
semantics: palm boxes against a reference decode (tests/mediapipe_reference.py) from MediaPipe's calculators
(SsdAnchors, TensorsToDetections, weighted NonMaxSuppression, DetectionLetterboxRemoval) on the
raw LiteRT output, and the person mask against LiteRT's raw output thresholded at 0.5. Models
with no preset go through with a stated --task."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from clitools import cli
from mediapipe_reference import iou, ssd_reference
from edgesdk.cli import main

PALM = "palm_detection_full.tflite"
SELFIE = "selfie_segmentation.tflite"


def _convert(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["convert", *args, "-p", "amd-epyc-zen4", "-q"])
    assert exc.value.code == 0


@pytest.fixture(scope="module")
def palm_bundle(tmp_path_factory, model_paths):
    out = tmp_path_factory.mktemp("palm") / "palm.bundle"
    _convert([str(model_paths[PALM]), "-o", str(out), "--precision", "fp32"])
    return out


@pytest.fixture(scope="module")
def selfie_bundle(tmp_path_factory, model_paths):
    out = tmp_path_factory.mktemp("selfie") / "selfie.bundle"
    _convert([str(model_paths[SELFIE]), "-o", str(out)])
    return out


# --------------------------------------------------------------------------- palm detector

def test_palm_bundle_from_the_cli_finds_the_hands_in_real_photos(palm_bundle, shots, capsys):
    m = json.loads((palm_bundle / "manifest.json").read_text())
    assert m["name"] == "palm_detection_full" and m["task"] == "detection" and m["labels"] == ["palm"]
    assert m["preprocess"]["layout"] == "NHWC" and m["preprocess"]["resize"] == "letterbox"
    assert m["decoder"]["num_keypoints"] == 7 and m["provenance"]["preset"] == "palm_detection_full"
    names = ["zidane", "bus", "rocket", "page"]
    code, out, err = cli(["predict", str(palm_bundle), *(str(shots[n]) for n in names)], capsys)
    assert code == 0, err
    assert f"{shots['zidane']}: 1 palm " in out and f"{shots['bus']}: 1 palm " in out
    assert f"{shots['rocket']}: 0 palms" in out and f"{shots['page']}: 0 palms" in out
    assert "palm     0." in out and "box [" in out  # label, score and box a user can read
    code, out, _ = cli(["predict", str(palm_bundle), str(shots["zidane"]), "--json"], capsys)
    (det,) = json.loads(out)["detections"]
    x1, y1, x2, y2 = det["box"]
    # Zidane's pointing hand (right half of the frame, at chest height); it points right, so the
    # wrist (keypoint 0) is left of the middle-finger base (keypoint 2)
    assert 900 < (x1 + x2) / 2 < 1150 and 350 < (y1 + y2) / 2 < 520 and 40 < x2 - x1 < 200
    kps = det["keypoints"]
    assert len(kps) == 7 and kps[0][0] < kps[2][0]


@pytest.mark.parametrize("model", ["palm_detection_full.tflite", "palm_detection_lite.tflite"])
def test_palm_boxes_match_mediapipes_decode_of_the_raw_litert_output(model, palm_bundle, model_paths, shots):
    """Our bundle (OpenVINO read from the .tflite) / the bare lite model (LiteRT, preset by hash)
    against the reference decode: same palms, same boxes and keypoints within 1% of the image."""
    from edgesdk.predictor import Predictor

    target = palm_bundle if model == PALM else model_paths[model]
    with Predictor(target) as p:
        assert p.manifest.provenance["preset"] in (model[:-7], "palm_detection_full")
        for name in ("zidane", "bus"):
            img = cv2.imread(str(shots[name]))
            (ours,) = p.predict([img])
            ref = ssd_reference(model_paths[model], img, 192, (8, 16, 16, 16), 7)
            assert len(ours) == len(ref) >= 1, name
            w = img.shape[1]
            for (rbox, rscore, rkps), box, score, kps in zip(ref, ours.boxes, ours.scores, ours.keypoints):
                assert iou(rbox, box) > 0.95 and abs(rscore - score) < 0.02
                assert np.abs(rkps - kps).max() < 0.01 * w


# --------------------------------------------------------------------------- selfie segmenter

def test_selfie_bundle_from_the_cli_writes_person_masks(selfie_bundle, shots, model_paths, tmp_path, capsys):
    report = json.loads((selfie_bundle / "report.json").read_text())
    rows = {v["key"]: v for v in report["variants"]}
    # OpenVINO's TFLite frontend lacks MediaPipe's custom op: the row names it and the route that works
    assert "Convolution2DTransposeBias" in rows["openvino-fp32"]["error"]
    assert "litert" in rows["openvino-fp32"]["error"] and report["chosen"]["key"] == "litert-asis"
    assert any("Convolution2DTransposeBias" in n and "tf2onnx" in n for n in report["notes"])  # the ONNX route
    names = ["zidane", "astronaut", "bus", "rocket"]
    masks = tmp_path / "masks"
    code, out, err = cli(["predict", str(selfie_bundle), *(str(shots[n]) for n in names), "--save-masks",
                          str(masks)], capsys)
    assert code == 0, err
    share = {}
    for name in names:
        path = masks / f"{name}.mask.png"
        assert f"mask: {path}" in out
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert mask.shape == cv2.imread(str(shots[name])).shape[:2] and set(np.unique(mask)) <= {0, 1}
        share[name] = float(mask.mean())
    assert "  person " in out and "% of the pixels" in out  # the per-image person fraction
    assert share["zidane"] > 0.3 and share["astronaut"] > 0.3 and share["bus"] > 0.05 and share["rocket"] < 0.02
    # the mask is LiteRT's raw output thresholded at 0.5 (resized to the image first, as MediaPipe does)
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(str(model_paths[SELFIE]))
    it.allocate_tensors()
    for name in ("zidane", "astronaut"):
        img = cv2.imread(str(shots[name]))
        x = cv2.resize(img[..., ::-1], (256, 256), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
        it.set_tensor(it.get_input_details()[0]["index"], x[None])
        it.invoke()
        prob = it.get_tensor(it.get_output_details()[0]["index"])[0, :, :, 0]
        ref = cv2.resize(prob, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR) > 0.5
        ours = cv2.imread(str(masks / f"{name}.mask.png"), cv2.IMREAD_UNCHANGED) > 0
        assert (ours == ref).mean() > 0.99, name
        assert (ours & ref).sum() / (ours | ref).sum() > 0.97, name


def test_landscape_selfie_model_as_a_bare_file_agrees_with_the_general_one(model_paths, shots):
    """The 256x144 landscape model (preset by hash, its own size) finds the same people."""
    from edgesdk.predictor import Predictor

    img = cv2.imread(str(shots["zidane"]))
    shares = []
    for model in ("selfie_segmentation_landscape.tflite", SELFIE):
        with Predictor(model_paths[model]) as p:
            assert p.manifest.preprocess.size == ((144, 256) if "landscape" in model else (256, 256))
            (r,) = p.predict([img])
            shares.append(r.meta["class_share"]["person"])
            masks = r.meta["mask"]
            assert masks.shape == img.shape[:2]
    assert shares[0] > 0.3 and abs(shares[0] - shares[1]) < 0.1


# --------------------------------------------------------------------------- no preset

def test_models_with_no_preset_convert_with_a_stated_task(model_paths, shots, tmp_path, capsys):
    # the palm detector with its preset switched off: raw outputs, preprocessing stated by flags
    raw = tmp_path / "palm_raw.bundle"
    code, _, err = cli(["convert", str(model_paths[PALM]), "-p", "amd-epyc-zen4", "--preset", "none", "--task",
                        "raw", "--normalize", "unit", "--resize", "letterbox", "--pad-value", "0", "--color", "RGB",
                        "--precision", "fp32", "-o", str(raw)], capsys)
    assert code == 0, err
    m = json.loads((raw / "manifest.json").read_text())
    assert m["task"] == "raw" and "preset" not in m["provenance"] and m["preprocess"]["resize"] == "letterbox"
    code, out, _ = cli(["predict", str(raw), str(shots["zidane"]), "--json", "--raw-outputs"], capsys)
    outputs = json.loads(out)["outputs"]
    shapes = sorted(tuple(o["shape"]) for o in outputs.values())
    assert shapes == [(2016, 1), (2016, 18)]
    assert max(max(v) for o in outputs.values() if o["shape"] == [2016, 1] for v in o["values"]) > 0  # a palm logit
    # a MediaPipe model EdgeSDK knows nothing about: the hand landmarker, --task raw
    hand = tmp_path / "hand.bundle"
    code, _, err = cli(["convert", str(model_paths["hand_landmark_lite.tflite"]), "-p", "amd-epyc-zen4", "--task",
                        "raw", "--normalize", "unit", "--precision", "fp32", "-o", str(hand)], capsys)
    assert code == 0 and "ASSUMED" in err and "resize=stretch" in err  # what was not stated is said
    code, out, _ = cli(["predict", str(hand), str(shots["zidane"]), "--json"], capsys)
    assert code == 0 and [63] in [o["shape"] for o in json.loads(out)["outputs"].values()]  # 21 x (x, y, z)


def test_selfie_with_no_preset_and_stated_segmentation_task(model_paths, shots, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("background\nperson\n")
    seg = tmp_path / "seg.bundle"
    code, _, err = cli(["convert", str(model_paths[SELFIE]), "-p", "amd-epyc-zen4", "--preset", "none", "--task",
                        "segmentation", "--normalize", "unit", "--labels", str(labels), "-o", str(seg), "-q"], capsys)
    assert code == 0, err
    m = json.loads((seg / "manifest.json").read_text())
    assert m["decoder"] == {"type": "segmentation"} and m["labels"] == ["background", "person"]
    code, out, _ = cli(["predict", str(seg), str(shots["zidane"]), "--json"], capsys)
    row = json.loads(out)
    assert row["meta"]["layout"] == "NHWC" and row["class_share"]["person"] > 0.3  # channel axis read from shape


def test_custom_ops_are_read_from_the_tflite_file(model_paths, tmp_path):
    from edgesdk.convert_tflite import tflite_custom_ops

    assert tflite_custom_ops(model_paths[SELFIE]) == ["Convolution2DTransposeBias"]
    assert tflite_custom_ops(model_paths[PALM]) == []
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\xff" * 64)
    assert tflite_custom_ops(junk) == []


def test_segmentation_decoder_reads_the_channel_axis_or_asks_for_it():
    from edgesdk.decoders import make_decoder
    from edgesdk.errors import ConfigError
    from edgesdk.preprocess import Transform

    t = Transform(ratio=(0.5, 0.5), input_size=(8, 8), original_size=(16, 16))  # a 16x16 image, stretched
    logits = np.full((1, 8, 8, 1), -3.0, np.float32)
    logits[0, :, 4:] = 3.0  # right half: foreground, as logits
    dec = make_decoder(decoder={"type": "segmentation", "activation": "sigmoid"}, labels=["bg", "person"])
    (r,) = dec({"y": logits}, [t])
    assert r.meta["layout"] == "NHWC" and r.meta["mask"].shape == (16, 16)
    assert r.meta["class_share"] == {"bg": 0.5, "person": 0.5}
    # a logit of 0.3 is p = 0.57: foreground after the sigmoid, background when read as a probability
    soft = np.full((1, 1, 8, 8), 0.3, np.float32)
    assert make_decoder(decoder={"type": "segmentation"})({"y": soft}, [t])[0].meta["mask"].max() == 0
    assert dec({"y": soft}, [t])[0].meta["mask"].min() == 1
    with pytest.raises(ConfigError, match="layout"):
        make_decoder(decoder={"type": "segmentation"})({"y": np.zeros((1, 8, 8, 8), np.float32)}, [t])
    with pytest.raises(ConfigError, match="activation"):
        make_decoder(decoder={"type": "segmentation", "activation": "relu"})
