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
    "picodet": "gfl:GFLDecoder",
    "face_landmark": "face_landmark:FaceLandmarkDecoder",
    "ppocr_det": "ppocr_det:PPOCRDetDecoder",
    "raw": "raw:RawDecoder",
    "ctc": "ctc:CTCDecoder",
    "segmentation": "segmentation:SegmentationDecoder",
    "yolo": "yolo:YoloDecoder",
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
            raise ConfigError("a detection manifest must name its decoder (decoder.type, e.g. 'yolo' or "
                              f"'blazeface'); known: {', '.join(sorted(DECODERS))}")
        kind = TASK_DEFAULT.get(task or "raw", "raw")
    cls = decoder_class(kind)
    return cls(labels=list(labels or []), **settings)


def decoder_for_task(task: str, outputs: Sequence[tuple[str, Sequence[Optional[int]]]], labels: Sequence[str],
                     stated: Optional[Mapping[str, Any]] = None, default: Optional[Mapping[str, Any]] = None,
                     input_size: Optional[Sequence[int]] = None) -> tuple[dict[str, Any], Optional[str]]:
    """Decoder settings for a model with no preset decoder, and a line stating the choice (or None).

    `outputs` are the model's (name, dims); `stated` what the user said (``--decoder TYPE``,
    ``--decoder-layout``, ``--decoder-opt KEY=VALUE``: {"type": ..., "layout": ..., KEY: VALUE}).
    A decoder class with a ``settings_for(outputs, input_size, **stated)`` classmethod reads its
    settings off the output shapes (MediaPipe SSD anchors). A detection model with nothing stated
    gets the YOLO decoder when its output shape and class count say which layout it has; otherwise
    this refuses, naming the options. Other tasks keep `default`.
    """
    settings = {k: v for k, v in (stated or {}).items() if v is not None}
    kind = settings.pop("type", None) or ("yolo" if "layout" in settings else None)
    if kind is None and task != "detection":
        if not settings:
            return dict(default or {}), None
        kind = (default or {}).get("type") or TASK_DEFAULT.get(task, "raw")
        settings = {**{k: v for k, v in (default or {}).items() if k != "type"}, **settings}
    if kind is None:
        _refuse_unguessable(outputs)
    kind = kind or "yolo"
    if kind == "yolo":
        from .yolo import yolo_settings

        rank3 = [(n, d) for n, d in outputs if len(d) == 3] or list(outputs)[:1]
        name, dims = rank3[0] if rank3 else ("output", [])
        try:
            out = yolo_settings(dims, labels, settings.pop("layout", None), input_size, name, **settings)
        except ConfigError as exc:
            if stated:
                raise
            raise ConfigError(f"--task detection: no preset names this model's decoder and {exc}; or name "
                              f"another decoder with --decoder TYPE ({', '.join(sorted(DECODERS))})") from None
        return out, make_decoder(decoder=out, labels=labels, task=task).describe()
    cls = decoder_class(kind)
    infer = getattr(cls, "settings_for", None)
    if infer is not None:  # settings read off the model's outputs, said as inferred
        return infer(outputs, input_size, **settings)
    cls(labels=list(labels or []), **settings)  # unknown settings fail here, not at predict
    return {"type": kind, **settings}, f"decoder {kind} (option --decoder)"


def _refuse_unguessable(outputs: Sequence[tuple[str, Sequence[Optional[int]]]]) -> None:
    """The YOLO guess reads one output: a YOLO decode of a MediaPipe SSD's regressors or of one
    level of a PicoDet head is garbage that looks like boxes, so for outputs shaped like those
    (or several rank-3 outputs of no known head) the user picks the decoder."""
    from .blazeface import looks_like_ssd
    from .gfl import looks_like_gfl

    shapes = ", ".join(f"{n} {list(d)}" for n, d in outputs)
    head = None
    if looks_like_ssd(outputs):
        head = ("pair box regressors with per-anchor scores, as a MediaPipe SSD's do", "mediapipe_ssd")
    elif looks_like_gfl(outputs):
        head = ("pair class scores with box distributions per stride level, as a PicoDet/GFL head's do", "picodet")
    if head is not None:
        raise ConfigError(f"--task detection: no preset names this model's decoder, and its outputs ({shapes}) "
                          f"{head[0]}, not a YOLO head: pass --decoder {head[1]} (settings inferred from the shapes; "
                          "--decoder-opt to set them), --decoder yolo to decode it as YOLO anyway, or --task raw")
    if sum(len(d) == 3 for _, d in outputs) > 1:
        raise ConfigError(f"--task detection: no preset names this model's decoder, and it has several rank-3 outputs "
                          f"({shapes}), where a YOLO head has one: name the decoder with --decoder TYPE "
                          f"({', '.join(sorted(DECODERS))}), the output with --decoder-opt output=NAME for YOLO, or "
                          "use --task raw")


def decoder_over_preset(preset_decoder: Mapping[str, Any], preset_name: str, stated: Optional[Mapping[str, Any]],
                        outputs: Sequence[tuple[str, Sequence[Optional[int]]]], labels: Sequence[str],
                        task: str) -> Optional[tuple[dict[str, Any], Optional[str]]]:
    """A preset's decoder with the stated settings over it, checked against the model's outputs,
    and a line saying what was stated (None: nothing was); None when `stated` names another
    decoder (a ``layout`` is YOLO's), which then replaces the preset's."""
    stated = {k: v for k, v in (stated or {}).items() if v is not None}
    kind = stated.get("type") or ("yolo" if "layout" in stated else None)
    if kind not in (None, preset_decoder.get("type")):
        return None
    decoder = {**preset_decoder, **stated}
    if not {k for k in stated if k != "type"}:  # naming the preset's own decoder changes nothing
        return decoder, None
    make_decoder(decoder=decoder, labels=labels, task=task).check_outputs(outputs)  # fails now, not at predict
    said = ", ".join(f"{k}={v}" for k, v in stated.items() if k != "type")
    return decoder, f"decoder: preset {preset_name}'s, with {said} as stated"


__all__ = ["Decoder", "make_decoder", "decoder_class", "decoder_for_task", "decoder_over_preset", "DECODERS"]
