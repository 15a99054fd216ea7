"""`Predictor`: images in, `Result`s out, for a bundle or a bare model file.

    from edgesdk.predictor import Predictor
    with Predictor("bundles/faces") as p:          # or Predictor(".cache/models/ppocr_cls.onnx")
        results = p.predict([cv2.imread("a.jpg"), "b.jpg"])

A bundle brings its preprocessing and decoder from its manifest. A bare model file gets
them from its preset (looked up by sha256 or file name, see `edgesdk.presets`); an unknown
model gets a guessed preprocessing (RGB, [0, 1], stretched) and the raw decoder. An unknown
model with dynamic image dims needs `input_shape` (-1 keeps a dim dynamic, edgesdk.shapes):
nothing else says what size to feed it.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from runtimes import Runtime
from runtimes import load as load_runtime

from .bundle import Bundle, Manifest
from .decoders import Decoder, make_decoder
from .errors import BundleError, InputMismatchError
from .imageio import read_image
from .labels import read_labels
from .preprocess import Preprocessor, Transform
from .results import Result

log = logging.getLogger("edgesdk.predictor")

ImageLike = Union[np.ndarray, str, Path]


class Predictor:
    """Preprocess, run and decode batches of images.

    Args:
        bundle_or_path: a bundle directory, a `Bundle`, or a model file.
        backend: engine name (default: the bundle's, or by file suffix).
        preset: for a bare model file, a preset name to use instead of the lookup.
        preprocess_options: for a bare model file, stated preprocessing (PreprocessOptions).
        input_shape: for a bare model file, the shape to feed (e.g. [1, 3, 224, 224]; -1 keeps a
            dim dynamic: [1, 3, 48, -1] with fit-height resizing follows each image's width).
        batch_size: most images per engine call (default: the model's fixed batch, else 8).
        task, labels: for a bare model file, what its outputs are and the class names.
        decoder: for a bare model file, stated decoder settings ({"type": "mediapipe_ssd",
            "score_threshold": 0.6}): over the preset's, or read off the outputs where none is known.
        **runtime_kw: passed to `runtimes.load` (device, precision, threads, ...).
    """

    def __init__(self, bundle_or_path: Union[str, Path, Bundle], backend: Optional[str] = None, *,
                 preset: Optional[str] = None, batch_size: Optional[int] = None,
                 preprocess_options: Any = None, input_shape: Optional[Sequence[Any]] = None,
                 task: Optional[str] = None, labels: Union[str, Path, Sequence[str], None] = None,
                 decoder: Optional[Mapping[str, Any]] = None, **runtime_kw: Any) -> None:
        self.bundle: Optional[Bundle] = None
        if isinstance(bundle_or_path, Bundle):
            self.bundle = bundle_or_path
        else:
            path = Path(bundle_or_path)
            if path.is_dir():
                self.bundle = Bundle.load(path)
            elif not path.exists():
                raise BundleError(f"{path} does not exist (expected a model file or a bundle directory)")
        if self.bundle is not None and decoder:
            raise BundleError(f"--decoder/--decoder-opt: the bundle {self.bundle.path.name} records its own decoder; "
                              "the options are for bare model files (re-convert the bundle to change it)")
        if self.bundle is not None and input_shape is not None:
            raise BundleError(f"--input-shape: the bundle {self.bundle.path.name} records its own input shape; the "
                              "option is for bare model files (re-convert the bundle to change it)")
        if self.bundle is not None:
            self.manifest: Manifest = self.bundle.manifest
            self.model_path = self.bundle.model_path
            self.runtime: Runtime = self.bundle.runtime(backend, **runtime_kw)
        else:
            self.model_path = Path(bundle_or_path)
            self.runtime = load_runtime(self.model_path, backend=backend, **runtime_kw)
            self.runtime.activate()
            try:
                overrides = _task_overrides(task, labels)
                self.manifest = _bare_manifest(self.model_path, preset, self.runtime, preprocess_options, input_shape,
                                               overrides, decoder)
            except BaseException:
                self.runtime.close()  # refused: leave no engine behind
                raise
            assumed = (self.manifest.provenance.get("preprocess_sources") or {}).get("assumed", [])
            if self.manifest.provenance.get("preset") is None and assumed:
                from .preprocess_options import assumed_flags

                log.warning("%s: no preset known for this model and nothing stated for %s; assumed %s. State "
                            "them with those options (or --normalize) or wrap the model in a bundle with edgesdk "
                            "convert.", self.model_path.name, ", ".join(assumed),
                            assumed_flags(self.manifest.preprocess, assumed))
        self.preprocessor: Optional[Preprocessor] = (
            Preprocessor(self.manifest.preprocess) if self.manifest.preprocess is not None else None)
        self.decoder: Decoder = make_decoder(self.manifest)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._batch_size = batch_size

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Predictor":
        self.runtime.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.runtime.close()

    @property
    def batch_size(self) -> int:
        if self._batch_size is not None:
            return self._batch_size
        fixed = self.runtime.max_batch
        # a looped batch-1 model still takes a whole batch per infer call
        return 8 if fixed in (None, 1) else fixed

    @property
    def task(self) -> str:
        return self.manifest.task

    # ------------------------------------------------------------------ steps
    def preprocess(self, images: Sequence[ImageLike]) -> tuple[np.ndarray, list[Transform]]:
        """Images (arrays or paths) -> (model-ready batch, transforms)."""
        if self.preprocessor is None:
            raise self._no_preprocessing()
        return self.preprocessor(_load_all(images))

    def decode(self, outputs: dict[str, np.ndarray], transforms: Sequence[Transform]) -> list[Result]:
        return self.decoder(outputs, transforms)

    def feeds(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """A preprocessed batch -> the runtime's feeds (transposed when the model's layout
        differs from the manifest's, e.g. a TFLite conversion of an NCHW model)."""
        inputs = self.runtime.inputs
        if len(inputs) != 1:
            raise InputMismatchError(f"{self.model_path.name} has {len(inputs)} inputs; Predictor feeds "
                                     "single-input image models only (use .runtime.infer for others)")
        spec = inputs[0]
        # A converted model can change layout (ONNX NCHW -> TFLite NHWC); trust the model.
        if batch.ndim == 4 and spec.rank == 4 and spec.layout in ("NCHW", "NHWC") and \
                self.manifest.preprocess is not None and spec.layout != self.manifest.preprocess.layout:
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2) if spec.layout == "NCHW"
                                         else batch.transpose(0, 2, 3, 1))
        return {spec.name: batch}

    def predict(self, images: Union[ImageLike, Sequence[ImageLike]]) -> list[Result]:
        """One `Result` per image, in order. Images of different sizes are batched by the
        model-input size they need (a dynamic-size model is never fed a stretched mix)."""
        if isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
            images = [images]
        loaded = _load_all(images)
        if not loaded:
            return []
        if self.preprocessor is None:
            raise self._no_preprocessing()
        self.runtime.activate()
        results: list[Optional[Result]] = [None] * len(loaded)
        for group in self._groups(loaded):
            for start in range(0, len(group), self.batch_size):
                idx = group[start:start + self.batch_size]
                batch, transforms = self.preprocessor([loaded[i] for i in idx])
                t0 = time.perf_counter()
                outputs = self.runtime.infer(self.feeds(batch))
                infer_ms = (time.perf_counter() - t0) * 1000
                decoded = self.decode(outputs, transforms)
                for i, r in zip(idx, decoded):
                    r.meta.setdefault("infer_ms", round(infer_ms, 3))
                    r.meta.setdefault("batch_size", len(idx))
                    results[i] = r
        return [r for r in results if r is not None]

    _feeds = feeds  # the name streaming looked for first

    def _no_preprocessing(self) -> BundleError:
        """Why images cannot be fed: the model's inputs named, and what feeds it instead."""
        specs = self.runtime.inputs
        image = len(specs) == 1 and specs[0].rank == 4
        why = "nothing says how images become its input" if image else "its inputs are not one image tensor"
        several = (", or bake the inputs that are not the image in with edgesdk convert --freeze-input NAME=V1,V2,... "
                   "and predict the bundle") if len(specs) > 1 else ""
        fix = several if not image else (", or give the bundle a preprocess section" if self.bundle is not None
                                    else ", or state the preprocessing (--normalize, --color, --resize) or a --preset")
        return BundleError(f"{self.manifest.name}: no preprocessing is known for this model ({why}: "
                           f"{', '.join(str(s) for s in specs)}); predict feeds images: feed arrays with "
                           f"runtimes.load(model).infer({{name: array}}){fix}")

    def _groups(self, images: list[np.ndarray]) -> list[list[int]]:
        assert self.preprocessor is not None
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(self.preprocessor.target_size(*img.shape[:2]), []).append(i)
        return list(groups.values())

    def __repr__(self) -> str:
        return f"Predictor({self.manifest.name}, task={self.task}, runtime={self.runtime!r})"


def _task_overrides(task: Optional[str], labels: Union[str, Path, Sequence[str], None]) -> dict[str, Any]:
    """A bare model's stated task and labels (a list, or a file with one name per line)."""
    out: dict[str, Any] = {"task": task} if task else {}
    if labels is not None:
        out["labels"] = read_labels(labels, BundleError)
    return out


def _bare_manifest(path: Path, preset: Optional[str], runtime: Runtime, options: Any,
                   input_shape: Optional[Sequence[Any]], overrides: Optional[dict[str, Any]] = None,
                   decoder: Optional[Mapping[str, Any]] = None) -> Manifest:
    """A bare model's manifest, its preprocessing sized by `input_shape`; an unknown model whose
    image dims are dynamic and that no `input_shape` sizes is refused, naming --input-shape."""
    from dataclasses import replace

    from .presets import build_manifest
    from .shapes import fill_dims, parse_input_shape, shape_for_resolve, spatial_axes, spec_for_shape, unresolved_error

    inputs = list(runtime.inputs)
    stated = parse_input_shape(input_shape)
    seen = inputs
    if stated is not None and len(inputs) == 1:
        fill_dims(inputs[0].shape, stated, inputs[0].name)  # a stated dim the model contradicts fails here
        seen = [replace(inputs[0], shape=tuple(shape_for_resolve(list(inputs[0].shape), stated, options)))]
    manifest = build_manifest(path, preset, backend=runtime.backend, inputs=seen, outputs=runtime.outputs,
                              preprocess_options=options, stated_decoder=decoder, **(overrides or {}))
    _check_label_count(manifest)
    manifest.inputs = inputs
    spec = manifest.preprocess
    if spec is None or len(inputs) != 1 or inputs[0].rank != 4:
        return manifest
    if stated is not None:
        manifest.preprocess = spec_for_shape(spec, fill_dims(inputs[0].shape, stated, inputs[0].name))[0]
    elif manifest.provenance.get("preset") is None:
        dims = list(inputs[0].shape)
        axes = spatial_axes(spec.layout)
        sources = (manifest.provenance.get("preprocess_sources") or {}).get("sources", {})
        if spec.size is not None and not str(sources.get("size", "default")).startswith("default"):
            for axis, size in zip(axes, spec.size):  # the model's metadata says its size (Ultralytics imgsz)
                dims[axis] = size if dims[axis] is None else dims[axis]
            manifest.preprocess = spec_for_shape(spec, [dims[0] or 1, *dims[1:]])[0]
        elif any(dims[a] is None for a in axes):
            raise unresolved_error(inputs[0].name, dims, dims, what="predict")
    return manifest


def _check_label_count(manifest: Manifest) -> None:
    outs = [o for o in manifest.outputs if o.rank == 2 and o.shape[-1]]
    if manifest.task == "classification" and manifest.labels and len(outs) == 1 and \
            len(manifest.labels) != outs[0].shape[-1]:
        raise BundleError(f"--labels has {len(manifest.labels)} names but the model's output {outs[0].name!r} has "
                          f"{outs[0].shape[-1]} classes: give one name per class, in class-index order")


def _load_all(images: Iterable[ImageLike]) -> list[np.ndarray]:
    out = []
    for img in images:
        out.append(read_image(img) if isinstance(img, (str, Path)) else img)
    return out
