"""A document page made of real parts: a title, two paragraphs of text and a real photograph
with its caption, drawn with OpenCV, for the layout detector's tests."""
from __future__ import annotations

import cv2
import numpy as np

from sampledata import _to_bgr

_WORDS = ("the quick brown fox jumps over a lazy dog while edge devices run models on camera frames all "
          "day").split()


def document_page(seed: int = 0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(BGR page 1100x850, the photo's xyxy box on it)."""
    rng = np.random.default_rng(seed)
    page = np.full((1100, 850, 3), 255, np.uint8)
    cv2.putText(page, "Edge inference on many cameras", (70, 100), cv2.FONT_HERSHEY_DUPLEX, 1.3, (0, 0, 0), 2,
                cv2.LINE_AA)
    y = 160
    for _ in range(2):  # two paragraphs of six full-width lines
        for _ in range(6):
            cv2.putText(page, " ".join(rng.choice(_WORDS, 13)), (70, y), cv2.FONT_HERSHEY_SIMPLEX, 0.62, (0, 0, 0), 1,
                        cv2.LINE_AA)
            y += 24
        y += 25
    from skimage import data

    page[y:y + 300, 245:605] = cv2.resize(_to_bgr(data.astronaut()), (360, 300), interpolation=cv2.INTER_AREA)
    cv2.putText(page, "Figure 1: an astronaut", (320, y + 335), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 1,
                cv2.LINE_AA)
    return page, (245, y, 605, y + 300)
