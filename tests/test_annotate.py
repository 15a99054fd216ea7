"""Annotators draw where the result says, and nowhere else, on real photographs."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgesdk.annotate import (PALETTE, BoxAnnotator, ComposeAnnotator, KeypointAnnotator, LabelAnnotator,
                              PolygonAnnotator, TopKAnnotator, class_color, default_annotator, draw)
from edgesdk.errors import ConfigError, InputMismatchError
from edgesdk.results import Result


@pytest.fixture(scope="module")
def photo(photos):
    return cv2.resize(photos["coffee"], (400, 300))


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


def det(**kw) -> Result:
    kw.setdefault("boxes", [[50, 80, 250, 220]])
    kw.setdefault("scores", [0.91])
    kw.setdefault("class_ids", [3])
    return Result(**kw)


def test_box_annotator_draws_the_outline_only(photo):
    img = photo.copy()
    out = BoxAnnotator(thickness=2).annotate(img, det())
    assert out is img  # in place, like supervision
    mask = changed(img, photo)
    assert mask[80, 50:251].all() and mask[80:221, 250].all()  # top and right edges
    assert not mask[100:200, 60:240].any()  # inside untouched
    assert not mask[:75].any() and not mask[:, 255:].any()  # outside untouched
    assert tuple(img[80, 150]) == class_color(3)  # colour by class id


def test_box_colour_setting_and_non_finite_boxes(photo):
    img = photo.copy()
    BoxAnnotator(color=(0, 255, 0)).annotate(img, det(boxes=[[10, 10, 60, 60], [np.nan, 0, 5, 5]],
                                                       scores=[0.5, 0.5], class_ids=[0, 0]))
    assert tuple(img[10, 30]) == (0, 255, 0)
    assert changed(img, photo).sum() > 0


def test_label_annotator_writes_above_the_box(photo):
    img = photo.copy()
    LabelAnnotator().annotate(img, det(labels=["cup"]))
    mask = changed(img, photo)
    ys, xs = np.nonzero(mask)
    assert xs.min() == 50 and 50 < ys.min() < 75 and ys.max() <= 80  # on top of the box, at its left corner
    assert mask[64:80, 50:90].mean() > 0.9  # a filled background
    assert not mask[85:, :].any()
    la = LabelAnnotator(show_score=False)
    assert la.text(det(labels=["cup"]), 0) == "cup" and LabelAnnotator().text(det(), 0) == "class 3 0.91"


def test_label_at_the_top_edge_goes_inside_the_box(photo):
    img = photo.copy()
    LabelAnnotator().annotate(img, det(boxes=[[50, 0, 250, 200]]))
    mask = changed(img, photo)
    assert mask[2:15, 55:100].mean() > 0.9 and not mask[40:, :].any()


def test_keypoint_annotator(photo):
    img = photo.copy()
    kps = np.array([[[100, 100], [200, 150], [np.nan, np.nan]]], np.float32)
    KeypointAnnotator(radius=4, edges=[(0, 1), (1, 2)]).annotate(img, det(keypoints=kps))
    mask = changed(img, photo)
    assert mask[100, 100] and mask[150, 200] and mask[125, 150]  # dots and the 0-1 edge
    assert not mask[:90].any() and not mask[170:].any()


def test_polygon_annotator_outline_and_fill(photo):
    poly = np.array([[60, 60], [300, 70], [280, 200], [70, 180]], np.float32)
    r = det(boxes=[[60, 60, 300, 200]], polygons=[poly])
    a, b = photo.copy(), photo.copy()
    PolygonAnnotator(thickness=2).annotate(a, r)
    PolygonAnnotator(thickness=2, fill_opacity=0.5).annotate(b, r)
    ma, mb = changed(a, photo), changed(b, photo)
    assert ma[60:75, 60:62].any() and not ma[110:140, 150:200].any()  # outline only
    assert mb[110:140, 150:200].all() and not mb[250:, :].any()  # translucent inside, nothing outside


def test_topk_annotator(photo):
    img = photo.copy()
    r = Result(topk=[(1, "180", 0.97), (0, "0", 0.03), (5, "", 0.0)])
    TopKAnnotator(k=2).annotate(img, r)
    mask = changed(img, photo)
    ys = np.flatnonzero(mask.any(axis=1))
    assert ys.min() == 0 and ys.max() < 60 and not mask[:, 200:].any()  # two lines, top-left
    one = photo.copy()
    TopKAnnotator(k=1).annotate(one, r)
    assert changed(one, photo).sum() < mask.sum()


def test_nothing_to_draw_leaves_the_image_alone(photo):
    img = photo.copy()
    default_annotator().annotate(img, Result())
    assert np.array_equal(img, photo)


def test_draw_works_on_a_copy_and_draws_everything(photo):
    r = det(labels=["cup"], keypoints=np.array([[[150, 150]]], np.float32), topk=[(3, "cup", 0.9)])
    out = draw(photo, r)
    assert out is not photo and np.array_equal(photo, cv2.resize(photo, (400, 300)))
    mask = changed(out, photo)
    assert mask[80, 150] and mask[150, 150] and mask[65, 60] and mask[5, 5]
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    with pytest.raises(InputMismatchError, match="HxWx3 uint8"):
        draw(gray, r)


def test_compose_and_palette():
    assert len(set(PALETTE)) == len(PALETTE) and class_color(len(PALETTE)) == class_color(0)
    with pytest.raises(ConfigError, match="not an annotator"):
        ComposeAnnotator([object()])


@pytest.mark.parametrize("make, match", [
    (lambda: BoxAnnotator(thickness=0), "thickness must be > 0"),
    (lambda: BoxAnnotator(color=(0, 0, 300)), "three 0-255 values"),
    (lambda: BoxAnnotator(color=(0, 0)), "three 0-255 values"),
    (lambda: LabelAnnotator(text_scale=-1), "text_scale must be > 0"),
    (lambda: LabelAnnotator(text_padding=-1), "text_padding must be >= 0"),
    (lambda: PolygonAnnotator(fill_opacity=1.5), "fill_opacity"),
    (lambda: TopKAnnotator(k=0), "k must be > 0"),
    (lambda: KeypointAnnotator(radius=0), "radius must be > 0"),
])
def test_bad_settings_are_config_errors(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_bad_images_are_refused(photo):
    with pytest.raises(InputMismatchError, match="float32"):
        BoxAnnotator().annotate(photo.astype(np.float32), det())
    with pytest.raises(InputMismatchError, match="C-contiguous"):
        BoxAnnotator().annotate(photo[:, ::2], det())
    ro = photo.copy()
    ro.flags.writeable = False
    with pytest.raises(InputMismatchError, match="writable"):
        BoxAnnotator().annotate(ro, det())
    with pytest.raises(InputMismatchError, match="list"):
        BoxAnnotator().annotate([[0]], det())  # type: ignore[arg-type]
