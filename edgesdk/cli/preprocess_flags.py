"""The preprocessing flags `convert`, `predict`, `bench` and `run` share (one definition)."""
from __future__ import annotations

from typing import Any, Callable

import click

from ..preprocess import INTERPOLATIONS
from ..preprocess_options import COLORS, LAYOUTS, NORMALIZATIONS, RESIZE_CHOICES, PreprocessOptions

_FLAGS = [
    click.option("--normalize", type=click.Choice(list(NORMALIZATIONS)), default=None,
                 help="imagenet: x/255 then ImageNet mean/std; unit: x/255; symmetric: (x/255-0.5)/0.5; raw: x."),
    click.option("--mean", "pre_mean", default=None, help="Per-channel mean R,G,B after --scale (e.g. 0.485,0.456,0.406)."),
    click.option("--std", "pre_std", default=None, help="Per-channel std R,G,B after --scale."),
    click.option("--scale", "pre_scale", type=float, default=None, help="Pixel multiplier before mean/std (1/255 ...)."),
    click.option("--color", "pre_color", type=click.Choice(list(COLORS), case_sensitive=False), default=None,
                 help="Channel order the model was trained on."),
    click.option("--resize", "pre_resize", type=click.Choice(list(RESIZE_CHOICES)), default=None,
                 help="How images reach the model size."),
    click.option("--pad-value", "pre_pad", type=click.IntRange(0, 255), default=None, help="Pixel value of padding."),
    click.option("--layout", "pre_layout", type=click.Choice(list(LAYOUTS), case_sensitive=False), default=None,
                 help="Input layout (must agree with the model's input shape)."),
    click.option("--crop-ratio", "pre_crop", type=click.FloatRange(0, 1, min_open=True), default=None,
                 help="--resize crop: crop this share of the short side (0.875 = resize 256, crop 224)."),
    click.option("--interpolation", "pre_interp", type=click.Choice(list(INTERPOLATIONS), case_sensitive=False),
                 default=None, help="Resize filter the model was trained with (default linear)."),
]
_KEYS = {"normalize": "normalize", "pre_mean": "mean", "pre_std": "std", "pre_scale": "scale",
         "pre_color": "color", "pre_resize": "resize", "pre_pad": "pad_value", "pre_layout": "layout", "pre_crop": "crop_ratio",
         "pre_interp": "interpolation"}


def preprocess_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    for flag in reversed(_FLAGS):
        fn = flag(fn)
    return fn


def pop_preprocess(kwargs: dict[str, Any]) -> PreprocessOptions:
    """Take the flags out of a command's kwargs as validated `PreprocessOptions`."""
    return PreprocessOptions(**{field: kwargs.pop(key) for key, field in _KEYS.items()})
