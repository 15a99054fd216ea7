"""Decoders on synthetic outputs (exact geometry) and on real model outputs from real photos."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

import runtimes
from edgesdk.decoders import make_decoder
from edgesdk.decoders.blazeface import BlazeFaceDecoder, ssd_anchors
from edgesdk.decoders.classification import ClassificationDecoder
from edgesdk.decoders.nms import nms, weighted_nms
from edgesdk.decoders.ppocr_det import PPOCRDetDecoder
from edgesdk.decoders.raw import RawDecoder
from edgesdk.errors import ConfigError, InputMismatchError
from edgesdk.preprocess import Preprocessor, Transform
from edgesdk.presets import get_preset


def identity(h: int, w: int) -> Transform:
    return Transform(input_size=(h, w), original_size=(h, w))


# ---------------------------------------------------------------- classification
def test_classification_softmax_topk_labels_threshold():
    dec = ClassificationDecoder(labels=["cat", "dog", "fox"], top_k=2, threshold=0.9)
    logits = np.array([[0.0, 5.0, 1.0], [2.0, 2.0, 2.0]], np.float32)
    r1, r2 = dec({"logits": logits}, [identity(1, 1)] * 2)
    assert [t[:2] for t in r1.topk] == [(1, "dog"), (2, "fox")]
    e = np.exp([0.0, 5.0, 1.0])
    assert r1.topk[0][2] == pytest.approx(e[1] / e.sum(), rel=1e-5)
    assert r1.meta == {"softmax_applied": True, "confident": True}
    assert r2.meta["confident"] is False and len(r2) == 0  # no boxes for a classifier
    probs = np.array([[0.2, 0.7, 0.1]], np.float32)
    (r,) = dec({"p": probs}, [identity(1, 1)])
    assert r.meta["softmax_applied"] is False and r.topk[0][2] == pytest.approx(0.7)
    (r,) = ClassificationDecoder(top_k=10, min_score=0.15)({"p": probs}, [identity(1, 1)])
    assert [c for c, _, _ in r.topk] == [1, 0]  # unlabelled ids fall back to str(id); 0.1 dropped
    assert r.topk[0][1] == "1"


def test_classification_rejects_bad_shapes_and_settings():
    with pytest.raises(InputMismatchError, match=r"\[N, classes\]"):
        ClassificationDecoder()({"p": np.zeros((1, 2, 3))}, [identity(1, 1)])
    with pytest.raises(InputMismatchError, match="2 transforms were given"):
        ClassificationDecoder()({"p": np.zeros((1, 3))}, [identity(1, 1)] * 2)
    with pytest.raises(ConfigError, match="top_k must be >= 1"):
        ClassificationDecoder(top_k=0)
    with pytest.raises(ConfigError, match="output 'nope'"):
        ClassificationDecoder(output="nope")({"p": np.zeros((1, 3))}, [identity(1, 1)])


# ---------------------------------------------------------------- blazeface
def test_ssd_anchors_match_mediapipe_layout():
    a = ssd_anchors((128, 128), [8, 16, 16, 16])
    assert a.shape == (896, 2)
    # stride 8: 16x16 cells x 2 anchors, row-major from the top-left cell's centre
    np.testing.assert_allclose(a[0], a[1])
    np.testing.assert_allclose(a[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[2], [1.5 / 16, 0.5 / 16])
    # stride 16 (three layers share it): 8x8 cells x 6 anchors
    np.testing.assert_allclose(a[512:518], [[0.5 / 8, 0.5 / 8]] * 6)
    np.testing.assert_allclose(a[-1], [7.5 / 8, 7.5 / 8])
    assert ssd_anchors((192, 192), [4], interpolated_scale_aspect_ratio=0.0).shape == (2304, 2)


def _blazeface_outputs(entries):
    """entries: (anchor index, dx, dy, w, h, logit) -> raw outputs in input pixels."""
    raw = np.zeros((1, 896, 16), np.float32)
    logits = np.full((1, 896, 1), -10.0, np.float32)
    for i, dx, dy, w, h, logit in entries:
        raw[0, i, :4] = (dx, dy, w, h)
        raw[0, i, 4:] = np.tile([dx, dy], 6)  # keypoints at the box centre
        logits[0, i, 0] = logit
    return {"regressors": raw, "classificators": logits}


def test_blazeface_decode_geometry_and_letterbox_mapping():
    dec = make_decoder(decoder=get_preset("blazeface_short").decoder, labels=["face"])
    anchors = ssd_anchors((128, 128), [8, 16, 16, 16])
    i = 512 + (4 * 8 + 4) * 6  # a stride-16 anchor in the middle (cell row 4, column 4)
    ax, ay = anchors[i] * 128
    assert (ax, ay) == (72.0, 72.0)
    outs = _blazeface_outputs([(i, 4.0, -2.0, 20.0, 30.0, 3.0)])
    # a 256x512 image letterboxed into 128x128: ratio 0.25, 32 px padding on top
    pre = Preprocessor(get_preset("blazeface_short").preprocess)
    _, [t] = pre([np.zeros((256, 512, 3), np.uint8)])
    (r,) = dec(outs, [t])
    assert len(r) == 1 and r.labels == ["face"] and r.scores[0] == pytest.approx(1 / (1 + np.exp(-3.0)), rel=1e-5)
    cx, cy = ax + 4.0, ay - 2.0
    expect = np.array([cx - 10, (cy - 15) - 32, cx + 10, (cy + 15) - 32]) / 0.25
    np.testing.assert_allclose(r.boxes[0], expect, atol=1e-3)
    np.testing.assert_allclose(r.keypoints[0], [[cx / 0.25, (cy - 32) / 0.25]] * 6, atol=1e-3)
    assert r.keypoints.shape == (1, 6, 2) and r.meta["keypoint_names"][0] == "right_eye"


def test_blazeface_weighted_nms_merges_and_thresholds():
    dec = BlazeFaceDecoder()
    anchors = ssd_anchors((128, 128), [8, 16, 16, 16])
    i = 600
    # two overlapping detections of one face (merged, weighted by score), one far away,
    # one below the score threshold
    far = int(np.argmin(np.abs(anchors - [0.1, 0.1]).sum(1)))
    outs = _blazeface_outputs([(i, 0.0, 0.0, 20, 20, 2.0), (i + 1, 2.0, 0.0, 20, 20, 1.0),
                               (far, 0.0, 0.0, 10, 10, 0.5), (100, 0.0, 0.0, 10, 10, -1.0)])
    (r,) = dec(outs, [identity(128, 128)])
    assert len(r) == 2
    s1, s2 = 1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(-1.0))
    assert r.scores[0] == pytest.approx(s1, rel=1e-5)  # the best one's score
    ax = anchors[i, 0] * 128
    assert (r.boxes[0, 0] + r.boxes[0, 2]) / 2 == pytest.approx(ax + 2.0 * s2 / (s1 + s2), abs=1e-3)
    hard = BlazeFaceDecoder(nms="hard")(outs, [identity(128, 128)])[0]
    assert len(hard) == 2 and (hard.boxes[0, 0] + hard.boxes[0, 2]) / 2 == pytest.approx(ax, abs=1e-3)
    none = BlazeFaceDecoder(score_threshold=0.95)(outs, [identity(128, 128)])[0]
    assert len(none) == 0 and none.keypoints.shape == (0, 6, 2)


def test_blazeface_wrong_model_outputs():
    dec = BlazeFaceDecoder(input_size=(192, 192), strides=[4], interpolated_scale_aspect_ratio=0.0)
    with pytest.raises(InputMismatchError, match="expects 2304 anchors"):
        dec(_blazeface_outputs([]), [identity(192, 192)])
    with pytest.raises(InputMismatchError, match="no output looks like box regressors"):
        BlazeFaceDecoder()({"x": np.zeros((1, 896, 4), np.float32)}, [identity(128, 128)])
    with pytest.raises(ConfigError, match="nms must be"):
        BlazeFaceDecoder(nms="soft")


def test_nms_helpers():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes, scores, 0.5, max_detections=1).tolist() == [0]
    b, s, _ = weighted_nms(boxes, scores, 0.5)
    np.testing.assert_allclose(b[0], (boxes[0] * 0.9 + boxes[1] * 0.8) / 1.7, rtol=1e-5)
    assert s.tolist() == pytest.approx([0.9, 0.7])


@pytest.fixture(scope="module")
def blazeface_outputs(blazeface_model, photos):
    """Real BlazeFace outputs on real photos (LiteRT), with their transforms."""
    pre = Preprocessor(get_preset("blazeface_short").preprocess)
    out = {}
    with runtimes.load(blazeface_model) as rt:
        for name in ("astronaut", "coffee", "chelsea", "rocket"):
            x, ts = pre([photos[name]])
            out[name] = (rt.infer(x), ts)
    return out


def test_blazeface_finds_the_astronauts_face(blazeface_outputs):
    dec = make_decoder(decoder=get_preset("blazeface_short").decoder, labels=["face"])
    (r,) = dec(*blazeface_outputs["astronaut"])
    assert len(r) == 1 and r.scores[0] > 0.8
    x1, y1, x2, y2 = r.boxes[0]
    # the face in skimage's astronaut (512x512) spans about x 180-270, y 80-175
    assert 160 < x1 < 200 and 250 < x2 < 290 and 60 < y1 < 100 and 155 < y2 < 195
    eyes, nose, mouth = r.keypoints[0, :2], r.keypoints[0, 2], r.keypoints[0, 3]
    assert (eyes[:, 1] < nose[1]).all() and nose[1] < mouth[1]
    assert eyes[0, 0] < eyes[1, 0]  # subject's right eye appears on the image's left
    assert ((r.keypoints[0, :4] > r.boxes[0, :2]) & (r.keypoints[0, :4] < r.boxes[0, 2:])).all()


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket"])
def test_blazeface_finds_no_face_without_people(blazeface_outputs, name):
    dec = make_decoder(decoder=get_preset("blazeface_short").decoder, labels=["face"])
    (r,) = dec(*blazeface_outputs[name])
    assert len(r) == 0


# ---------------------------------------------------------------- PP-OCR det
def test_ppocr_det_synthetic_rectangles_and_unclip():
    prob = np.zeros((1, 1, 128, 256), np.float32)
    prob[0, 0, 20:40, 30:130] = 0.9  # 100 x 20 text kernel
    prob[0, 0, 80:90, 200:240] = 0.8  # 40 x 10
    prob[0, 0, 100:120, 10:60] = 0.35  # above thresh but mean below box_thresh
    prob[0, 0, 5:6, 5:60] = 0.99  # 1 px thin line: below min_size
    dec = PPOCRDetDecoder(unclip_ratio=1.5)
    # original image twice as large: boxes scale by 2
    t = Transform(ratio=(0.5, 0.5), input_size=(128, 256), original_size=(256, 512))
    (r,) = dec({"map": prob}, [t])
    assert len(r) == 2 and r.labels == ["text", "text"] and r.polygons[0].shape == (4, 2)
    # reading order: the upper box first; unclip grows each side by area*ratio/perimeter
    w, h = 101, 21  # after 2x2 dilation
    d = w * h * 1.5 / (2 * (w + h))
    x1, y1, x2, y2 = r.boxes[0] / 2
    assert x1 == pytest.approx(30 - d, abs=1.0) and x2 == pytest.approx(30 + w - 1 + d, abs=1.0)
    assert y1 == pytest.approx(20 - d, abs=1.0) and y2 == pytest.approx(20 + h - 1 + d, abs=1.0)
    # the score is the mean over the (dilated) rectangle, its 1 px rim of zeros included
    assert r.scores[0] == pytest.approx(0.9 * 100 * 20 / (w * h), abs=0.01)
    np.testing.assert_allclose(r.polygons[0][0], r.boxes[0, :2], atol=1e-3)  # top-left first


def test_ppocr_det_clips_to_the_image_and_checks_shape():
    prob = np.zeros((1, 1, 64, 64), np.float32)
    prob[0, 0, 0:20, 0:40] = 1.0
    (r,) = PPOCRDetDecoder()({"m": prob}, [identity(64, 64)])
    assert len(r) == 1 and r.boxes.min() >= 0 and r.boxes[0, 2] <= 63 and r.boxes[0, 3] <= 63
    with pytest.raises(InputMismatchError, match=r"\[N, 1, H, W\]"):
        PPOCRDetDecoder()({"m": np.zeros((1, 2, 8, 8), np.float32)}, [identity(8, 8)])
    with pytest.raises(ConfigError, match="score_mode"):
        PPOCRDetDecoder(score_mode="medium")


@pytest.fixture(scope="module")
def det_outputs(det_model, photos):
    pre = Preprocessor(get_preset("ppocrv4_det").preprocess)
    plain = np.zeros((240, 320, 3), np.uint8)
    plain[:] = (60, 140, 200)
    images = {"text": photos["text"], "page": photos["page"], "plain": plain}
    out = {}
    with runtimes.load(det_model, threads=2) as rt:
        for name, img in images.items():
            x, ts = pre([img])
            out[name] = (rt.infer(x), ts)
    return out


@pytest.mark.parametrize("name, at_least", [("text", 4), ("page", 4)])
def test_ppocr_det_finds_text_lines(det_outputs, name, at_least, photos):
    dec = make_decoder(decoder=get_preset("ppocrv4_det").decoder, labels=["text"])
    (r,) = dec(*det_outputs[name])
    h, w = photos[name].shape[:2]
    assert len(r) >= at_least
    assert (r.boxes[:, 0] >= 0).all() and (r.boxes[:, 2] <= w).all() and (r.boxes[:, 3] <= h).all()
    assert (r.scores >= 0.5).all()
    assert all(p.shape == (4, 2) for p in r.polygons)


def test_ppocr_det_page_lines_match_the_printed_lines(det_outputs):
    # page(): a title line at y ~10-35, then lines of the paragraph ~20 px apart
    (r,) = make_decoder(decoder=get_preset("ppocrv4_det").decoder)(*det_outputs["page"])
    assert r.boxes[0, 1] < 20 and 25 < r.boxes[0, 3] < 40
    centres = (r.boxes[:, 1] + r.boxes[:, 3]) / 2
    assert np.all(np.diff(centres) > 10)  # one box per line, top to bottom
    widths, heights = r.boxes[:, 2] - r.boxes[:, 0], r.boxes[:, 3] - r.boxes[:, 1]
    assert np.all(widths / heights > 5)  # printed lines are long and thin
    # contour scoring (curved lines) keeps every printed line, rectangle scoring drops some
    slow = make_decoder(decoder={**get_preset("ppocrv4_det").decoder, "score_mode": "slow"})(
        *det_outputs["page"])[0]
    assert len(slow) >= len(r) and len(slow) >= 6


def test_ppocr_det_finds_nothing_on_a_plain_image(det_outputs):
    (r,) = make_decoder(decoder=get_preset("ppocrv4_det").decoder)(*det_outputs["plain"])
    assert len(r) == 0 and r.polygons == []


# ---------------------------------------------------------------- raw and factory
def test_raw_splits_batch_items():
    outs = {"a": np.arange(6).reshape(3, 2), "shared": np.array([7, 8])}
    rs = RawDecoder()(outs, [identity(1, 1)] * 3)
    assert [r.meta["outputs"]["a"].tolist() for r in rs] == [[0, 1], [2, 3], [4, 5]]
    assert rs[2].meta["outputs"]["shared"].tolist() == [7, 8]


def test_make_decoder_factory_errors():
    assert isinstance(make_decoder(decoder={}, task="classification"), ClassificationDecoder)
    assert isinstance(make_decoder(decoder={}, task="raw"), RawDecoder)
    with pytest.raises(ConfigError, match="unknown decoder type 'no_such_decoder'"):
        make_decoder(decoder={"type": "no_such_decoder"})
    with pytest.raises(ConfigError, match="must name its decoder"):
        make_decoder(decoder={}, task="detection")
    with pytest.raises(ConfigError, match=r"unknown settings \['iou'\]"):
        make_decoder(decoder={"type": "blazeface", "iou": 0.3})


def test_crop_text_straightens_a_rotated_region():
    from edgesdk.decoders.ppocr_det import crop_text, order_points

    img = np.zeros((200, 200, 3), np.uint8)
    rect = ((100, 100), (120, 30), 20.0)  # a 120 x 30 bar turned by 20 degrees
    poly = order_points(cv2.boxPoints(rect))
    cv2.fillPoly(img, [poly.astype(np.int32)], (255, 255, 255))
    crop = crop_text(img, poly)
    assert abs(crop.shape[1] - 120) <= 2 and abs(crop.shape[0] - 30) <= 2
    assert crop[3:-3, 3:-3].min() > 200  # all bar, no background
    tall = crop_text(img, order_points(cv2.boxPoints(((100, 100), (20, 80), 0.0))))
    assert tall.shape[1] > tall.shape[0]  # vertical text is turned to a line


def test_the_accuracy_guard_reads_boxes_of_an_nhwc_detector(blazeface_model, photos):
    """BlazeFace (1x128x128x3, NHWC) on LiteRT: the guard's box reader finds the astronaut's face inside
    the 128x128 input, not clipped to a 3-pixel-wide image as an NCHW reading of the shape would."""
    from edgesdk.accuracy import box_decoder_for

    preset = get_preset("blazeface_short")
    boxes_of = box_decoder_for(preset, [1, 128, 128, 3])
    x, _ = Preprocessor(preset.preprocess)([photos["astronaut"]])
    with runtimes.load(blazeface_model) as rt:
        boxes = boxes_of(rt.infer({rt.inputs[0].name: x}))
    assert len(boxes) >= 1
    assert float(boxes[:, 2].max()) > 20 and float(boxes.max()) <= 128.5
