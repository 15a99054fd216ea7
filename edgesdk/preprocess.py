"""Preprocessing recorded in a bundle's manifest, applied vectorized over a batch.

Images come in as OpenCV gives them (HxWx3 uint8, BGR). `Preprocessor` resizes them
(stretch, letterbox, center-crop, fit-height with right padding as PaddleOCR's text
classifier wants, or none), fixes color order, scales, normalizes,
transposes to the model's layout and casts to its dtype (quantizing for integer
inputs). It also returns, per image, how to map model coordinates back to the
original image.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from .errors import ConfigError, InputMismatchError, SourceError

#: stretch: resize to size ignoring aspect; letterbox: keep aspect, pad around (centered);
#: crop: keep aspect, fill, center-crop; fit_height: scale to the model height, width
#: follows the aspect up to the model width (stretched beyond), pad on the right (PaddleOCR
#: text-line models); none: the image must already have the model size.
RESIZE_MODES = ("stretch", "letterbox", "crop", "fit_height", "none")
LIMIT_TYPES = ("max", "min")
#: resize filters by name -> OpenCV flag; "area" is what PIL/torchvision's antialiased bilinear
#: comes closest to when shrinking, "lanczos" what PaddleClas evaluates with
INTERPOLATIONS = {"linear": 1, "area": 3, "cubic": 2, "lanczos": 4, "nearest": 0}


@dataclass(frozen=True)
class PreprocessSpec:
    """How raw images become model input. Stored in `manifest.json` under `preprocess`."""

    size: Optional[tuple[int, int]] = None  # (height, width); None: keep the image size
    resize: str = "stretch"
    color: str = "RGB"  # channel order the model wants
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str = "NCHW"
    dtype: str = "float32"
    pad_value: int = 114
    #: for integer inputs: real = (q - zero_point) * scale
    quantization: Optional[tuple[float, int]] = None
    #: dynamic-size models: round the resized size to a multiple of this
    size_multiple: int = 1
    #: dynamic-size models (size None): scale so the longest ("max": shrink only) or the
    #: shortest ("min": enlarge only) side meets this limit, as PaddleOCR's det_limit_side_len
    limit_side_len: Optional[int] = None
    limit_type: str = "max"
    #: resize "crop": scale so the crop is this fraction of the short side (0.875: resize to 256,
    #: crop 224, as ImageNet evaluation does); 1.0 crops at the model size
    crop_ratio: float = 1.0
    #: resize "fit_height" on a model with a dynamic width: the width follows the image's aspect
    #: (at least size[1], rounded up to size_multiple) instead of padding to size[1], as
    #: PaddleOCR's recognizer does (imgW = max(320, 48 * w / h))
    dynamic_width: bool = False
    #: the resize filter (INTERPOLATIONS); the model was trained with one, and it moves scores
    interpolation: str = "linear"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"preprocess.interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                              f"got {self.interpolation!r}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"preprocess.resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.color not in ("RGB", "BGR", "GRAY"):
            raise ConfigError(f"preprocess.color must be RGB, BGR or GRAY, got {self.color!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"preprocess.layout must be NCHW or NHWC, got {self.layout!r}")
        if self.limit_type not in LIMIT_TYPES:
            raise ConfigError(f"preprocess.limit_type must be one of {LIMIT_TYPES}, got {self.limit_type!r}")
        if self.size is not None:
            if len(self.size) != 2 or int(self.size[0]) < 1 or int(self.size[1]) < 1:
                raise ConfigError(f"preprocess.size must be [height, width] of positive ints, got {self.size!r}")
            object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        if int(self.size_multiple) < 1:
            raise ConfigError(f"preprocess.size_multiple must be >= 1, got {self.size_multiple!r}")
        if self.limit_side_len is not None and int(self.limit_side_len) < 1:
            raise ConfigError(f"preprocess.limit_side_len must be >= 1, got {self.limit_side_len!r}")
        if not 0.0 < float(self.crop_ratio) <= 1.0:
            raise ConfigError(f"preprocess.crop_ratio must be in (0, 1], got {self.crop_ratio!r}")
        if self.resize == "fit_height" and self.size is None:
            raise ConfigError("preprocess.resize='fit_height' needs a fixed size [height, width]")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if any(s == 0 for s in self.std):
            raise ConfigError("preprocess.std must not contain 0")
        if self.quantization is not None:
            object.__setattr__(self, "quantization", (float(self.quantization[0]), int(self.quantization[1])))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size) if self.size else None
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["quantization"] = list(self.quantization) if self.quantization else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessSpec":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = set(d) - set(known)
        if unknown:
            raise ConfigError(f"preprocess has unknown keys {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        if known.get("size") is not None:
            known["size"] = tuple(known["size"])
        if known.get("quantization") is not None:
            known["quantization"] = tuple(known["quantization"])
        return cls(**known)


from .imageio import read_image  # noqa: E402,F401  (its home; kept importable from here)


@dataclass
class Transform:
    """Where a model-input pixel came from: orig = (model - pad) / ratio."""

    ratio: tuple[float, float] = (1.0, 1.0)  # (ry, rx)
    pad: tuple[float, float] = (0.0, 0.0)  # (top, left)
    input_size: tuple[int, int] = (0, 0)  # model input (h, w)
    original_size: tuple[int, int] = (0, 0)  # original (h, w)

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) x,y points in model-input pixels to original-image pixels."""
        xy = np.asarray(xy, dtype=np.float32)
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] - self.pad[1]) / self.ratio[1]
        out[..., 1] = (xy[..., 1] - self.pad[0]) / self.ratio[0]
        return out

    def to_model(self, xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) x,y points in original-image pixels to model-input pixels."""
        xy = np.asarray(xy, dtype=np.float32)
        out = np.empty_like(xy)
        out[..., 0] = xy[..., 0] * self.ratio[1] + self.pad[1]
        out[..., 1] = xy[..., 1] * self.ratio[0] + self.pad[0]
        return out

    def boxes_to_original(self, boxes: np.ndarray, clip: bool = True) -> np.ndarray:
        """Map N x 4 xyxy boxes in model-input pixels to original pixels (clipped to the image)."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        out = self.to_original(boxes.reshape(-1, 2, 2)).reshape(-1, 4)
        if clip and self.original_size[0] > 0:
            h, w = self.original_size
            out[:, 0::2] = np.clip(out[:, 0::2], 0, w)
            out[:, 1::2] = np.clip(out[:, 1::2], 0, h)
        return out


@dataclass
class Preprocessor:
    spec: PreprocessSpec
    _mean: np.ndarray = field(init=False, repr=False)
    _inv_std: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        s = self.spec
        channels = 1 if s.color == "GRAY" else 3
        mean = np.asarray(s.mean[:channels], np.float32)
        std = np.asarray(s.std[:channels], np.float32)
        # (x*scale - mean)/std folded into one multiply-add
        self._mul = (s.scale / std).astype(np.float32)
        self._add = (-mean / std).astype(np.float32)

    def target_size(self, h: int, w: int) -> tuple[int, int]:
        """Model-input (height, width) for an image of h x w."""
        s = self.spec
        if s.size is not None and s.dynamic_width:
            th, min_w = s.size
            m = max(1, s.size_multiple)
            return th, max(min_w, int(math.ceil(math.ceil(th * w / h) / m)) * m)
        if s.size is not None:
            return s.size
        r = 1.0
        if s.limit_side_len:
            if s.limit_type == "max" and max(h, w) > s.limit_side_len:
                r = s.limit_side_len / max(h, w)
            elif s.limit_type == "min" and min(h, w) < s.limit_side_len:
                r = s.limit_side_len / min(h, w)
        m = max(1, s.size_multiple)
        # same rounding as PaddleOCR's DetResizeForTest: truncate, then round to the multiple
        return max(m, int(round(int(h * r) / m)) * m), max(m, int(round(int(w * r) / m)) * m)

    def _resize_one(self, img: np.ndarray, th: int, tw: int) -> tuple[np.ndarray, Transform]:
        h, w = img.shape[:2]
        mode = self.spec.resize
        if mode == "none" or (h, w) == (th, tw):
            if (h, w) != (th, tw):
                raise InputMismatchError(
                    f"image is {w}x{h} but the model takes {tw}x{th} and preprocess.resize is 'none'")
            return img, Transform(input_size=(th, tw), original_size=(h, w))
        if mode == "stretch":
            out = cv2.resize(img, (tw, th), interpolation=INTERPOLATIONS[self.spec.interpolation])
            return out, Transform((th / h, tw / w), (0.0, 0.0), (th, tw), (h, w))
        if mode == "fit_height":
            # PaddleOCR cls/rec: height to th, width by aspect (ceil) capped at tw, pad right
            nw = max(1, min(tw, int(math.ceil(th * w / h))))
            resized = cv2.resize(img, (nw, th), interpolation=INTERPOLATIONS[self.spec.interpolation])
            out = np.full((th, tw) + img.shape[2:], self.spec.pad_value, dtype=img.dtype)
            out[:, :nw] = resized
            return out, Transform((th / h, nw / w), (0.0, 0.0), (th, tw), (h, w))
        if mode == "letterbox":
            r = min(th / h, tw / w)
            nh, nw = max(1, round(h * r)), max(1, round(w * r))
            resized = cv2.resize(img, (nw, nh), interpolation=INTERPOLATIONS[self.spec.interpolation])
            top, left = (th - nh) // 2, (tw - nw) // 2
            out = np.full((th, tw) + img.shape[2:], self.spec.pad_value, dtype=img.dtype)
            out[top:top + nh, left:left + nw] = resized
            return out, Transform((r, r), (float(top), float(left)), (th, tw), (h, w))
        # crop: scale the short side to fit, then center-crop
        r = max(th / h, tw / w) / self.spec.crop_ratio
        nh, nw = max(th, round(h * r)), max(tw, round(w * r))
        resized = cv2.resize(img, (nw, nh), interpolation=INTERPOLATIONS[self.spec.interpolation])
        top, left = (nh - th) // 2, (nw - tw) // 2
        return resized[top:top + th, left:left + tw], Transform((r, r), (-float(top), -float(left)), (th, tw), (h, w))

    def __call__(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Transform]]:
        """BGR uint8 images -> (model-ready batch, per-image transforms)."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        if len(images) == 0:
            raise InputMismatchError("preprocess got an empty list of images")
        s = self.spec
        first = images[0]
        th, tw = self.target_size(*first.shape[:2])
        prepared, transforms = [], []
        for i, img in enumerate(images):
            if not isinstance(img, np.ndarray) or img.ndim not in (2, 3) or img.dtype != np.uint8:
                raise InputMismatchError(
                    f"image {i} must be an HxW or HxWx3 uint8 array (as cv2.imread returns), got "
                    f"{getattr(img, 'dtype', type(img).__name__)} {getattr(img, 'shape', '')}")
            if img.ndim == 2:
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            elif img.shape[2] == 4:
                img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
            out, t = self._resize_one(img, th, tw)
            prepared.append(out)
            transforms.append(t)
        batch = np.stack(prepared)  # N,H,W,3 BGR uint8
        if s.color == "RGB":
            batch = batch[..., ::-1]
        elif s.color == "GRAY":
            batch = (batch @ np.array([0.114, 0.587, 0.299], np.float32))[..., None]
        x = batch.astype(np.float32) * self._mul + self._add
        if s.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        dtype = np.dtype(s.dtype)
        if s.quantization is not None and dtype.kind in "iu":
            q_scale, zero = s.quantization
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / q_scale) + zero, info.min, info.max)
        return np.ascontiguousarray(x.astype(dtype, copy=False)), transforms
