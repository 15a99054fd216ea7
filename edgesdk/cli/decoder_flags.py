"""The decoder flags of `convert`: override the decoder a model would get (one definition)."""
from __future__ import annotations

from typing import Any, Callable, Optional

import click

from ..decoders import DECODERS
from ..decoders.yolo import LAYOUTS

_FLAGS = [
    click.option("--decoder", "decoder_type", type=click.Choice(sorted(DECODERS)), default=None,
                 help="Decoder for the outputs (default: the preset's, or chosen from the output shape for "
                      "--task detection, e.g. yolo)."),
    click.option("--decoder-layout", type=click.Choice(list(LAYOUTS)), default=None,
                 help="YOLO output layout: v8 [N,4+C,A] (v8/v11), v5 [N,A,5+C] (v5/v7), end2end [N,K,6] "
                      "(v10) (default: from the output shape and the class count)."),
    click.option("--decoder-opt", "decoder_opts", multiple=True, metavar="KEY=VALUE",
                 help="A decoder setting (repeatable), e.g. score_threshold=0.4, strides=8,16,32 or "
                      "input_size=224,224; VALUE is JSON, a comma list of numbers, or text. Overrides the "
                      "preset's or the inferred setting of that name."),
]


def decoder_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    for flag in reversed(_FLAGS):
        fn = flag(fn)
    return fn


def pop_decoder(kwargs: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Take the flags out of a command's kwargs as decoder settings (None when none was given)."""
    from ..errors import ConfigError

    kind, layout = kwargs.pop("decoder_type", None), kwargs.pop("decoder_layout", None)
    if kind is not None and layout is not None and kind != "yolo":
        raise ConfigError(f"--decoder-layout {layout} is a YOLO setting, but --decoder {kind} was given: "
                          "drop one of them")
    stated = dict(_setting(text) for text in kwargs.pop("decoder_opts", ()) or ())
    stated.update({k: v for k, v in (("type", kind), ("layout", layout)) if v is not None})
    return stated or None


def _setting(text: str) -> tuple[str, Any]:
    """KEY=VALUE of --decoder-opt: VALUE as JSON, else a comma list of numbers, else the text."""
    import json

    from ..errors import ConfigError

    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier() or key == "type":
        raise ConfigError(f"--decoder-opt takes KEY=VALUE (e.g. score_threshold=0.4), got {text!r}"
                          + ("; name the decoder with --decoder TYPE" if key == "type" else ""))
    try:
        return key, json.loads(value)
    except ValueError:
        pass
    try:
        return key, [json.loads(v) for v in value.split(",")] if "," in value else value
    except ValueError:
        return key, value
