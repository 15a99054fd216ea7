"""Decoders: raw model outputs -> one `Result` per batch item, in original-image pixels.

`make_decoder(manifest)` picks the decoder from the manifest's ``decoder["type"]`` (or its
task) and passes it the decoder settings and labels. Every decoder is called as
``decoder(outputs: dict[str, ndarray], transforms: list[Transform]) -> list[Result]``.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

from ..errors import ConfigError
from .base import Decoder

# decoder type -> "module:class"
DECODERS = {
    "classification": "classification:ClassificationDecoder",
    "blazeface": "blazeface:BlazeFaceDecoder",
    "mediapipe_ssd": "blazeface:MediaPipeSSDDecoder",
    "face_landmark": "face_landmark:FaceLandmarkDecoder",
    "ppocr_det": "ppocr_det:PPOCRDetDecoder",
    "raw": "raw:RawDecoder",
    "ctc": "ctc:CTCDecoder",
    "segmentation": "segmentation:SegmentationDecoder",
}
# task -> decoder type when the manifest names none
TASK_DEFAULT = {"classification": "classification", "text_detection": "ppocr_det", "raw": "raw",
                "text_recognition": "ctc", "segmentation": "segmentation"}


def decoder_class(kind: str) -> type[Decoder]:
    import importlib

    target = DECODERS.get(kind)
    if target is None:
        raise ConfigError(f"unknown decoder type {kind!r}; known: {', '.join(sorted(DECODERS))}")
    module, cls = target.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def make_decoder(manifest: Any = None, *, decoder: Optional[Mapping[str, Any]] = None,
                 labels: Optional[Sequence[str]] = None, task: Optional[str] = None) -> Decoder:
    """The decoder a manifest asks for.

    Pass a `Manifest` (anything with ``decoder``, ``labels`` and ``task``), or the settings
    directly: ``make_decoder(decoder={"type": "blazeface", ...}, labels=["face"])``.
    """
    if manifest is not None:
        decoder = manifest.decoder if decoder is None else decoder
        labels = manifest.labels if labels is None else labels
        task = manifest.task if task is None else task
    settings = dict(decoder or {})
    kind = settings.pop("type", None)
    if kind is None:
        if task == "detection":
            raise ConfigError("a detection manifest must name its decoder (decoder.type, e.g. 'blazeface'); "
                              f"known: {', '.join(sorted(DECODERS))}")
        kind = TASK_DEFAULT.get(task or "raw", "raw")
    cls = decoder_class(kind)
    return cls(labels=list(labels or []), **settings)


__all__ = ["Decoder", "make_decoder", "decoder_class", "DECODERS"]
