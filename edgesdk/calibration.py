"""Calibration data: real samples, preprocessed exactly as the bundle will preprocess at run time.

Sources:
- a folder of images (JPEG, PNG, BMP, TIFF, WebP; sorted by name; when there are more than
  `size`, an evenly spaced subset),
- a video file (`size` frames sampled evenly over the whole video),
- a `.npy` file: either images (N x H x W x 3 uint8, BGR as OpenCV gives them), preprocessed
  like the others, or model-ready tensors (float, the model's input shape) used as they are.

Images go through the bundle's `PreprocessSpec` (`edgesdk.preprocess.Preprocessor`), so the
quantizer sees what the device will feed. Never calibrate on random noise: on the PP-OCR
detector it keeps only 0.3-0.5 cosine similarity to fp32.

    calib = load_calibration("images/", spec, size=64)
    fit, held_out = calib.split(holdout=0.25)

Every sample records its source (`CalibrationSet.sources`), and `split` holds out whole
sources, so near-duplicates (crops of one photo, neighbouring video frames) never land on both
sides of the accuracy check:
- folder: a photo is its file name without a trailing number ("street_03.jpg" and
  "street_04.jpg" are one photo's crops) when that leaves at least `MIN_SOURCES` groups, else
  every file is its own source (phone names like IMG_0001.jpg share no prefix worth trusting);
- video: `VIDEO_SEGMENTS` contiguous segments of the video;
- .npy / array: nothing says where samples came from, so each is its own source (the report
  says so; pass --val with separate data to be sure).

A model input with dynamic dims (`--input-shape 1,3,48,-1`, see edgesdk.shapes) keeps each
image's own size: `samples` is then a list of per-sample arrays of different shapes (each
without the batch dim, like ``samples[i]`` of an array), at most `MAX_DYNAMIC_SIDE` along a
dynamic dim (wider images are squeezed or scaled down to it; `notes` says how many).
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from .errors import ConversionError, EdgeSDKError
from .imageio import read_image
from .preprocess import PreprocessSpec, Preprocessor
from .shapes import MAX_DYNAMIC_SIDE

#: model-ready samples: N x input shape, or (dynamic dims) one array per sample, shapes differing
Samples = Union[np.ndarray, list]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
DEFAULT_SIZE = 64
#: a folder's file-name groups are trusted as photos only when there are at least this many
MIN_SOURCES = 4
#: a video is split into this many contiguous segments (the held-out part takes whole segments)
VIDEO_SEGMENTS = 8

#: progress(done, total, what)
Progress = Callable[[int, int, str], None]


def stderr_progress(done: int, total: int, what: str) -> None:
    """Progress on stderr (the CLI's default): a counter updated in place on a terminal,
    about ten lines otherwise (logs)."""
    tty = sys.stderr.isatty()
    step = max(1, total // 10)
    if not tty and done % step and done < total:
        return
    end = "\n" if (done >= total or not tty) else ""
    print(f"{chr(13) if tty else ''}  calibration: {done}/{total} {what}", end=end, file=sys.stderr, flush=True)


@dataclass
class CalibrationSet:
    """Model-ready samples (N x input shape, the model input's dtype; a list of per-sample arrays
    when dynamic dims give them different shapes) and where they came from."""

    samples: Samples
    source: str
    kind: str  # "images" | "video" | "npy-images" | "npy-tensors"
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    #: per sample: where it came from (photo, video segment, file); same source = near-duplicates
    sources: list[str] = field(default_factory=list)
    #: how `sources` were derived, for the report
    source_rule: str = "each sample its own source"
    #: what was done to fit dynamic dims (capped sizes), for the report
    notes: list[str] = field(default_factory=list)

    def split(self, holdout: Union[float, int] = 0.25, min_holdout: int = 2) -> tuple["CalibrationSet", "CalibrationSet"]:
        """(calibration part, held-out part), split by source: whole sources are held out,
        spread over the set, until about `holdout` (a fraction < 1, or a count) of the samples."""
        n = len(self)
        k = int(round(n * holdout)) if isinstance(holdout, float) and holdout < 1 else int(holdout)
        k = max(min_holdout, k)
        if n - k < 1:
            raise ConversionError(
                f"{n} calibration samples from {self.source} are too few to hold {k} out for the accuracy "
                f"check; give at least {k + 1} (more is better: 32-300 real images)")
        mask = _held_out_mask(self.sources or [str(i) for i in range(n)], k)
        if mask.all() or not mask.any():
            raise ConversionError(
                f"the samples from {self.source} come from {len(set(self.sources))} source(s) "
                f"({self.source_rule}): too few to hold whole sources out for the accuracy check; add images "
                "from other photos/videos, or pass --val with separate held-out data")
        return self._part(~mask), self._part(mask)

    def _part(self, mask: np.ndarray) -> "CalibrationSet":
        pick = lambda items: [x for x, m in zip(items, mask) if m] if items else []  # noqa: E731
        samples = pick(self.samples) if isinstance(self.samples, list) else self.samples[mask]
        return CalibrationSet(samples, self.source, self.kind, pick(self.names), pick(self.sources),
                              self.source_rule, list(self.notes))

    @property
    def source_count(self) -> int:
        return len(set(self.sources)) if self.sources else len(self)

    def describe(self) -> dict:
        shapes = sample_shapes(self.samples)
        same = all(s == shapes[0] for s in shapes)
        return {"source": self.source, "kind": self.kind, "count": len(self),
                "shape": list(shapes[0]) if same else [None if len({s[a] for s in shapes}) > 1 else shapes[0][a]
                                                       for a in range(len(shapes[0]))],
                "dtype": str(np.asarray(self.samples[0]).dtype)}


def sample_shapes(samples: Samples) -> list[tuple[int, ...]]:
    """Each sample's shape (without the batch dim)."""
    return [tuple(np.shape(s)) for s in samples] if isinstance(samples, list) else [tuple(samples.shape[1:])] * len(samples)


def _stack_or_list(out: Sequence[np.ndarray]) -> Samples:
    """One array when every sample has the same shape (everything downstream takes it), else a list."""
    if all(o.shape == out[0].shape for o in out):
        return np.stack(out)
    return [np.ascontiguousarray(o) for o in out]


def _held_out_mask(sources: Sequence[str], k: int) -> np.ndarray:
    """Whole sources, evenly spread over the order they appear in, until >= k samples are held."""
    order = list(dict.fromkeys(sources))
    counts = {src: sources.count(src) for src in order}
    held: set[str] = set()
    for want in range(1, len(order)):
        picks = np.unique(np.linspace(0, len(order) - 1, want + 2)[1:-1].round().astype(int))
        held = {order[i] for i in picks}
        if sum(counts[h] for h in held) >= k:
            break
    return np.array([s in held for s in sources], bool)


def photo_sources(names: Sequence[str]) -> tuple[list[str], str]:
    """A folder's files -> (source per file, the rule used); see the module docstring."""
    stems = [re.sub(r"[-_ .]*(crop|frame|tile|aug)?[-_ .]*\d+$", "", Path(n).stem, flags=re.I) or Path(n).stem
             for n in names]
    if len(set(stems)) >= MIN_SOURCES and len(set(stems)) < len(names):
        return stems, "a photo is its file name without a trailing number"
    return list(names), "each file its own photo"


def _evenly(items: Sequence, size: Optional[int]) -> list:
    if size is None or len(items) <= size:
        return list(items)
    idx = np.linspace(0, len(items) - 1, size).round().astype(int)
    return [items[i] for i in idx]


def _check_spec(spec: Optional[PreprocessSpec], source: Path,
                input_shape: Optional[Sequence[Optional[int]]] = None) -> Preprocessor:
    if spec is None:
        raise ConversionError(
            f"{source} holds images, but there is no preprocessing to turn them into model input; give the "
            "model's preprocessing (a preset, or --size/--mean/--std/--layout) or pass a .npy of model-ready tensors")
    dynamic = input_shape is not None and None in list(input_shape)[1:]
    if spec.size is None and not dynamic:
        raise ConversionError(
            f"calibration images need a fixed model input size, but the preprocessing has none ({source}); "
            "make the model's input static (--input-shape) so the calibration samples match it")
    return Preprocessor(spec)


def _preprocess(pre: Preprocessor, images: Sequence[np.ndarray], names: Sequence[str], source: Path,
                progress: Optional[Progress], what: str, notes: Optional[list[str]] = None) -> Samples:
    out, capped = [], 0
    for i, (img, name) in enumerate(zip(images, names)):
        try:
            one, img = _capped(pre, img)
            batch, _ = one([img])
        except EdgeSDKError as exc:
            raise ConversionError(f"calibration sample {name} from {source} could not be preprocessed: {exc}") from exc
        capped += one is not pre or img is not images[i]
        out.append(batch[0])
        if progress is not None:
            progress(i + 1, len(images), what)
    if capped and notes is not None:
        notes.append(f"{capped} of {len(images)} samples from {source} needed more than {MAX_DYNAMIC_SIDE} pixels "
                     "along a dynamic dim: brought down to it")
    return _stack_or_list(out)


def _capped(pre: Preprocessor, img: np.ndarray) -> tuple[Preprocessor, np.ndarray]:
    """(preprocessor, image) that keep a dynamic-size sample within MAX_DYNAMIC_SIDE: a dynamic
    width is squeezed to the cap (fit-height), dynamic height and width scale the image down."""
    spec = pre.spec
    if not (spec.dynamic_width or spec.size is None):
        return pre, img
    th, tw = pre.target_size(*img.shape[:2])
    if spec.dynamic_width and tw > MAX_DYNAMIC_SIDE:
        cap = MAX_DYNAMIC_SIDE // spec.size_multiple * spec.size_multiple
        return Preprocessor(replace(spec, size=(th, cap), dynamic_width=False)), img
    if spec.size is None and max(th, tw) > MAX_DYNAMIC_SIDE:
        import cv2

        r = (MAX_DYNAMIC_SIDE - spec.size_multiple) / max(th, tw)
        h, w = img.shape[:2]
        return pre, cv2.resize(img, (max(1, int(w * r)), max(1, int(h * r))), interpolation=cv2.INTER_AREA)
    return pre, img


def _from_folder(folder: Path, pre: Preprocessor, size: Optional[int], progress: Optional[Progress]) -> CalibrationSet:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        others = sorted(p.name for p in folder.iterdir())[:5]
        raise ConversionError(
            f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})"
            + (f"; it has {', '.join(others)}" if others else " (it is empty)")
            + "; point --calib at a folder of real images like the ones the device will see")
    files = _evenly(files, size)
    images, names = [], []
    for f in files:
        try:
            images.append(read_image(f))
        except EdgeSDKError as exc:
            raise ConversionError(f"calibration image {f.name} in {folder} cannot be read: {exc}; "
                                  "remove or replace it") from exc
        names.append(f.name)
    notes: list[str] = []
    samples = _preprocess(pre, images, names, folder, progress, "images", notes)
    sources, rule = photo_sources(names)
    return CalibrationSet(samples, str(folder), "images", names, sources, rule, notes)


def _from_video(path: Path, pre: Preprocessor, size: Optional[int], progress: Optional[Progress]) -> CalibrationSet:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ConversionError(f"calibration video {path} cannot be opened (corrupt, or a codec OpenCV's FFmpeg "
                              "lacks); re-encode it (ffmpeg -i in -c:v libx264 out.mp4) or extract frames to a folder")
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        want = size or DEFAULT_SIZE
        if count > 0:
            picks = set(np.linspace(0, count - 1, min(want, count)).round().astype(int).tolist())
        else:  # a stream without a frame count: take the first frames
            picks = set(range(want))
        images, names, sources, index = [], [], [], 0
        while len(images) < len(picks):
            ok, frame = cap.read()
            if not ok:
                break
            if index in picks:
                images.append(frame)
                names.append(f"frame {index}")
                span = max(count, len(picks))
                sources.append(f"segment {min(VIDEO_SEGMENTS - 1, index * VIDEO_SEGMENTS // span)}")
            index += 1
    finally:
        cap.release()
    if not images:
        raise ConversionError(f"calibration video {path} has no readable frames")
    notes: list[str] = []
    samples = _preprocess(pre, images, names, path, progress, "video frames", notes)
    return CalibrationSet(samples, str(path), "video", names, sources,
                          f"{VIDEO_SEGMENTS} contiguous segments of the video", notes)


def _from_npy(path: Path, spec: Optional[PreprocessSpec], input_shape: Optional[Sequence[Optional[int]]],
              input_dtype: Optional[np.dtype], size: Optional[int], progress: Optional[Progress]) -> CalibrationSet:
    try:
        arr = np.load(str(path), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ConversionError(f"calibration file {path} is not a readable .npy array: {exc}") from exc
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ConversionError(f"calibration file {path} is empty (shape {list(arr.shape)}); it must hold N >= 1 samples")
    if arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[-1] in (1, 3, 4):
        pre = _check_spec(spec, path, input_shape)
        items = _evenly(list(range(arr.shape[0])), size)
        images = [arr[i] for i in items]
        notes: list[str] = []
        samples = _preprocess(pre, images, [f"#{i}" for i in items], path, progress, "images", notes)
        return CalibrationSet(samples, str(path), "npy-images", [f"#{i}" for i in items], [f"#{i}" for i in items],
                              "each array item its own source (a .npy says nothing about where images came from)",
                              notes)
    if input_shape is not None:
        want = list(input_shape)
        got = list(arr.shape)
        fits = len(got) == len(want) and all(w is None or g == w for g, w in zip(got[1:], want[1:]))
        if not fits:
            raise ConversionError(
                f"calibration tensors in {path} have shape {got}, but the model input takes "
                f"[N, {', '.join('?' if d is None else str(d) for d in want[1:])}]; save them preprocessed "
                "to the model's input shape, or save raw images (N x H x W x 3 uint8) and let EdgeSDK preprocess")
    if arr.dtype.kind != "f" and (input_dtype is None or np.dtype(input_dtype).kind == "f"):
        raise ConversionError(f"calibration tensors in {path} are {arr.dtype}, the model takes float input; "
                              "save preprocessed float32 tensors or raw uint8 images (N x H x W x 3)")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ConversionError(f"calibration tensors in {path} contain NaN or infinite values")
    items = _evenly(list(range(arr.shape[0])), size)
    samples = arr[items].astype(input_dtype or arr.dtype, copy=False)
    if progress is not None:
        progress(len(items), len(items), "tensors")
    return CalibrationSet(np.ascontiguousarray(samples), str(path), "npy-tensors", [f"#{i}" for i in items],
                          [f"#{i}" for i in items],
                          "each array item its own source (a .npy says nothing about where samples came from)")


def load_calibration(source: Union[str, Path, np.ndarray], spec: Optional[PreprocessSpec] = None,
                     size: Optional[int] = DEFAULT_SIZE, *,
                     input_shape: Optional[Sequence[Optional[int]]] = None,
                     input_dtype: Optional[Union[str, np.dtype]] = None,
                     progress: Optional[Progress] = stderr_progress) -> CalibrationSet:
    """Load and preprocess calibration samples from a folder, a video, a .npy file or an array.

    Args:
        source: image folder, video file, .npy file, or an array (as for .npy).
        spec: the bundle's preprocessing (must have a fixed size for image sources).
        size: at most this many samples (evenly spaced); None for all.
        input_shape: the model input's shape ([N, ...], None for dynamic dims) to check tensors against.
        input_dtype: the model input's dtype.
        progress: progress(done, total, what), None for silence.
    """
    if size is not None and size < 1:
        raise ConversionError(f"calibration size must be >= 1, got {size}")
    dtype = np.dtype(input_dtype) if input_dtype is not None else None
    if isinstance(source, np.ndarray):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "calib.npy"
            np.save(path, source)
            out = _from_npy(path, spec, input_shape, dtype, size, progress)
        out.source = f"array {list(source.shape)}"
        return out
    path = Path(source)
    if not path.exists():
        raise ConversionError(f"calibration data {str(path)!r} does not exist; give an image folder, a video "
                              "file or a .npy file")
    if path.is_dir():
        result = _from_folder(path, _check_spec(spec, path, input_shape), size, progress)
    elif path.suffix.lower() == ".npy":
        result = _from_npy(path, spec, input_shape, dtype, size, progress)
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        result = _from_video(path, _check_spec(spec, path, input_shape), size, progress)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        raise ConversionError(f"{path} is a single image; calibration needs many real samples: put 32-300 images "
                              "in a folder and pass the folder")
    else:
        raise ConversionError(f"calibration data {path} is neither a folder, a video ({', '.join(VIDEO_SUFFIXES)}) "
                              "nor a .npy file")
    if input_shape is not None:
        want = list(input_shape)
        for shape in dict.fromkeys(sample_shapes(result.samples)):
            got = [None] + list(shape)
            if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got[1:], want[1:])):
                raise ConversionError(
                    f"calibration samples from {path} preprocess to {list(shape)}, but the model input is "
                    f"{['?' if d is None else d for d in want]}; the preprocessing does not match the model (size or "
                    "layout)")
    if dtype is not None and isinstance(result.samples, list):
        result.samples = [s.astype(dtype, copy=False) for s in result.samples]
    elif dtype is not None and result.samples.dtype != dtype:
        result.samples = result.samples.astype(dtype)
    return result
