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
]


def decoder_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    for flag in reversed(_FLAGS):
        fn = flag(fn)
    return fn


def pop_decoder(kwargs: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Take the flags out of a command's kwargs as decoder settings (None when none was given)."""
    kind, layout = kwargs.pop("decoder_type", None), kwargs.pop("decoder_layout", None)
    if kind is not None and layout is not None and kind != "yolo":
        from ..errors import ConfigError

        raise ConfigError(f"--decoder-layout {layout} is a YOLO setting, but --decoder {kind} was given: "
                          "drop one of them")
    stated = {k: v for k, v in (("type", kind), ("layout", layout)) if v is not None}
    return stated or None
