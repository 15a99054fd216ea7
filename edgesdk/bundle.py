"""Bundles: a directory with model file(s) and `manifest.json`.

The manifest records everything a device needs to run the model the way it was
built and checked: files with sha256, backend, precision, tensor specs with layout,
preprocessing, the output's task and decoder settings, labels, the profile it was
built for, where it came from and what was measured. Loading checks the hashes.
Writing is atomic: a bundle is assembled in a temporary directory beside the
destination and renamed into place, so a failure never leaves half a bundle.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from runtimes import Runtime, TensorSpec
from runtimes import load as load_runtime

from .errors import BundleError
from .preprocess import PreprocessSpec, Preprocessor

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
TASKS = ("classification", "detection", "segmentation", "text_detection", "text_recognition", "raw")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "mixed")


def sha256_file(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Manifest:
    """The contents of `manifest.json`."""

    name: str
    model: str  # entry model file, relative to the bundle
    backend: str
    precision: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    task: str = "raw"
    preprocess: Optional[PreprocessSpec] = None
    #: decoder settings for the task, e.g. {"type": "blazeface", "score_threshold": 0.5}
    decoder: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    #: every file of the bundle but the manifest: relative path -> sha256
    files: dict[str, str] = field(default_factory=dict)
    profile: Optional[str] = None
    #: what the runtime should be asked for, e.g. {"device": "CPU", "precision": "bf16"}
    runtime: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str = "0.0.0"
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise BundleError(f"manifest task {self.task!r} is not one of {TASKS}")
        if self.precision not in PRECISIONS:
            raise BundleError(f"manifest precision {self.precision!r} is not one of {PRECISIONS}")
        if not self.inputs:
            raise BundleError("manifest lists no inputs")

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "model": self.model,
            "backend": self.backend,
            "precision": self.precision,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "preprocess": self.preprocess.to_dict() if self.preprocess else None,
            "decoder": self.decoder,
            "labels": self.labels,
            "files": self.files,
            "profile": self.profile,
            "runtime": self.runtime,
            "provenance": self.provenance,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = MANIFEST) -> "Manifest":
        try:
            version = int(d.get("schema_version", 0))
            if version > SCHEMA_VERSION:
                raise BundleError(f"{where}: schema_version {version} is newer than this EdgeSDK reads "
                                  f"({SCHEMA_VERSION}); upgrade edgesdk")
            pre = d.get("preprocess")
            return cls(
                name=d["name"], model=d["model"], backend=d["backend"], precision=d["precision"],
                inputs=[TensorSpec.from_dict(s) for s in d["inputs"]],
                outputs=[TensorSpec.from_dict(s) for s in d.get("outputs", [])],
                task=d.get("task", "raw"),
                preprocess=PreprocessSpec.from_dict(pre) if pre else None,
                decoder=dict(d.get("decoder") or {}), labels=list(d.get("labels") or []),
                files=dict(d.get("files") or {}), profile=d.get("profile"),
                runtime=dict(d.get("runtime") or {}), provenance=dict(d.get("provenance") or {}),
                metrics=dict(d.get("metrics") or {}), version=str(d.get("version", "0.0.0")),
                schema_version=version or SCHEMA_VERSION,
            )
        except KeyError as exc:
            raise BundleError(f"{where}: required key {exc.args[0]!r} is missing") from exc
        except (TypeError, ValueError) as exc:
            if isinstance(exc, BundleError):
                raise
            raise BundleError(f"{where}: invalid value: {exc}") from exc


class Bundle:
    """A loaded bundle: manifest, verified files, and ways to run it."""

    def __init__(self, path: Union[str, Path], manifest: Manifest) -> None:
        self.path = Path(path)
        self.manifest = manifest

    @classmethod
    def load(cls, path: Union[str, Path], verify: bool = True) -> "Bundle":
        path = Path(path)
        mpath = path / MANIFEST
        if not path.is_dir():
            raise BundleError(f"{path} is not a bundle directory (expected a folder with {MANIFEST})")
        if not mpath.is_file():
            raise BundleError(f"{path} has no {MANIFEST}; is it a bundle? (make one with edgesdk convert)")
        try:
            data = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{mpath} is not valid JSON: {exc}") from exc
        bundle = cls(path, Manifest.from_dict(data, str(mpath)))
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        m = self.manifest
        if m.model not in m.files:
            raise BundleError(f"{self.path}: the model file {m.model!r} is not listed in the manifest's files")
        for rel, digest in m.files.items():
            p = self.path / rel
            if not p.is_file():
                raise BundleError(f"{self.path}: file {rel!r} listed in the manifest is missing")
            if sha256_file(p) != digest:
                raise BundleError(f"{self.path}: file {rel!r} fails its sha256 check (corrupt or modified); "
                                  "rebuild or re-install the bundle")

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model

    def runtime(self, backend: Optional[str] = None, **kwargs: Any) -> Runtime:
        """A runtime for the bundle's model, asked for the precision/device the manifest names."""
        options = {k: v for k, v in self.manifest.runtime.items() if k in ("device", "precision", "threads")}
        options.update(kwargs)
        return load_runtime(self.model_path, backend=backend or self.manifest.backend, **options)

    def preprocessor(self) -> Preprocessor:
        if self.manifest.preprocess is None:
            raise BundleError(f"{self.path}: the manifest has no preprocess section; feed arrays to the runtime")
        return Preprocessor(self.manifest.preprocess)

    def __repr__(self) -> str:
        m = self.manifest
        return f"Bundle({str(self.path)!r}, {m.name}, {m.backend}/{m.precision}, task={m.task})"


def write_bundle(
    dest: Union[str, Path],
    files: dict[str, Union[str, Path]],
    manifest: Manifest,
    overwrite: bool = False,
    extra_writer: Optional[Callable[[Path], None]] = None,
) -> Bundle:
    """Assemble a bundle atomically.

    `files` maps a relative path in the bundle to a source file to copy. `extra_writer`
    may write more files (reports) into the staging directory before hashing. The
    manifest's `files` is filled in here.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise BundleError(f"{dest} already exists; choose another output or pass overwrite (--force)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        for rel, src in files.items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
        if extra_writer is not None:
            extra_writer(staging)
        manifest.files = {
            str(p.relative_to(staging)): sha256_file(p)
            for p in sorted(staging.rglob("*")) if p.is_file() and p.name != MANIFEST
        }
        if manifest.model not in manifest.files:
            raise BundleError(f"bundle model {manifest.model!r} is not among the files written")
        manifest.provenance.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        with open(staging / MANIFEST, "w") as f:
            json.dump(manifest.to_dict(), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(dest, old)
            os.replace(staging, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle(dest, manifest)


def load_model_or_bundle(path: Union[str, Path], backend: Optional[str] = None, **kwargs: Any):
    """A bundle directory -> (Bundle, runtime); a bare model file -> (None, runtime)."""
    path = Path(path)
    if path.is_dir():
        bundle = Bundle.load(path)
        return bundle, bundle.runtime(backend, **kwargs)
    if not path.exists():
        raise BundleError(f"{path} does not exist (expected a model file or a bundle directory)")
    return None, load_runtime(path, backend=backend, **kwargs)
