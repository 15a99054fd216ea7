"""Real text-line crops for the PP-OCR text-direction classifier, without a detector.

The lines of scikit-image's scanned book page (`page()`) are found with an ink profile
(adaptive threshold, rows with ink) and cut into pieces of about 4:1 (the classifier's
48x192); a few hand-picked pieces of the handwriting photo (`text()`) are added. They are fed the way PP-OCR feeds them: height 48, width
kept in proportion up to 192, RGB, (x/255 - 0.5) / 0.5, zero padding on the right.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np

H, W = 48, 192


def _bands(ink_rows: np.ndarray, min_height: int) -> list[tuple[int, int]]:
    bands, start = [], None
    for y, on in enumerate(list(ink_rows) + [False]):
        if on and start is None:
            start = y
        elif not on and start is not None:
            if y - start >= min_height:
                bands.append((start, y))
            start = None
    return bands


def text_ink(gray: np.ndarray) -> np.ndarray:
    """Mask of the ink pixels of a gray text image (adaptive threshold)."""
    return cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 25, 15) > 0


def text_bands(gray: np.ndarray, row_ink: float = 0.1, min_height: int = 8, pad: int = 4) -> list[tuple[int, int]]:
    """(y0, y1) of the text lines of a real gray image (rows with ink), `pad` rows added around each."""
    bands = _bands(text_ink(gray).mean(axis=1) > row_ink, min_height)
    return [(max(0, y0 - pad), min(gray.shape[0], y1 + pad)) for y0, y1 in bands]


def line_crops(gray: np.ndarray, row_ink: float = 0.1, min_height: int = 8, pad: int = 4,
               min_col_ink: float = 0.15) -> list[np.ndarray]:
    """Gray crops of about 4:1 cut from the text lines of a real gray image."""
    ink = text_ink(gray)
    crops = []
    for y0, y1 in text_bands(gray, row_ink, min_height, pad):
        h = y1 - y0
        cols = ink[y0:y1].any(axis=0)
        for x in range(0, gray.shape[1] - 2 * h, 4 * h):
            piece = slice(x, min(gray.shape[1], x + 4 * h))
            if cols[piece].mean() >= min_col_ink:  # mostly text, not margin
                crops.append(np.ascontiguousarray(gray[y0:y1, piece]))
    return crops


@functools.lru_cache(maxsize=None)
def page_crops() -> tuple[np.ndarray, ...]:
    """Upright gray text crops of scikit-image's page() and text() photographs."""
    from skimage import data

    crops = line_crops(data.page())
    # text() is handwritten math photographed at an angle: no clean ink rows, so its pieces are
    # picked by hand (x0, y0, x1, y1). The classifier is unsure on them (p ~ 0.4-0.6): they
    # are hard real cases, kept so agreement tests see more than easy print.
    text = data.text()
    crops += [np.ascontiguousarray(text[y0:y1, x0:x1]) for x0, y0, x1, y1 in TEXT_BOXES]
    return tuple(crops)


TEXT_BOXES = ((95, 20, 315, 85), (0, 30, 150, 95), (110, 95, 300, 172), (140, 0, 340, 35), (300, 10, 448, 80))


def to_cls_input(gray_crops, rotate180: bool = False) -> np.ndarray:
    """Batch [N, 3, 48, 192] float32 as PP-OCR's classifier takes it."""
    batch = np.zeros((len(gray_crops), 3, H, W), np.float32)
    for i, crop in enumerate(gray_crops):
        if rotate180:
            crop = cv2.rotate(crop, cv2.ROTATE_180)
        rgb = cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB)
        w = min(W, int(math.ceil(H * crop.shape[1] / crop.shape[0])))
        resized = cv2.resize(rgb, (w, H)).astype(np.float32)
        batch[i, :, :, :w] = ((resized / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
    return batch
