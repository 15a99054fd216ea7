"""MediaPipe SSD detectors with no preset: `--decoder mediapipe_ssd` reads the anchor count and
keypoints off the output shapes and finds MediaPipe's anchor layout, says so, and refuses when
the shapes leave it open. Checked on MediaPipe's pose detector (no preset; 224x224, 2254 anchors,
4 keypoints) against the reference decode of LiteRT's raw output on real photos."""
from __future__ import annotations

import json

import cv2
import pytest

from clitools import cli
from edgesdk.cli.decoder_flags import _setting
from edgesdk.decoders import decoder_for_task
from edgesdk.decoders.blazeface import BlazeFaceDecoder, MediaPipeSSDDecoder, ssd_settings
from edgesdk.errors import ConfigError
from edgesdk.presets import get_preset
from mediapipe_reference import iou, ssd_reference

POSE = "pose_detection.tflite"
# MediaPipe's pose_detection_cpu graph: 224x224 letterbox, floats in [-1, 1]
POSE_FLAGS = ["--task", "detection", "--decoder", "mediapipe_ssd", "--normalize", "symmetric", "--color", "RGB",
              "--resize", "letterbox", "--pad-value", "0"]


def _ssd_outputs(anchors: int, keypoints: int) -> list[tuple[str, list[int]]]:
    return [("regressors", [1, anchors, 4 + 2 * keypoints]), ("classificators", [1, anchors, 1])]


@pytest.fixture(scope="module")
def pose_bundle(tmp_path_factory, model_paths, photos):
    d = tmp_path_factory.mktemp("pose")
    (d / "person.txt").write_text("person\n")
    calib = d / "calib"
    calib.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "camera", "coins", "rocket"):
        cv2.imwrite(str(calib / f"{name}.png"), photos[name])
    out = d / "pose.bundle"
    from edgesdk.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["convert", str(model_paths[POSE]), "-p", "amd-epyc-zen4", "-o", str(out), "--precision", "fp32",
              "--labels", str(d / "person.txt"), "--calib", str(calib), *POSE_FLAGS])
    assert exc.value.code == 0
    return out


def test_pose_detector_decodes_with_settings_read_off_its_outputs(pose_bundle, model_paths, shots, capsys):
    m = json.loads((pose_bundle / "manifest.json").read_text())
    d = m["decoder"]
    assert d["type"] == "mediapipe_ssd" and d["input_size"] == [224, 224] and d["num_keypoints"] == 4
    assert d["strides"] == [8, 16, 32, 32, 32] and d["interpolated_scale_aspect_ratio"] == 1.0
    report = json.loads((pose_bundle / "report.json").read_text())
    (said,) = [n for n in report["notes"] if "INFERRED" in n]
    assert "2254 anchors" in said and "MediaPipe's pose detector" in said and "--decoder-opt" in said
    # the accuracy guard compared boxes, not a cosine of raw tensors
    assert report["chosen"]["accuracy"]["kind"] == "box-f1"
    names = ["zidane", "bus", "astronaut", "rocket", "page"]
    code, out, err = cli(["predict", str(pose_bundle), *(str(shots[n]) for n in names)], capsys)
    assert code == 0, err
    for name in ("zidane", "bus", "astronaut"):
        assert f"{shots[name]}: 0 persons" not in out, out
    assert f"{shots['rocket']}: 0 persons" in out and f"{shots['page']}: 0 persons" in out


def test_pose_boxes_match_mediapipes_decode_of_the_raw_litert_output(pose_bundle, model_paths, shots):
    from edgesdk.predictor import Predictor

    with Predictor(pose_bundle) as p:
        for name in ("zidane", "bus", "astronaut"):
            img = cv2.imread(str(shots[name]))
            (ours,) = p.predict([img])
            ref = ssd_reference(model_paths[POSE], img, 224, (8, 16, 32, 32, 32), 4, value_range=(-1.0, 1.0))
            assert len(ours) == len(ref) >= 1, name
            w = img.shape[1]
            for (rbox, rscore, rkps), box, score, kps in zip(ref, ours.boxes, ours.scores, ours.keypoints):
                assert iou(rbox, box) > 0.9 and abs(rscore - score) < 0.03, name
                assert abs(rkps - kps).max() < 0.02 * w, name


@pytest.mark.parametrize("preset, anchors", [("blazeface_short", 896), ("blazeface_full", 2304),
                                             ("palm_detection_full", 2016)])
def test_inferred_anchor_layout_is_the_presets_own(preset, anchors):
    pre = get_preset(preset)
    keypoints = pre.decoder["num_keypoints"]
    cls = MediaPipeSSDDecoder if pre.decoder["type"] == "mediapipe_ssd" else BlazeFaceDecoder
    settings, line = ssd_settings(cls, _ssd_outputs(anchors, keypoints), pre.preprocess.size)
    for key in ("input_size", "strides", "interpolated_scale_aspect_ratio", "num_keypoints"):
        assert settings[key] == pre.decoder[key], key
    assert f"{anchors} anchors" in line and "INFERRED" in line


def test_stated_settings_win_and_are_checked_against_the_outputs():
    settings, line = ssd_settings(MediaPipeSSDDecoder, _ssd_outputs(2254, 4), (224, 224), score_threshold=0.7)
    assert settings["score_threshold"] == 0.7 and settings["strides"] == [8, 16, 32, 32, 32]
    settings, line = ssd_settings(MediaPipeSSDDecoder, _ssd_outputs(2254, 4), (224, 224), strides=[8, 16, 32, 32, 32])
    assert "strides as stated" in line
    with pytest.raises(ConfigError, match="make 2744 anchors and a 12-wide regressor at 224x224; the model outputs 2254.*--decoder-opt strides="):
        ssd_settings(MediaPipeSSDDecoder, _ssd_outputs(2254, 4), (224, 224), strides=[8, 16, 16, 16])
    with pytest.raises(ConfigError, match="unknown settings"):
        ssd_settings(MediaPipeSSDDecoder, _ssd_outputs(2254, 4), (224, 224), stride=[8])


def test_a_layout_the_shapes_leave_open_or_unknown_is_refused_naming_the_options():
    # 256 anchors at 128x128: one per cell at stride 8, or two per cell on two stride-16 layers, or ...
    with pytest.raises(ConfigError, match=r"match 3 anchor layout.*strides=8 .*strides=16,16 .*--decoder-opt"):
        ssd_settings(MediaPipeSSDDecoder, _ssd_outputs(256, 4), (128, 128))
    with pytest.raises(ConfigError, match=r"match no anchor layout.*--decoder-opt strides="):
        ssd_settings(MediaPipeSSDDecoder, _ssd_outputs(1000, 4), (128, 128))
    with pytest.raises(ConfigError, match=r"box regressors \[1, A, 4\+2K\].*--task raw"):
        ssd_settings(MediaPipeSSDDecoder, [("probs", [1, 1000])], (224, 224))
    with pytest.raises(ConfigError, match="input_size=H,W"):
        ssd_settings(MediaPipeSSDDecoder, _ssd_outputs(2254, 4), None)


def test_decoder_for_task_infers_mediapipe_ssd_and_keeps_settings_on_other_tasks():
    settings, line = decoder_for_task("detection", _ssd_outputs(2016, 7), ["palm"], {"type": "mediapipe_ssd"},
                                      input_size=(192, 192))
    assert settings["strides"] == [8, 16, 16, 16] and "INFERRED" in line
    # a setting for the task's default decoder is kept (it used to be dropped without a word)
    settings, _ = decoder_for_task("classification", [("o", [1, 5])], [], {"top_k": 3},
                                   default={"type": "classification"})
    assert settings == {"type": "classification", "top_k": 3}


@pytest.mark.parametrize("text, expected", [
    ("score_threshold=0.4", ("score_threshold", 0.4)), ("strides=8,16,32", ("strides", [8, 16, 32])),
    ("input_size=[224, 224]", ("input_size", [224, 224])), ("nms=hard", ("nms", "hard")),
    ("keypoint_names=a,b", ("keypoint_names", "a,b")),
])
def test_decoder_opt_values(text, expected):
    assert _setting(text) == expected


@pytest.mark.parametrize("text, needle", [("score_threshold", "KEY=VALUE"), ("=3", "KEY=VALUE"),
                                          ("type=yolo", "--decoder TYPE")])
def test_decoder_opt_malformed(text, needle):
    with pytest.raises(ConfigError, match=needle):
        _setting(text)


def test_decoder_opt_over_a_preset_decoder_is_merged_and_said(model_paths, tmp_path, capsys):
    out = tmp_path / "palm.bundle"
    code, _, err = cli(["convert", str(model_paths["palm_detection_lite.tflite"]), "-p", "amd-epyc-zen4", "-o",
                        str(out), "--precision", "fp32", "--decoder-opt", "score_threshold=0.9"], capsys)
    assert code == 0, err
    d = json.loads((out / "manifest.json").read_text())["decoder"]
    assert d["score_threshold"] == 0.9 and d["strides"] == [8, 16, 16, 16] and d["num_keypoints"] == 7
    assert "with score_threshold=0.9 as stated" in err
    code, _, err = cli(["convert", str(model_paths["palm_detection_lite.tflite"]), "-p", "amd-epyc-zen4", "-o",
                        str(tmp_path / "bad.bundle"), "--decoder-opt", "score_treshold=0.9"], capsys)
    assert code != 0 and "unknown settings" in err and "score_threshold" in err
    assert not (tmp_path / "bad.bundle").exists()


def test_predict_on_the_bare_pose_detector_takes_the_decoder_flags(model_paths, shots, tmp_path, capsys):
    labels = tmp_path / "person.txt"
    labels.write_text("person\n")
    model = str(model_paths[POSE])
    code, out, err = cli(["predict", model, str(shots["astronaut"]), str(shots["rocket"]), "--labels",
                          str(labels), *POSE_FLAGS], capsys)
    assert code == 0, err
    assert "mediapipe_ssd INFERRED" in err and "MediaPipe's pose detector" in err
    assert f"{shots['astronaut']}: 1 person " in out and f"{shots['rocket']}: 0 persons" in out
    # without --decoder the SSD pair is not decoded as a YOLO head (it used to print garbage boxes)
    without = [f for f in POSE_FLAGS if f not in ("--decoder", "mediapipe_ssd")]
    code, out, err = cli(["predict", model, str(shots["astronaut"]), *without], capsys)
    assert code != 0 and "--decoder mediapipe_ssd" in err and "person" not in out
    code, _, err = cli(["convert", model, "-p", "amd-epyc-zen4", "-o", str(tmp_path / "b"), *without], capsys)
    assert code != 0 and "--decoder mediapipe_ssd" in err and not (tmp_path / "b").exists()


def test_decoder_flags_on_a_bundle_are_refused(pose_bundle, shots, capsys):
    code, _, err = cli(["predict", str(pose_bundle), str(shots["astronaut"]), "--decoder-opt",
                        "score_threshold=0.9"], capsys)
    assert code != 0 and "records its own decoder" in err
