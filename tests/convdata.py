"""Real images for conversion tests and bench/convert.py: text scenes and text-line crops.

Text detectors must be checked on images that contain text (on photos without text the
probability map is ~0 and cosine similarity means nothing). scikit-image and matplotlib
ship a few real photographs with text: a scanned book page (`page`), handwriting on paper
(`text`) and the matplotlib logo. We make scenes by pasting real text crops at
random scales onto real photographs resized as backgrounds: every pixel is a real pixel.

The calibration and held-out splits use DISJOINT sources (different photos, different parts
of the page, different text images), so the accuracy guard never scores on what calibrated.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Sequence

import sys

import cv2
import numpy as np

_TOOLS = str(Path(__file__).resolve().parent.parent / "tools")
if _TOOLS not in sys.path:  # bench/ and ad-hoc scripts import this module without conftest
    sys.path.insert(0, _TOOLS)

from sampledata import _to_bgr, photos  # noqa: E402


@functools.lru_cache(maxsize=None)
def _sources() -> dict[str, np.ndarray]:
    """Real BGR images with text, and halves of them, keyed by name."""
    import matplotlib
    from skimage import data

    sample = Path(matplotlib.get_data_path()) / "sample_data"
    page = _to_bgr(data.page())  # 191x384 scanned book page
    text = _to_bgr(data.text())  # 172x448 handwriting on paper
    rgba = cv2.imread(str(sample / "logo2.png"), cv2.IMREAD_UNCHANGED)  # BGRA, transparent background
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    mpl_logo = (rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    h = page.shape[0] // 2
    w = text.shape[1] // 2
    return {
        "page_top": page[:h], "page_bottom": page[h:],
        "text_left": text[:, :w], "text_right": text[:, w:],
        "mpl_logo": mpl_logo,
        "grace_hopper": cv2.imread(str(sample / "grace_hopper.jpg"), cv2.IMREAD_COLOR),
    }


SPLITS = {
    # text sources, background photos
    "calibration": (("page_top", "text_left"),
                    ("astronaut", "coffee", "chelsea", "rocket", "horse", "brick", "grass", "gravel", "clock",
                     "hubble_deep_field", "immunohistochemistry", "moon", "cell", "cat")),
    "heldout": (("page_bottom", "mpl_logo"),
                ("camera", "coins", "motorcycle_left", "grace_hopper")),
}


def _background(name: str) -> np.ndarray:
    src = _sources()
    if name in src:
        return src[name]
    if name in photos():
        return photos()[name]
    from skimage import data

    return _to_bgr(getattr(data, name)())


def _paste(canvas: np.ndarray, crop: np.ndarray, rng: np.random.Generator) -> None:
    H, W = canvas.shape[:2]
    scale = rng.uniform(0.5, 1.0) * min(W * 0.9 / crop.shape[1], H * 0.6 / crop.shape[0])
    h, w = max(8, int(crop.shape[0] * scale)), max(8, int(crop.shape[1] * scale))
    piece = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
    y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    canvas[y:y + h, x:x + w] = piece


def text_scenes(split: str, n: int, size: tuple[int, int] = (640, 640), seed: int = 0) -> list[np.ndarray]:
    """`n` BGR uint8 images (HxW = size): a real photo with 1-3 real text crops pasted on it."""
    texts, backgrounds = SPLITS[split]
    src = _sources()
    rng = np.random.default_rng(seed + (0 if split == "calibration" else 1000))
    out = []
    for i in range(n):
        bg = _background(backgrounds[i % len(backgrounds)])
        # a random crop of the background, resized to the scene size
        bh, bw = bg.shape[:2]
        ch, cw = int(bh * rng.uniform(0.6, 1.0)), int(bw * rng.uniform(0.6, 1.0))
        y, x = int(rng.integers(0, bh - ch + 1)), int(rng.integers(0, bw - cw + 1))
        canvas = cv2.resize(bg[y:y + ch, x:x + cw], (size[1], size[0]), interpolation=cv2.INTER_AREA)
        for _ in range(int(rng.integers(1, 4))):
            _paste(canvas, src[texts[int(rng.integers(0, len(texts)))]], rng)
        out.append(np.ascontiguousarray(canvas))
    return out


def text_lines(split: str, n: int, seed: int = 0) -> list[np.ndarray]:
    """`n` BGR crops of single text lines (for the PP-OCR text-direction classifier), about half
    of them rotated by 180 degrees so both classes occur."""
    texts, _ = SPLITS[split]
    src = _sources()
    rng = np.random.default_rng(seed + (0 if split == "calibration" else 1000))
    out = []
    for i in range(n):
        img = src[texts[i % len(texts)]]
        h, w = img.shape[:2]
        lh = int(rng.integers(max(12, h // 8), max(13, h // 3)))
        lw = min(w, int(lh * rng.uniform(3.0, 8.0)))
        y, x = int(rng.integers(0, h - lh + 1)), int(rng.integers(0, w - lw + 1))
        crop = img[y:y + lh, x:x + lw]
        if rng.random() < 0.5:
            crop = cv2.rotate(crop, cv2.ROTATE_180)
        out.append(np.ascontiguousarray(crop))
    return out


def write_images(images: Sequence[np.ndarray], folder: os.PathLike) -> Path:
    """Write images as PNG files into `folder` (created) and return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"{i:04d}.png"), img)
    return folder


def cls_crops(split: str) -> list[np.ndarray]:
    """Real text-line crops (BGR) for the PP-OCR direction classifier, upright and rotated 180.

    Lines are cut from the top (calibration) or bottom (held-out) half of the scanned page with
    `textcrops.line_crops`; pieces of the handwriting photo are split between the two as well.
    """
    from skimage import data

    from textcrops import TEXT_BOXES, line_crops

    page = data.page()
    half = page.shape[0] // 2
    if split == "calibration":
        gray = line_crops(page[:half])
        boxes = TEXT_BOXES[:3]
    else:
        gray = line_crops(page[half:])
        boxes = TEXT_BOXES[3:]
    text = data.text()
    gray += [np.ascontiguousarray(text[y0:y1, x0:x1]) for x0, y0, x1, y1 in boxes]
    out = []
    for g in gray:
        bgr = cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
        out += [bgr, cv2.rotate(bgr, cv2.ROTATE_180)]
    return out


@functools.lru_cache(maxsize=None)
def cls_samples(split: str) -> np.ndarray:
    """`cls_crops(split)` preprocessed with the PP-OCR classifier preset: N x 3 x 48 x 192 float32."""
    from edgesdk.preprocess import Preprocessor
    from edgesdk.presets import get_preset

    batch, _ = Preprocessor(get_preset("ppocr_cls").preprocess)(cls_crops(split))
    return batch


@functools.lru_cache(maxsize=None)
def det_samples(split: str, n: int, size: int) -> np.ndarray:
    """`text_scenes(split, n)` preprocessed like the PP-OCRv4 detector preset at size x size."""
    from edgesdk.preprocess import PreprocessSpec, Preprocessor

    spec = PreprocessSpec(size=(size, size), resize="stretch", color="BGR", scale=1 / 255,
                          mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), layout="NCHW")
    batch, _ = Preprocessor(spec)(text_scenes(split, n, size=(size, size)))
    return batch


# ------------------------------------------------------------------ text-line crops for a recognizer

#: words drawn on photos for the recognizer's line crops; the two splits share no word (text source)
REC_WORDS = {
    "calibration": ("EDGE", "camera", "Stream", "model", "device", "Python", "video", "frame", "network",
                    "Sensor", "Exit 12", "OPEN", "parking", "Main St", "2024", "coffee", "delivery",
                    "SALE 50%", "station", "ticket"),
    "heldout": ("OCR", "SDK", "Bakery", "closed", "North", "route 66", "Hotel", "window", "EXPRESS",
                "market", "No Entry", "1987", "garden", "Platform 3", "pharmacy", "LOBBY"),
}
REC_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,:-/%&#()"
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
          cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN)


def _drawn_line(split: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """(crop, photo name): one or two words of the split's vocabulary drawn on a photo of the split, cut out the way a
    detector's box (with its unclip margin) cuts a sign: upright, a little background around the ink."""
    words, backgrounds = REC_WORDS[split], SPLITS[split][1]
    text = " ".join(words[int(k)] for k in rng.integers(0, len(words), int(rng.integers(1, 3))))
    if split == "calibration" and rng.random() < 0.5:
        # random strings: every Latin letter, digit and sign in varied order, so training covers the
        # characters the held-out words use without their words (a student trained on 20 words forgets the rest)
        text = "".join(REC_CHARS[int(k)] for k in rng.integers(0, len(REC_CHARS), int(rng.integers(3, 15))))
    font, scale = _FONTS[int(rng.integers(0, len(_FONTS)))], float(rng.uniform(0.8, 2.0))
    thick = int(rng.integers(1, 4))
    (tw, th), base = cv2.getTextSize(text, font, scale, thick + 2)
    photo = backgrounds[int(rng.integers(0, len(backgrounds)))]
    bg = _background(photo)
    pad_y, pad_x = int(th * rng.uniform(0.2, 0.6)) + 2, int(th * rng.uniform(0.2, 0.8)) + 2
    ch, cw = th + base + 2 * pad_y, tw + 2 * pad_x
    scale_bg = max(1.0, ch / bg.shape[0], cw / bg.shape[1])
    if scale_bg > 1.0:
        bg = cv2.resize(bg, (int(bg.shape[1] * scale_bg) + 1, int(bg.shape[0] * scale_bg) + 1))
    y, x = int(rng.integers(0, bg.shape[0] - ch + 1)), int(rng.integers(0, bg.shape[1] - cw + 1))
    crop = bg[y:y + ch, x:x + cw].copy()
    ink = tuple(int(v) for v in rng.integers(0, 256, 3))
    if rng.random() < 0.5:  # a sign-like outline keeps the words readable on any photo
        outline = (0, 0, 0) if sum(ink) > 380 else (255, 255, 255)
        cv2.putText(crop, text, (pad_x, pad_y + th), font, scale, outline, thick + 3, cv2.LINE_AA)
    cv2.putText(crop, text, (pad_x, pad_y + th), font, scale, ink, thick, cv2.LINE_AA)
    return crop, photo


def _page_line(split: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A window of a printed line of the split's half of the scanned page, 2.5-6.5 times as wide as high."""
    from skimage import data

    from textcrops import text_bands, text_ink

    page = data.page()
    half = page.shape[0] // 2
    gray = page[:half] if split == "calibration" else page[half:]
    ink = text_ink(gray)
    bands = text_bands(gray)
    for _ in range(20):  # a window of mostly margin (a short last line) is no text line: draw another
        y0, y1 = bands[int(rng.integers(0, len(bands)))]
        w = min(gray.shape[1], int((y1 - y0) * rng.uniform(2.5, 6.5)))
        x = int(rng.integers(0, gray.shape[1] - w + 1))
        if ink[y0:y1, x:x + w].any(axis=0).mean() >= 0.3:
            break
    return cv2.cvtColor(np.ascontiguousarray(gray[y0:y1, x:x + w]), cv2.COLOR_GRAY2BGR), "page"


def _handwritten_line(split: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A piece of one of the split's hand-picked boxes of the handwriting photo (textcrops.TEXT_BOXES)."""
    from skimage import data

    from textcrops import TEXT_BOXES

    boxes = TEXT_BOXES[:3] if split == "calibration" else TEXT_BOXES[3:]
    x0, y0, x1, y1 = boxes[int(rng.integers(0, len(boxes)))]
    w = int((x1 - x0) * rng.uniform(0.7, 1.0))
    x = x0 + int(rng.integers(0, x1 - x0 - w + 1))
    return cv2.cvtColor(np.ascontiguousarray(data.text()[y0:y1, x:x + w]), cv2.COLOR_GRAY2BGR), "handwriting"


def rec_lines_and_sources(split: str, n: int, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """`rec_lines` and, per line, where it came from (the photo, "page", "handwriting"), so early
    stopping can hold out whole sources (converters.distill.distill(groups=...))."""
    rng = np.random.default_rng(seed + (0 if split == "calibration" else 1000))
    makers = (_drawn_line, _drawn_line, _drawn_line, _page_line, _page_line, _handwritten_line)
    made = [makers[i % len(makers)](split, rng) for i in range(n)]
    return [np.ascontiguousarray(c) for c, _ in made], [src for _, src in made]


def rec_lines(split: str, n: int, seed: int = 0) -> list[np.ndarray]:
    """`n` upright BGR text-line crops as a recognizer sees them after the detector and the direction
    classifier: half words drawn on the split's photos, a third printed lines of the split's half
    of the scanned page, the rest handwriting. The splits share no photo, page half or word."""
    return rec_lines_and_sources(split, n, seed)[0]


@functools.lru_cache(maxsize=None)
def rec_samples(split: str, n: int, width: int = 320) -> np.ndarray:
    """`rec_lines(split, n)` preprocessed with the PP-OCRv4 recognizer preset (height 48, width in
    proportion, padded to `width`; fixed so they batch): N x 3 x 48 x width float32."""
    from dataclasses import replace

    from edgesdk.preprocess import Preprocessor
    from edgesdk.presets import get_preset

    spec = replace(get_preset("ppocrv4_rec").preprocess, size=(48, width), dynamic_width=False)
    batch, _ = Preprocessor(spec)(rec_lines(split, n))
    return batch
