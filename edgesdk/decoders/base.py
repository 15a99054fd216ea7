"""The decoder interface and small helpers shared by decoders."""
from __future__ import annotations

import abc
import inspect
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..errors import ConfigError, InputMismatchError
from ..preprocess import Transform
from ..results import Result


class Decoder(abc.ABC):
    """Turns a batch of model outputs into one `Result` per item.

    Settings come from the manifest's ``decoder`` section as keyword arguments; an unknown
    setting is a `ConfigError` (a typo must not silently fall back to a default).
    """

    #: the name used in manifests (decoder.type)
    kind: str = ""
    #: whether its results carry boxes (the INT8 guard then judges by box F1 by default)
    yields_boxes: bool = False

    def __init__(self, labels: Optional[Sequence[str]] = None) -> None:
        self.labels = list(labels or [])

    @abc.abstractmethod
    def __call__(self, outputs: Mapping[str, np.ndarray], transforms: Sequence[Transform]) -> list[Result]:
        ...

    def check_outputs(self, outputs: Sequence[tuple[str, Sequence[Optional[int]]]]) -> None:
        """Refuse, at build time, settings that cannot decode a model with these (name, dims)
        outputs; a decoder that cannot tell from shapes alone accepts them."""

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else str(class_id)

    @classmethod
    def settings(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "labels", "kwargs")]

    def _check_unknown(self, unknown: Mapping[str, Any]) -> None:
        if unknown:
            raise ConfigError(f"decoder {self.kind!r} got unknown settings {sorted(unknown)}; "
                              f"it takes {', '.join(self.settings())}")


def batch_size(outputs: Mapping[str, np.ndarray], transforms: Sequence[Transform]) -> int:
    n = len(transforms)
    for name, arr in outputs.items():
        if arr.ndim and arr.shape[0] != n:
            raise InputMismatchError(
                f"output {name!r} has batch {arr.shape[0]} but {n} transforms were given (one per image)")
    return n


def pick_output(outputs: Mapping[str, np.ndarray], name: Optional[str], what: str,
                test: Any = None) -> np.ndarray:
    """The output called `name`, else the only one (or the first passing `test`)."""
    if name is not None:
        if name not in outputs:
            raise ConfigError(f"decoder setting names output {name!r} for {what}, but the model gives "
                              f"{list(outputs)}")
        return outputs[name]
    if test is not None:
        for arr in outputs.values():
            if test(arr):
                return arr
        raise InputMismatchError(f"no output looks like {what}; outputs: "
                                 f"{ {k: tuple(v.shape) for k, v in outputs.items()} }")
    return next(iter(outputs.values()))
