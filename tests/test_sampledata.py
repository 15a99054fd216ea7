"""The test photographs themselves: every one is a visible image, drawn from its own value range."""
import numpy as np
import pytest

from realdata import PHOTO_NAMES, _to_bgr, photos


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_every_photo_is_a_visible_bgr_image(name):
    img = photos()[name]
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.max() >= 128 and img.std() >= 20, (name, img.max(), img.std())  # not black, not flat


def test_a_mask_becomes_black_and_white():  # skimage's horse is a bool mask: True must be 255, not 1
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    out = _to_bgr(mask)
    assert out.shape == (4, 4, 3) and set(np.unique(out)) == {0, 255} and (out[1, 1] == 255).all()


def test_wider_integers_are_scaled_never_wrapped():
    img = np.array([[0, 1000], [2000, 4000]], np.uint16)
    out = _to_bgr(img)[..., 0]
    assert out[1, 1] == 255 and out[0, 0] == 0 and 55 <= out[0, 1] <= 70  # 1000/4000 of the range
