"""Augmentation of the few real images label-free distillation trains on (converters.distill).

The teacher labels whatever it is shown, so the student may train on any input that looks like
run-time data: the more varied, the less it learns only the calibration photos. Everything works
on the model's preprocessed NCHW float input (normalised space), so no knowledge of the
preprocessing is needed; the two steps that need pixel values (JPEG, noise level) map each
sample's own min..max to 0..255 and back.

- geometry: a random view of the sample, zoomed by `crop_scale` (log-uniform; > 1 zooms in),
  rotated by up to `rotate` degrees, its corners moved by up to `perspective` of the side,
  mirrored with `flip`; sampled from the whole image, so a rotated view shows real pixels, not
  padding (reflection only past the image edge);
- mosaic (probability `mosaic`): a 2x2 grid of such views of four different images, so a
  training input mixes scenes the way a run-time frame mixes objects and backgrounds;
- colour: contrast, per-channel gain and brightness by +-`jitter`, grayscale with probability
  `grayscale`;
- degradation, each with probability `degrade`: Gaussian blur, sensor-like noise, JPEG
  compression (quality 30-90).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np


def uses_views(cfg: Any) -> bool:
    """True when the sampled-view path (rotation, perspective, mosaic) is asked for."""
    return bool(getattr(cfg, "rotate", 0) or getattr(cfg, "perspective", 0) or getattr(cfg, "mosaic", 0))


def describe(cfg: Any) -> str:
    """One line naming the augmentation `cfg` asks for (reports and progress)."""
    lo, hi = cfg.crop_scale
    parts = [f"random {'views' if uses_views(cfg) else 'crops'} {lo:.0%}-{hi:.0%}"]
    if getattr(cfg, "rotate", 0):
        parts.append(f"rotation +-{cfg.rotate:g} deg")
    if getattr(cfg, "perspective", 0):
        parts.append(f"perspective {cfg.perspective:.0%}")
    if cfg.flip:
        parts.append("horizontal flips")
    if getattr(cfg, "mosaic", 0):
        parts.append(f"2x2 mosaics of 4 images ({cfg.mosaic:.0%})")
    parts.append(f"colour jitter +-{cfg.jitter:.0%}")
    if getattr(cfg, "grayscale", 0):
        parts.append(f"grayscale ({cfg.grayscale:.0%})")
    if getattr(cfg, "degrade", 0):
        parts.append(f"blur/noise/JPEG ({cfg.degrade:.0%} each)")
    return ", ".join(parts)


def _uniform(gen, lo: float, hi: float) -> float:
    import torch

    return float(torch.empty(1).uniform_(lo, hi, generator=gen))


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 H with H @ [dst, 1] ~ [src, 1] for four point pairs (direct linear transform)."""
    a, b = [], []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    h = np.linalg.solve(np.asarray(a, np.float64), np.asarray(b, np.float64))
    return np.append(h, 1.0).reshape(3, 3)


def _view_corners(h: int, w: int, out: tuple[int, int], gen, cfg: Any, base: Optional[int]) -> np.ndarray:
    """Source-image (x, y) of the output's four corners (TL, TR, BR, BL) for one random view.

    `base`: the side the zoom is relative to (train_size: objects keep their run-time scale at
    zoom 1); None: the view spans the whole image at zoom 1."""
    lo, hi = cfg.crop_scale
    s = math.exp(_uniform(gen, math.log(lo), math.log(hi)))
    vh, vw = (out[0] / s, out[1] / s) if base else (h / s, w / s)
    vh, vw = min(vh, h * 1.5), min(vw, w * 1.5)   # a zoom-out past the image shows mostly reflection
    cy = _uniform(gen, min(vh / 2, h / 2), max(h - vh / 2, h / 2))
    cx = _uniform(gen, min(vw / 2, w / 2), max(w - vw / 2, w / 2))
    corners = np.array([[-vw / 2, -vh / 2], [vw / 2, -vh / 2], [vw / 2, vh / 2], [-vw / 2, vh / 2]])
    p = getattr(cfg, "perspective", 0.0)
    if p:
        jit = np.array([[_uniform(gen, -p, p) for _ in range(2)] for _ in range(4)])
        corners = corners + jit * np.array([vw, vh])
    t = math.radians(_uniform(gen, -cfg.rotate, cfg.rotate)) if getattr(cfg, "rotate", 0) else 0.0
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    corners = corners @ rot.T + np.array([cx, cy])
    if cfg.flip and _uniform(gen, 0, 1) < 0.5:
        corners = corners[[1, 0, 3, 2]]
    return corners


def _warp(img: np.ndarray, corners: np.ndarray, out: tuple[int, int]) -> np.ndarray:
    """Sample the quadrilateral `corners` of img [H, W, C] float32 into an out-sized image
    (OpenCV, bilinear, reflection past the edge; the image is first shrunk with area averaging
    where the view is more than 1.5x larger than the output, so zoomed-out text does not alias)."""
    import cv2

    if img.shape[2] > 4:   # OpenCV warps at most 4 channels at a time
        return np.concatenate([_warp(img[..., k:k + 4], corners, out) for k in range(0, img.shape[2], 4)], axis=2)
    h, w = img.shape[:2]
    side = max(np.linalg.norm(corners[1] - corners[0]) / out[1], np.linalg.norm(corners[3] - corners[0]) / out[0])
    if side > 1.5:
        small = cv2.resize(img, (max(2, int(w / side)), max(2, int(h / side))), interpolation=cv2.INTER_AREA)
        corners = corners * np.array([small.shape[1] / w, small.shape[0] / h])
        img = small.reshape(small.shape[0], small.shape[1], -1)
    dst = np.array([[0, 0], [out[1], 0], [out[1], out[0]], [0, out[0]]], np.float64)
    warped = cv2.warpPerspective(img, _homography(corners, dst), (out[1], out[0]),
                                 flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101)
    return warped.reshape(out[0], out[1], -1)


def view(img: np.ndarray, gen, cfg: Any, out: tuple[int, int], base: Optional[int]) -> np.ndarray:
    """One random geometric view of img [H, W, C], out-sized."""
    h, w = img.shape[:2]
    return _warp(img, _view_corners(h, w, out, gen, cfg, base), out)


def mosaic(pool: list, gen, cfg: Any, out: tuple[int, int], base: Optional[int]) -> np.ndarray:
    """A 2x2 grid of views of four random images of `pool` (HWC arrays; split point 30-70%)."""
    import torch

    ry, rx = int(out[0] * _uniform(gen, 0.3, 0.7)), int(out[1] * _uniform(gen, 0.3, 0.7))
    rows = []
    for hh in (ry, out[0] - ry):
        cells = []
        for ww in (rx, out[1] - rx):
            k = int(torch.randint(0, len(pool), (1,), generator=gen))
            cells.append(view(pool[k], gen, cfg, (hh, ww), base))
        rows.append(np.concatenate(cells, axis=1))
    return np.concatenate(rows, axis=0)


def _blur(x: np.ndarray, gen) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(x, (0, 0), _uniform(gen, 0.4, 1.6), borderType=cv2.BORDER_REFLECT_101).reshape(x.shape)


def _jpeg(x: np.ndarray, gen) -> np.ndarray:
    """JPEG round trip of x [H, W, C] (C 1 or 3) through its own min..max as 0..255."""
    import cv2

    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1e-6 or x.shape[2] not in (1, 3):
        return x
    u8 = ((x - lo) / (hi - lo) * 255).clip(0, 255).round().astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, int(_uniform(gen, 30, 90))])
    if not ok:
        return x
    back = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED if x.shape[2] == 3 else cv2.IMREAD_GRAYSCALE)
    return back.reshape(x.shape).astype(np.float32) / 255 * (hi - lo) + lo


def degrade(x: np.ndarray, gen, cfg: Any) -> np.ndarray:
    """Blur, noise and JPEG, each with probability cfg.degrade, of one sample x [H, W, C]."""
    import torch

    p = getattr(cfg, "degrade", 0.0)
    if not p:
        return x
    if _uniform(gen, 0, 1) < p:
        x = _blur(x, gen)
    if _uniform(gen, 0, 1) < p:
        span = float(x.max() - x.min())
        x = x + torch.randn(x.shape, generator=gen).numpy() * span * _uniform(gen, 0.005, 0.03)
    if _uniform(gen, 0, 1) < p:
        x = _jpeg(x, gen)
    return x


def colour(x, gen, cfg: Any):
    """Contrast/gain/brightness jitter relative to each sample's own mean and std, and grayscale."""
    import torch

    n, c = x.shape[:2]
    g = getattr(cfg, "grayscale", 0.0)
    if g and c == 3:
        gray = (torch.rand(n, 1, 1, 1, generator=gen) < g).float()
        x = x * (1 - gray) + x.mean(dim=1, keepdim=True) * gray
    if cfg.jitter > 0:
        j = cfg.jitter
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True) + 1e-6
        contrast = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * j
        gain = 1 + (torch.rand(n, c, 1, 1, generator=gen) * 2 - 1) * j / 2
        bright = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * j * std
        x = (x - mean) * contrast * gain + mean + bright
    return x


def colour_one(x: np.ndarray, gen, cfg: Any) -> np.ndarray:
    """`colour` of one sample x [H, W, C] in numpy (single-threaded: on a loaded 2-core box small
    torch ops with 2 threads ran 10x slower than with one)."""
    c = x.shape[2]
    if getattr(cfg, "grayscale", 0) and c == 3 and _uniform(gen, 0, 1) < cfg.grayscale:
        x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2)
    if cfg.jitter > 0:
        j = cfg.jitter
        mean, std = float(x.mean()), float(x.std()) + 1e-6
        contrast = 1 + _uniform(gen, -j, j)
        gain = 1 + np.array([_uniform(gen, -j / 2, j / 2) for _ in range(c)], np.float32)
        x = (x - mean) * (contrast * gain) + mean + _uniform(gen, -j, j) * std
    return x.astype(np.float32, copy=False)


def hwc_pool(samples: np.ndarray) -> list:
    """N x C x H x W samples as HWC arrays, converted once for mosaics."""
    return [np.ascontiguousarray(s.transpose(1, 2, 0)) for s in np.asarray(samples, np.float32)]


def views(x, gen, cfg: Any, pool: Optional[list] = None):
    """Per sample of x [N, C, H, W] (torch): a mosaic of `pool` images (HWC arrays, `hwc_pool`;
    probability cfg.mosaic) or a view of it, then degradations and colour; a torch batch of
    train_size (or full-size) samples."""
    import torch

    n, _, h, w = x.shape
    base = cfg.train_size
    out = (min(h, base), min(w, base)) if base else (h, w)
    hwc = [np.ascontiguousarray(s.permute(1, 2, 0).numpy()) for s in x]
    pool = hwc if pool is None else pool
    items = []
    for i in range(n):
        if getattr(cfg, "mosaic", 0) and len(pool) > 1 and _uniform(gen, 0, 1) < cfg.mosaic:
            item = mosaic(pool, gen, cfg, out, base)
        else:
            item = view(hwc[i], gen, cfg, out, base)
        items.append(colour_one(degrade(item.astype(np.float32, copy=False), gen, cfg), gen, cfg))
    return torch.from_numpy(np.ascontiguousarray(np.stack(items).transpose(0, 3, 1, 2)))


def degrade_batch(x, gen, cfg: Any):
    """`degrade` of each sample of a torch batch x [N, C, H, W]."""
    import torch

    if not getattr(cfg, "degrade", 0):
        return x
    items = [degrade(np.ascontiguousarray(s.permute(1, 2, 0).numpy()), gen, cfg) for s in x]
    return torch.from_numpy(np.ascontiguousarray(np.stack(items).transpose(0, 3, 1, 2)))
