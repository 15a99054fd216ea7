"""Real sample data for the demo, examples, tests and benchmarks.

Real photographs come from scikit-image's bundled data (`pip install scikit-image`), as
OpenCV gives images: HxWx3 uint8 BGR. Nothing here is synthetic.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "page", "text", "camera", "coins", "horse")


def _to_bgr(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).astype(np.uint8) if img.dtype.kind == "f" else img.astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        img = img[..., :3]
    return np.ascontiguousarray(img[..., ::-1])


@functools.lru_cache(maxsize=None)
def photos() -> dict[str, np.ndarray]:
    from skimage import data

    out = {}
    for name in PHOTO_NAMES:
        if name == "motorcycle_left":
            img = data.stereo_motorcycle()[0]
        else:
            img = getattr(data, name)()
        out[name] = _to_bgr(img)
    return out


def faces() -> list[np.ndarray]:
    """Real photographs that contain a face."""
    return [photos()["astronaut"]]


def no_faces() -> list[np.ndarray]:
    """Real photographs without people."""
    p = photos()
    return [p["coffee"], p["chelsea"], p["rocket"], p["page"]]
