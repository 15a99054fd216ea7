"""Preprocessing: resize modes map points back to the original image; values and layout."""
from __future__ import annotations

import numpy as np
import pytest

from edgesdk.errors import ConfigError, InputMismatchError, SourceError
from edgesdk.preprocess import PreprocessSpec, Preprocessor, read_image


def _marked_image(h: int, w: int, points: list[tuple[int, int]]) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    for x, y in points:
        img[max(0, y - 2):y + 3, max(0, x - 2):x + 3] = 255
    return img


def _bright_spots(channel: np.ndarray) -> np.ndarray:
    """Centroids (x, y) of bright blobs, sorted by x."""
    import cv2

    n, _, _, cents = cv2.connectedComponentsWithStats((channel > 100).astype(np.uint8))
    return np.array(sorted(cents[1:].tolist()))


@pytest.mark.parametrize("mode", ["stretch", "letterbox", "crop", "fit_height"])
def test_transform_maps_model_points_back_to_original(mode):
    # marks well inside the image so center-crop keeps them
    pts = [(150, 90), (200, 140), (260, 110)]
    img = _marked_image(240, 400, pts)
    size = (96, 200) if mode == "fit_height" else (128, 128)
    batch, [t] = Preprocessor(PreprocessSpec(size=size, resize=mode, scale=1.0, layout="NHWC", pad_value=0))([img])
    assert batch.shape == (1, *size, 3)
    found = _bright_spots(batch[0, ..., 0])
    assert len(found) == 3
    back = t.to_original(found)
    np.testing.assert_allclose(back, np.array(pts, np.float32), atol=3.5)
    # and the inverse
    np.testing.assert_allclose(t.to_model(back), found, atol=1e-3)


def test_letterbox_pads_evenly_and_keeps_aspect():
    img = np.full((100, 200, 3), 200, np.uint8)
    batch, [t] = Preprocessor(PreprocessSpec(size=(128, 128), resize="letterbox", scale=1.0, layout="NHWC",
                                             pad_value=0))([img])
    assert t.ratio == (0.64, 0.64) and t.pad == (32.0, 0.0)
    assert batch[0, :32].max() == 0 and batch[0, 96:].max() == 0 and batch[0, 32:96].min() == 200
    boxes = t.boxes_to_original(np.array([[0, 0, 128, 128]], np.float32))
    np.testing.assert_allclose(boxes, [[0, 0, 200, 100]])  # the padding clips away


def test_fit_height_pads_right_and_caps_width():
    short = np.full((20, 40, 3), 255, np.uint8)  # 2:1 -> 96 wide at height 48
    wide = np.full((10, 200, 3), 255, np.uint8)  # 20:1 -> squeezed to the full 192
    pre = Preprocessor(PreprocessSpec(size=(48, 192), resize="fit_height", scale=1.0, layout="NHWC", pad_value=7))
    b1, [t1] = pre([short])
    assert (b1[0, :, :96] == 255).all() and (b1[0, :, 96:] == 7).all()
    assert t1.ratio == (2.4, 2.4)
    b2, [t2] = pre([wide])
    assert (b2[0] == 255).all() and t2.ratio == (4.8, 0.96)


def test_values_color_layout_and_dtype():
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30  # B, G, R
    spec = PreprocessSpec(size=(4, 4), color="RGB", scale=2 / 255, mean=(1, 1, 1), std=(1, 1, 1), layout="NCHW")
    x, _ = Preprocessor(spec)([img, img])
    assert x.shape == (2, 3, 4, 4) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x[0, :, 0, 0], [30 * 2 / 255 - 1, 20 * 2 / 255 - 1, 10 * 2 / 255 - 1], atol=1e-6)
    xb, _ = Preprocessor(PreprocessSpec(size=(4, 4), color="BGR", scale=1.0))([img])
    np.testing.assert_allclose(xb[0, :, 0, 0], [10, 20, 30])
    xq, _ = Preprocessor(PreprocessSpec(size=(4, 4), color="BGR", scale=1 / 255, dtype="uint8",
                                        quantization=(1 / 255, 0)))([img])
    assert xq.dtype == np.uint8 and xq[0, :, 0, 0].tolist() == [10, 20, 30]


def test_dynamic_size_limits_and_multiples():
    pre = Preprocessor(PreprocessSpec(size=None, size_multiple=32, limit_side_len=736, limit_type="min"))
    assert pre.target_size(172, 448) == (736, 1920)  # short side enlarged to 736, like RapidOCR
    assert pre.target_size(1000, 1500) == (992, 1504)  # already large enough: only rounded
    pre = Preprocessor(PreprocessSpec(size=None, size_multiple=32, limit_side_len=960, limit_type="max"))
    assert pre.target_size(1080, 1920) == (544, 960)
    assert pre.target_size(100, 100) == (96, 96)


def test_gray_and_bgra_inputs_are_accepted():
    pre = Preprocessor(PreprocessSpec(size=(8, 8)))
    x, _ = pre([np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8)])
    assert x.shape == (2, 3, 8, 8)


@pytest.mark.parametrize("images, needle", [
    ([np.zeros((8, 8, 3), np.float32)], "uint8"),
    ([], "empty list"),
    ([np.zeros((5, 8, 3), np.uint8)], "preprocess.resize is 'none'"),
])
def test_bad_images_are_refused(images, needle):
    spec = PreprocessSpec(size=(8, 8), resize="none" if needle.startswith("preprocess") else "stretch")
    with pytest.raises(InputMismatchError, match=needle):
        Preprocessor(spec)(images)


@pytest.mark.parametrize("kwargs, needle", [
    ({"resize": "zoom"}, "preprocess.resize"), ({"color": "YUV"}, "preprocess.color"),
    ({"layout": "CHW"}, "preprocess.layout"), ({"std": (1, 0, 1)}, "std must not contain 0"),
    ({"limit_type": "mid"}, "limit_type"), ({"resize": "fit_height"}, "needs a fixed size"),
    ({"size": (0, 4)}, "positive"), ({"size_multiple": 0}, "size_multiple"),
])
def test_invalid_specs_say_what_is_wrong(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        PreprocessSpec(**kwargs)


def test_spec_round_trips_and_rejects_unknown_keys():
    spec = PreprocessSpec(size=(48, 192), resize="fit_height", quantization=(0.5, 3), limit_side_len=10)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="unknown keys"):
        PreprocessSpec.from_dict({"sise": [1, 2]})


def test_read_image(tmp_path, photos):
    import cv2

    good = tmp_path / "a.png"
    cv2.imwrite(str(good), photos["coins"])
    assert read_image(good).shape == photos["coins"].shape
    with pytest.raises(SourceError, match="does not exist"):
        read_image(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(SourceError, match="cannot decode"):
        read_image(bad)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="cannot decode"):
        read_image(empty)
