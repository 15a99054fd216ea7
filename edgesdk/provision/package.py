"""`.edgepkg` packages: one gzip tar with the bundle, a health sample, a manifest and a signature.

Layout inside the archive (in this order, so a verifier reads the manifest and signature
before any payload):

    edgepkg.json        the package manifest: name, version, sha256 + size of every file, health
    edgepkg.sig         {"algorithm": "ed25519", "key_id": ..., "signature": base64} over the
                        exact bytes of edgepkg.json (absent in an unsigned development package)
    bundle/...          the bundle (manifest.json and model files)
    health/input.npz    the health-check input, and the output recorded by running the bundle
    health/expected.npz

The package id is the first 12 hex digits of sha256(edgepkg.json): the same content gives
the same id, and the release directory on a device is `<version>-<id>`.
"""
from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import io
import json
import math
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..bundle import MANIFEST as BUNDLE_MANIFEST
from ..bundle import Bundle, sha256_file
from ..errors import PackageError
from . import health as _health
from .extract import normalize_name
from .fsutil import fsync_dir
from .jsonsafe import loads_bounded
from .keys import key_id, load_private_key, sign
from .version import Version

PathLike = Union[str, Path]
FORMAT = "edgepkg/1"
MANIFEST_NAME = "edgepkg.json"
SIGNATURE_NAME = "edgepkg.sig"
BUNDLE_DIR = "bundle"
PAYLOAD_DIRS = (BUNDLE_DIR, "health")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def package_id(manifest_bytes: bytes) -> str:
    return hashlib.sha256(manifest_bytes).hexdigest()[:12]


@dataclass
class PackageManifest:
    name: str
    version: str
    files: dict[str, dict]
    health: dict
    created: str = ""
    bundle: str = BUNDLE_DIR
    packer: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    def to_bytes(self) -> bytes:
        d = {"format": self.format, "name": self.name, "version": self.version, "created": self.created,
             "bundle": self.bundle, "files": self.files, "health": self.health, "packer": self.packer}
        return (json.dumps(d, indent=2, sort_keys=True) + "\n").encode()

    @property
    def semver(self) -> Version:
        return Version.parse(self.version)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = MANIFEST_NAME) -> "PackageManifest":
        d = loads_bounded(data, f"{where}: {MANIFEST_NAME}", max_depth=8)
        if not isinstance(d, dict):
            raise PackageError(f"{where}: {MANIFEST_NAME} must be a JSON object")
        if d.get("format") != FORMAT:
            raise PackageError(f"{where}: format {d.get('format')!r} is not {FORMAT!r}; upgrade edgesdk or repack")
        for key, kind in (("name", str), ("version", str), ("files", dict), ("health", dict)):
            if not isinstance(d.get(key), kind):
                raise PackageError(f"{where}: key {key!r} is missing or not a {kind.__name__}")
        if not _NAME.match(d["name"]):
            raise PackageError(f"{where}: name {d['name']!r} must be 1-64 of A-Z a-z 0-9 _ . - (first alphanumeric)")
        Version.parse(d["version"])
        m = cls(name=d["name"], version=d["version"], files=d["files"], health=d["health"],
                created=str(d.get("created", "")), bundle=str(d.get("bundle", BUNDLE_DIR)),
                packer=dict(d.get("packer") or {}), format=d["format"])
        m._validate(where)
        return m

    def _validate(self, where: str) -> None:
        if self.bundle != BUNDLE_DIR:
            raise PackageError(f"{where}: bundle must be {BUNDLE_DIR!r}, got {self.bundle!r}")
        for rel, entry in self.files.items():
            if normalize_name(rel, where) != rel or rel.split("/")[0] not in PAYLOAD_DIRS or "/" not in rel:
                raise PackageError(f"{where}: files key {rel!r} must be a clean path under {PAYLOAD_DIRS}")
            if not isinstance(entry, dict):
                raise PackageError(f"{where}: files[{rel!r}] must be an object")
            if "symlink" in entry:
                if not isinstance(entry["symlink"], str):
                    raise PackageError(f"{where}: files[{rel!r}].symlink must be a string")
            elif not (isinstance(entry.get("sha256"), str) and _HEX64.match(entry["sha256"])
                      and isinstance(entry.get("size"), int) and entry["size"] >= 0):
                raise PackageError(f"{where}: files[{rel!r}] needs sha256 (64 hex digits) and size (bytes)")
        if f"{BUNDLE_DIR}/{BUNDLE_MANIFEST}" not in self.files:
            raise PackageError(f"{where}: the package holds no {BUNDLE_DIR}/{BUNDLE_MANIFEST}")
        for key in ("input", "expected", "rtol", "atol"):
            if key not in self.health:
                raise PackageError(f"{where}: health.{key} is missing (repack with `edgesdk pack`)")
        for key in ("rtol", "atol"):
            check_tolerance(self.health[key], f"{where}: health.{key}")
        for key in ("input", "expected"):
            if self.health[key] not in self.files:
                raise PackageError(f"{where}: health.{key} names {self.health[key]!r}, which is not in files")


def check_tolerance(value: Any, what: str) -> None:
    """A health-check tolerance: a finite number >= 0 (nan would make every comparison pass)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise PackageError(f"{what} must be a finite number >= 0, got {value!r}")


def bundle_problems(bundle_dir: Path, package_files: Optional[dict] = None) -> list[str]:
    """Why a bundle is not self-contained: its manifest's model or files name an absolute path, leave
    the bundle (`..`, or a link resolving outside), or (with `package_files`) are not in the package."""
    where = bundle_dir / BUNDLE_MANIFEST
    try:
        with open(where, "rb") as f:
            d = loads_bounded(f.read((4 << 20) + 1), str(where))
    except (OSError, PackageError) as exc:
        return [f"cannot read {where}: {getattr(exc, 'strerror', None) or exc}"]
    if not isinstance(d, dict) or not isinstance(d.get("files", {}), dict):
        return [f"{where} is not a bundle manifest (a JSON object with a files object)"]
    names = [d.get("model"), *d.get("files", {})]
    problems = []
    inside = os.path.realpath(bundle_dir)
    for rel in names:
        try:
            clean = normalize_name(rel, str(where)) if isinstance(rel, str) else None
        except PackageError:
            clean = None
        if clean != rel:
            problems.append(f"bundle file {str(rel)[:200]!r} is not a relative path inside the bundle")
        elif package_files is not None and f"{BUNDLE_DIR}/{rel}" not in package_files:
            problems.append(f"bundle file {rel!r} is not one of the package's signed files")
        elif os.path.commonpath([inside, os.path.realpath(bundle_dir / rel)]) != inside:
            problems.append(f"bundle file {rel!r} resolves outside the bundle (through a link)")
    return problems


@dataclass(frozen=True)
class PackResult:
    path: Path
    name: str
    version: str
    id: str
    key_id: Optional[str]
    size: int
    sha256: str


def _tarinfo(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _check_pack_inputs(bundle_dir: Path, rtol: Optional[float], atol: Optional[float]) -> None:
    for label, tol in (("rtol", rtol), ("atol", atol)):
        if tol is not None:
            check_tolerance(tol, label)
    problems = bundle_problems(bundle_dir)
    if problems:  # before loading: loading would read (and hash) a file outside the bundle
        raise PackageError(f"bundle {bundle_dir} is not self-contained, so it cannot be packed: "
                           f"{'; '.join(problems[:3])}. A package carries only files inside the bundle")


def pack(bundle_dir: PathLike, output: PathLike, version: str,
         key: Union[None, PathLike, Ed25519PrivateKey] = None,
         sample: _health.Sample = None, health_sample: Optional[_health.HealthSample] = None,
         rtol: Optional[float] = None, atol: Optional[float] = None,
         name: Optional[str] = None, overwrite: bool = False) -> PackResult:
    """Pack a bundle into a signed `.edgepkg` (unsigned when `key` is None).

    The health sample is recorded here by running the bundle on `sample` (an image path or
    array, .npy/.npz, or None for a seeded synthetic input), unless `health_sample` is given.
    """
    Version.parse(version)
    _check_pack_inputs(Path(bundle_dir), rtol, atol)
    output = Path(output)
    if output.exists() and not overwrite:
        raise PackageError(f"{output} already exists; choose another -o or pass --force")
    bundle = Bundle.load(bundle_dir)  # checks the bundle's own hashes before we vouch for it
    name = name or bundle.manifest.name
    if not _NAME.match(name):
        raise PackageError(f"package name {name!r} must be 1-64 of A-Z a-z 0-9 _ . - (first alphanumeric)")
    private = load_private_key(key) if isinstance(key, (str, Path)) else key
    if health_sample is None:
        health_sample = _health.record(bundle, sample, rtol=rtol, atol=atol)

    sources: dict[str, Path] = {f"{BUNDLE_DIR}/{rel}": bundle.path / rel for rel in bundle.manifest.files}
    sources[f"{BUNDLE_DIR}/{BUNDLE_MANIFEST}"] = bundle.path / BUNDLE_MANIFEST
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgepkg-", dir=output.parent) as tmp:
        health_section = _health.write_sample(health_sample, Path(tmp))
        for rel in (health_section["input"], health_section["expected"]):
            sources[rel] = Path(tmp) / rel
        files = {rel: {"sha256": sha256_file(p), "size": p.stat().st_size} for rel, p in sorted(sources.items())}
        from .. import __version__
        manifest = PackageManifest(name=name, version=version, files=files, health=health_section,
                                   created=created.isoformat(), packer={"edgesdk": __version__})
        data = manifest.to_bytes()
        sig = (json.dumps(sign(private, data), indent=2) + "\n").encode() if private is not None else None
        mtime = int(created.timestamp())
        part = output.with_name(f".{output.name}.tmp-{os.getpid()}")
        try:
            with open(part, "wb") as raw:
                # no name or time in the gzip header: those bytes are outside the CRC, keep them constant
                with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz, \
                        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
                    tf.addfile(_tarinfo(MANIFEST_NAME, len(data), mtime), io.BytesIO(data))
                    if sig is not None:
                        tf.addfile(_tarinfo(SIGNATURE_NAME, len(sig), mtime), io.BytesIO(sig))
                    for rel, p in sorted(sources.items()):
                        with open(p, "rb") as f:
                            tf.addfile(_tarinfo(rel, files[rel]["size"], mtime), f)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(part, output)
            fsync_dir(output.parent)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    return PackResult(output, name, version, package_id(data),
                      key_id(private.public_key()) if private is not None else None,
                      output.stat().st_size, sha256_file(output))
