"""The health check: does the installed model still give the answer recorded at pack time?

At pack time `record` runs the bundle on a sample input (a real image through the bundle's
preprocessing, or a seeded synthetic one) and keeps input and output. On the device `check`
loads the bundle the way the device will run it (the profile's preferred runnable backend,
else the bundle's own), runs the same input and compares within a tolerance set by the
bundle's precision. A model that loads but answers differently (wrong file, broken engine,
wrong weights) fails here, before the fleet notices.
"""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..bundle import Bundle
from ..errors import PackageError

INPUT_FILE = "health/input.npz"
EXPECTED_FILE = "health/expected.npz"
# (rtol, atol) by the bundle's precision: reduced precisions drift further from the record
TOLERANCE = {"fp32": (1e-3, 1e-3), "fp16": (2e-2, 2e-2), "bf16": (3e-2, 3e-2),
             "int8": (5e-2, 5e-2), "mixed": (5e-2, 5e-2)}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

Sample = Union[None, str, Path, np.ndarray, dict]


class HealthCheckFailed(PackageError):
    """The installed release failed its health check (it was rolled back)."""


@dataclass
class HealthSample:
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    rtol: float
    atol: float
    backend: str


@dataclass
class HealthReport:
    ok: bool
    reason: str
    backend: str = ""
    device: str = ""
    max_abs_error: Optional[float] = None
    seconds: float = 0.0
    checked_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HealthReport":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _synthetic_image(h: int, w: int) -> np.ndarray:
    """A seeded image with edges and texture (a flat or pure-noise image exercises too little)."""
    rng = np.random.default_rng(20240611)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) % 64) * 4], -1)
    img = img + rng.integers(-20, 21, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _synthetic_feed(spec: Any, rng: np.random.Generator) -> np.ndarray:
    shape = [1 if i == 0 and d is None else (32 if d is None else d) for i, d in enumerate(spec.shape)]
    if spec.dtype.kind == "f":
        return (rng.standard_normal(shape) * 0.5).astype(spec.dtype)
    if spec.dtype.kind in "iu":
        info = np.iinfo(spec.dtype)
        return rng.integers(max(info.min, 0), min(info.max, 255) + 1, shape).astype(spec.dtype)
    if spec.dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    raise PackageError(f"cannot make a sample for input {spec.name!r} of dtype {spec.dtype}; pass --sample")


def sample_inputs(bundle: Bundle, sample: Sample = None) -> dict[str, np.ndarray]:
    """The health-check input: from a file, an image, arrays, or synthesized from the specs."""
    m = bundle.manifest
    names = [s.name for s in m.inputs]
    if isinstance(sample, (str, Path)):
        path = Path(sample)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            from ..imageio import read_image
            sample = read_image(path)
        elif path.suffix == ".npy":
            sample = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                sample = {k: z[k] for k in z.files}
        else:
            raise PackageError(f"sample {path}: expected an image ({', '.join(IMAGE_SUFFIXES)}), .npy or .npz")
    if sample is None and m.preprocess is not None and len(names) == 1:
        size = m.preprocess.size or (64, 64)
        sample = _synthetic_image(*size)
    if isinstance(sample, np.ndarray) and sample.dtype == np.uint8 and sample.ndim == 3 \
            and m.preprocess is not None and len(names) == 1:
        batch, _ = bundle.preprocessor()([sample])
        return {names[0]: batch}
    if isinstance(sample, np.ndarray):
        if len(names) != 1:
            raise PackageError(f"the model has inputs {names}; pass a .npz with one array per input")
        return {names[0]: sample}
    if isinstance(sample, dict):
        missing = set(names) - set(sample)
        if missing:
            raise PackageError(f"sample lacks inputs {sorted(missing)}; the model takes {names}")
        return {k: np.asarray(sample[k]) for k in names}
    rng = np.random.default_rng(7)
    return {s.name: _synthetic_feed(s, rng) for s in m.inputs}


def record(bundle: Bundle, sample: Sample = None, rtol: Optional[float] = None, atol: Optional[float] = None,
           backend: Optional[str] = None) -> HealthSample:
    """Run the bundle on the sample and keep what it answered."""
    inputs = sample_inputs(bundle, sample)
    d_rtol, d_atol = TOLERANCE.get(bundle.manifest.precision, TOLERANCE["fp32"])
    rt = bundle.runtime(backend)
    with rt:
        expected = {k: np.asarray(v) for k, v in rt.infer(inputs).items()}
    return HealthSample(inputs, expected, d_rtol if rtol is None else float(rtol),
                        d_atol if atol is None else float(atol), backend or bundle.manifest.backend)


def write_sample(sample: HealthSample, folder: Path) -> dict:
    """Write input/expected under `folder` (the package root); return the manifest's health section."""
    (folder / "health").mkdir(parents=True, exist_ok=True)
    np.savez(folder / INPUT_FILE, **sample.inputs)
    np.savez(folder / EXPECTED_FILE, **sample.expected)
    return {"input": INPUT_FILE, "expected": EXPECTED_FILE, "rtol": sample.rtol, "atol": sample.atol,
            "recorded_with": sample.backend}


def read_sample(release_dir: Path, section: dict) -> HealthSample:
    def load(rel: str) -> dict[str, np.ndarray]:
        with np.load(release_dir / rel, allow_pickle=False) as z:  # never unpickle package data
            return {k: z[k] for k in z.files}
    return HealthSample(load(section["input"]), load(section["expected"]), float(section["rtol"]),
                        float(section["atol"]), str(section.get("recorded_with", "")))


def compare(outputs: dict[str, np.ndarray], sample: HealthSample) -> tuple[bool, str, float]:
    worst = 0.0
    for name, want in sample.expected.items():
        got = outputs.get(name)
        if got is None:
            return False, f"output {name!r} is missing (the model gives {sorted(outputs)})", float("inf")
        got = np.asarray(got)
        if got.shape != want.shape:
            return False, f"output {name!r} has shape {got.shape}, expected {want.shape}", float("inf")
        if not np.all(np.isfinite(got)):
            return False, f"output {name!r} holds NaN or inf", float("inf")
        err = np.abs(got.astype(np.float64) - want.astype(np.float64))
        limit = sample.atol + sample.rtol * np.abs(want.astype(np.float64))
        worst = max(worst, float(err.max(initial=0.0)))
        if np.any(err > limit):
            i = int(np.argmax(err - limit))
            return False, (f"output {name!r} differs from the output recorded at pack time: max abs error "
                           f"{float(err.max()):.4g} (at flat index {i}: got {got.flat[i]:.4g}, expected "
                           f"{want.flat[i]:.4g}; tolerance atol {sample.atol:g} + rtol {sample.rtol:g})"), worst
    return True, f"outputs match the record (max abs error {worst:.3g})", worst


def choose_backend(bundle: Bundle, profile: Any = None) -> tuple[str, dict]:
    """(backend, runtime options): the profile's preferred runnable backend that takes the bundle's
    model file, else the bundle's own backend."""
    if profile is None:
        return bundle.manifest.backend, {}
    try:
        from ..profiles import load_profile
    except ImportError as exc:
        raise PackageError("device profiles are not available in this EdgeSDK install; omit --profile") from exc
    import runtimes

    prof = load_profile(profile) if isinstance(profile, (str, Path)) else profile
    suffix = bundle.model_path.suffix.lower()
    for pref in prof.runnable_backends(runtimes.available_backends()):
        if suffix in runtimes.backend_class(pref.backend).suffixes:
            return pref.backend, {"device": pref.device}
    return bundle.manifest.backend, {}


def check(release_dir: Path, bundle_dir: str, section: dict, profile: Any = None) -> HealthReport:
    """Load the release's bundle as the device will and compare with the recorded output."""
    t0 = time.perf_counter()
    backend = device = ""
    try:
        bundle = Bundle.load(release_dir / bundle_dir)
        sample = read_sample(release_dir, section)
        backend, options = choose_backend(bundle, profile)
        with bundle.runtime(backend, **options) as rt:
            device = rt.device
            outputs = rt.infer(sample.inputs)
        ok, reason, err = compare(outputs, sample)
    except Exception as exc:  # noqa: BLE001 - failing in any way (engine included) means unhealthy: roll back
        ok, reason, err = False, f"the release failed to load or run: {type(exc).__name__}: {exc}", None
    return HealthReport(ok, reason, backend, device, err, round(time.perf_counter() - t0, 4))
