"""What the pipeline needs of a model: preprocess a batch of images, submit it to the
engine (a Future), decode the outputs into one `Result` per image, and the batch limits.

`load_stream_model` accepts a bundle directory or model file (through the foundation's
`Predictor`), a `Predictor`, or any object with ``preprocess``, ``submit`` and ``decode``
(tests and custom engines).
"""
from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from ..results import Result

log = logging.getLogger("edgesdk.streaming")

Feeds = Union[np.ndarray, dict]


@dataclass
class StreamModel:
    preprocess: Callable[[Sequence[np.ndarray]], tuple[Feeds, list]]
    submit: Callable[[Feeds], "Future[dict[str, np.ndarray]]"]
    decode: Callable[[dict, list], list[Result]]
    #: the most images one call takes (None: no limit; a fixed-batch-1 model is looped by the runtime)
    max_batch: Optional[int] = None
    #: the model takes exactly this many images per call: shorter batches are padded
    fixed_batch: Optional[int] = None
    name: str = "model"
    close: Optional[Callable[[], None]] = None
    #: the bundle, when there is one (its manifest names a profile)
    bundle: Any = None
    #: image -> key; images with different keys cannot share a call (dynamic-size models)
    group_key: Optional[Callable[[np.ndarray], Any]] = None
    #: how the engine runs (replicas, streams, threads), for the statistics; None: one plain engine
    describe: Optional[Callable[[], dict[str, Any]]] = None

    def pad(self, feeds: Feeds, n: int) -> tuple[Feeds, int]:
        """Pad a batch of n to `fixed_batch` by repeating the last image; returns (feeds, size)."""
        if not self.fixed_batch or n >= self.fixed_batch:
            return feeds, n
        extra = self.fixed_batch - n

        def grow(a: np.ndarray) -> np.ndarray:
            return np.concatenate([a, np.repeat(a[-1:], extra, axis=0)], axis=0)

        if isinstance(feeds, dict):
            return {k: grow(v) for k, v in feeds.items()}, self.fixed_batch
        return grow(feeds), self.fixed_batch


def from_predictor(predictor: Any) -> StreamModel:
    rt = predictor.runtime
    rt.activate()
    dims = [s.batch_dim for s in rt.inputs]
    fixed = min(d for d in dims if d is not None) if any(d is not None for d in dims) else None
    # batch 1 fixed: the runtime loops bigger batches itself, so no limit; N > 1 fixed: pad to N
    fixed_batch = fixed if fixed and fixed > 1 else None
    bundle = getattr(predictor, "bundle", None)
    name = bundle.manifest.name if bundle is not None else Path(str(rt.model_path)).name
    # the Predictor turns a preprocessed batch into the runtime's feeds (layout of converted models)
    to_feeds = getattr(predictor, "feeds", None)

    def submit(batch: Feeds) -> "Future[dict[str, np.ndarray]]":
        feeds = to_feeds(batch) if to_feeds is not None and isinstance(batch, np.ndarray) else batch
        return rt.submit(feeds)

    group_key = None
    pre = getattr(predictor, "preprocessor", None)
    if pre is not None and getattr(pre.spec, "size", None) is None:
        def group_key(img: np.ndarray) -> Any:
            return pre.target_size(*img.shape[:2])
    return StreamModel(preprocess=predictor.preprocess, submit=submit, decode=predictor.decode,
                       max_batch=fixed_batch, fixed_batch=fixed_batch, name=name, close=rt.deactivate,
                       bundle=bundle, group_key=group_key)


def load_stream_model(model: Any, backend: Optional[str] = None, **runtime_kw: Any) -> tuple[StreamModel, bool]:
    """(StreamModel, owned): `owned` means the pipeline created it and must close it."""
    if isinstance(model, StreamModel):
        return model, False
    if isinstance(model, (str, Path)):
        from ..predictor import Predictor

        return from_predictor(Predictor(model, backend=backend, **runtime_kw)), True
    if hasattr(model, "runtime") and hasattr(model, "preprocess") and hasattr(model, "decode"):
        return from_predictor(model), False
    if all(hasattr(model, a) for a in ("preprocess", "submit", "decode")):
        return StreamModel(model.preprocess, model.submit, model.decode,
                           max_batch=getattr(model, "max_batch", None),
                           fixed_batch=getattr(model, "fixed_batch", None),
                           name=getattr(model, "name", type(model).__name__),
                           close=getattr(model, "close", None)), False
    from ..errors import ConfigError

    raise ConfigError(f"cannot stream with {type(model).__name__}: pass a bundle directory, a model file, "
                      "a Predictor, or an object with preprocess/submit/decode")
