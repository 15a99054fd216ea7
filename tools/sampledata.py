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
    if img.dtype == bool:  # a mask (skimage's horse): True is white, not 1 of 255
        img = img.astype(np.uint8) * 255
    elif img.dtype.kind == "f":
        img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    elif img.dtype != np.uint8:  # wider integers: scaled from their own range, never wrapped
        img = (img.astype(np.float64) * 255 / max(int(img.max()), 1)).astype(np.uint8)
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



def square(img: np.ndarray) -> np.ndarray:
    """Center-crop to a square (no stretching of faces)."""
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return img[top:top + s, left:left + s]


def text_photos() -> dict[str, np.ndarray]:
    """Real photographs that contain text (for checking a text detector)."""
    p = photos()
    return {"page": p["page"], "text": p["text"]}


def calibration_images(folder, count: int = 24):
    """Write real calibration images (text and scenes, tiled from the photographs) to `folder`.

    Tiles of the text photographs and whole scene photographs, so a detector's calibration
    sees text, edges and plain backgrounds like its inputs will. Returns the folder.
    """
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    p = photos()
    images = []
    for name in ("page", "text"):
        img = p[name]
        h, w = img.shape[:2]
        for k in range(6):
            s = int(min(h, w) * (0.5 + 0.08 * k))
            top, left = (k * 37) % max(1, h - s + 1), (k * 53) % max(1, w - s + 1)
            images.append((f"{name}_tile{k}", img[top:top + s, left:left + s]))
    for name in ("coins", "camera", "astronaut", "coffee", "rocket", "horse", "chelsea", "motorcycle_left"):
        images.append((name, p[name]))
    for name, img in images[:count]:
        cv2.imwrite(str(folder / f"{name}.png"), img)
    return folder


def text_line_frames(folder, count: int = 12):
    """Write `count` text-line windows of the page photo (40 x 240), each upright (`NNa.png`) and
    turned 180 degrees (`NNb.png`): what a text-direction classifier must tell apart. Returns the folder."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    page = photos()["page"]
    for i in range(count):
        y, x = 25 * (i % 6), 144 * (i // 6)
        crop = np.ascontiguousarray(page[y: y + 40, x: x + 240])
        cv2.imwrite(str(folder / f"{i:02d}a.png"), crop)
        cv2.imwrite(str(folder / f"{i:02d}b.png"), cv2.rotate(crop, cv2.ROTATE_180))
    return folder
