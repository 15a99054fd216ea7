"""What the INT8 guard measures for a model, built from edgesdk's side (converters never import
edgesdk): the box decoder behind `--metric box-f1`, and `--metric` parsing.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np


def box_decoder_for(preset: Any, input_shape: Sequence[int]) -> Optional[Callable[[dict], np.ndarray]]:
    """The decoder of `preset` (a preset, or convert's model facts: anything with ``decoder``,
    ``labels`` and ``task``, so a model without a preset whose decoder was chosen from its output,
    e.g. YOLO, is judged by boxes too) as `outputs -> K x 4 boxes` in model-input pixels, or None
    when the model has no box decoder (a classifier/raw model)."""
    from .decoders import DECODERS, decoder_class, make_decoder
    from .preprocess import Transform

    kind = (preset.decoder or {}).get("type") if preset is not None else None
    if kind not in DECODERS or not decoder_class(kind).yields_boxes:
        return None

    decoder = make_decoder(decoder=preset.decoder, labels=preset.labels, task=preset.task)
    # a dynamic size (None) leaves the boxes unclipped: each sample has its own size
    h, w = _spatial_size(input_shape)
    transform = Transform(input_size=(h, w), original_size=(h, w))

    def boxes(outputs: dict) -> np.ndarray:
        return decoder(outputs, [transform])[0].boxes

    return boxes


def _spatial_size(input_shape: Sequence[Optional[int]]) -> tuple[int, int]:
    """(height, width) of a 4-D image input, NCHW or NHWC (MediaPipe, TFLite), 0 where dynamic."""
    from runtimes.spec import guess_layout

    if len(input_shape) != 4:
        return 0, 0
    ah, aw = (1, 2) if guess_layout(list(input_shape)) == "NHWC" else (2, 3)
    return int(input_shape[ah] or 0), int(input_shape[aw] or 0)


def parse_metric(metric: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """`--metric` -> (built-in metric name, user module:function spec); either may be None."""
    if metric is None:
        return None, None
    return (None, metric) if ":" in metric else (metric, None)
