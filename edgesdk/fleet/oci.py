"""Push and pull signed `.edgepkg` files as OCI artifacts (ORAS conventions, plain distribution API).

An EdgeSDK package in a registry is an OCI image manifest with
- `artifactType` `application/vnd.edgesdk.package.v1` and the empty config ORAS writes
  (`application/vnd.oci.empty.v1+json`, the two bytes `{}`);
- one layer, the package file unchanged (`application/vnd.edgesdk.package.v1.tar+gzip`), titled
  with its file name (`org.opencontainers.image.title`, so `oras pull` saves it under that name);
- annotations with the package's name, version and id.
`oras push HOST/REPO:TAG pkg.edgepkg:application/vnd.edgesdk.package.v1.tar+gzip
--artifact-type application/vnd.edgesdk.package.v1` makes the same shape.

Integrity: the manifest's sha256 is checked against the pinned digest (`REPO:TAG@sha256:...`,
refused as "tag moved" when the tag now names another manifest) and against the registry's
`Docker-Content-Digest`; the layer's sha256 and size against the manifest. Only a verified file
is renamed into place. The package's signature is checked later, by `install`, as for any file.

Resumable: uploads go in chunks (`PATCH` with `Content-Range`); after a dropped connection the
upload asks the registry how much it has and goes on from there. Downloads go to `NAME.part`
(with `NAME.part.json` naming the blob digest) and continue with `Range` in a later run.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

from ..bundle import sha256_file
from ..provision.fsutil import atomic_write, fsync_dir
from .ociref import OciRef, parse_ref
from .registry import Registry, RegistryError

PathLike = Union[str, Path]
Progress = Callable[[str], None]

ARTIFACT_TYPE = "application/vnd.edgesdk.package.v1"
LAYER_TYPE = "application/vnd.edgesdk.package.v1.tar+gzip"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
TITLE = "org.opencontainers.image.title"
CHUNK = 4 << 20  # upload chunk; also the step at which an interrupted upload resumes
READ = 1 << 16
MAX_MANIFEST = 4 << 20
RETRIES = 5


@dataclass
class Transfer:
    """What a push or pull did: the manifest digest, the package blob, and bytes on the wire."""

    ref: str
    manifest_digest: str
    blob_digest: str
    size: int
    bytes_moved: int
    path: Optional[Path] = None
    annotations: dict = field(default_factory=dict)
    reused: bool = False  # push: the blob was already there; pull: the file was already complete


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> str:
    return "sha256:" + sha256_file(path)


def _quiet(_message: str) -> None:
    pass


# ---------------------------------------------------------------------------- push
def push(package: PathLike, target: str, registry: Optional[Registry] = None, progress: Progress = _quiet,
         **registry_options) -> Transfer:
    """Upload a verified-readable `.edgepkg` to `oci://HOST/REPO:TAG` and tag it."""
    from ..provision.verify import verify_package

    ref = parse_ref(target)
    if ref.digest:
        raise RegistryError(f"{target}: push to a tag (oci://HOST/REPO:TAG), not to a digest; the digest is "
                            "what the registry computes")
    path = Path(package)
    pkg = verify_package(path, None, allow_unsigned=True)  # a readable package; trust is the device's call
    signed = pkg.signature_bytes is not None
    if not signed:
        progress(f"WARNING: {path.name} is not signed; devices refuse it without --allow-unsigned")
    reg = registry or Registry(ref.host, **registry_options)
    blob_digest, size = _file_digest(path), path.stat().st_size
    reused = _upload_blob(reg, ref, path, blob_digest, size, progress)
    _upload_bytes(reg, ref, EMPTY, _digest(EMPTY))
    m = pkg.manifest
    annotations = {"org.opencontainers.image.version": m.version, "io.edgesdk.package.name": m.name,
                   "io.edgesdk.package.id": pkg.id, "io.edgesdk.package.signed": str(signed).lower()}
    manifest = {
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_TYPE, "digest": _digest(EMPTY), "size": len(EMPTY)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": blob_digest, "size": size,
                    "annotations": {TITLE: path.name}}],
        "annotations": annotations,
    }
    body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    digest = _digest(body)
    with reg.request("PUT", reg.url(ref, "manifests", ref.tag), {"Content-Type": MANIFEST_TYPE}, body,
                     ok=(201,), what=f"manifest {ref.repo}:{ref.tag}") as resp:
        said = resp.headers.get("Docker-Content-Digest")
    if said and said != digest:
        raise RegistryError(f"registry {ref.host} stored the manifest as {said}, not {digest}; it changed what "
                            "we sent")
    progress(f"pushed {path.name} to {ref} ({digest})")
    return Transfer(f"{ref}@{digest}", digest, blob_digest, size, reg.bytes_sent, path, annotations, reused)


def _blob_exists(reg: Registry, ref: OciRef, digest: str) -> bool:
    with reg.request("HEAD", reg.url(ref, "blobs", digest), ok=(200, 404), what=f"blob {digest}") as resp:
        return resp.status == 200


def _upload_bytes(reg: Registry, ref: OciRef, data: bytes, digest: str) -> None:
    if _blob_exists(reg, ref, digest):
        return
    location = _start_upload(reg, ref)
    reg.request("PUT", _with_digest(location, digest), {"Content-Type": "application/octet-stream"}, data,
                ok=(201,), what=f"blob {digest}").close()


def _start_upload(reg: Registry, ref: OciRef) -> str:
    with reg.request("POST", reg.url(ref, "blobs", "uploads/"), {"Content-Length": "0"}, b"", ok=(202,),
                     what=f"upload to {ref.repo}") as resp:
        return reg.absolute(resp.headers["Location"])


def _with_digest(location: str, digest: str) -> str:
    return location + ("&" if "?" in location else "?") + "digest=" + digest


def _upload_blob(reg: Registry, ref: OciRef, path: Path, digest: str, size: int, progress: Progress) -> bool:
    """Chunked upload that resumes from the registry's offset after a dropped connection."""
    if _blob_exists(reg, ref, digest):
        progress(f"{path.name}: already in {ref.host}/{ref.repo} ({digest}); not uploaded again")
        return True
    location, offset, failures, t0 = _start_upload(reg, ref), 0, 0, time.monotonic()
    with open(path, "rb") as f:
        while offset < size:
            f.seek(offset)
            chunk = f.read(CHUNK)
            headers = {"Content-Type": "application/octet-stream",
                       "Content-Range": f"{offset}-{offset + len(chunk) - 1}", "Content-Length": str(len(chunk))}
            try:
                with reg.request("PATCH", location, headers, chunk, ok=(202,), what=f"blob {digest}") as resp:
                    location = reg.absolute(resp.headers.get("Location") or location)
                    offset = _range_end(resp.headers.get("Range"), offset + len(chunk))
            except RegistryError as exc:
                failures += 1
                if failures > RETRIES or not (exc.transient or exc.status == 416):  # 416: offsets disagree
                    raise
                offset, location = _upload_status(reg, location, offset)
                progress(f"{path.name}: upload interrupted ({exc}); resuming at byte {offset}")
                continue
            progress(_eta(path.name, offset, size, t0))
    reg.request("PUT", _with_digest(location, digest), {"Content-Length": "0"}, b"", ok=(201,),
                what=f"blob {digest}").close()
    return False


def _upload_status(reg: Registry, location: str, fallback: int) -> tuple[int, str]:
    try:
        with reg.request("GET", location, ok=(204,), what="upload status") as resp:
            return _range_end(resp.headers.get("Range"), fallback), reg.absolute(resp.headers.get("Location")
                                                                                  or location)
    except RegistryError:
        return fallback, location


def _range_end(header: Optional[str], fallback: int) -> int:
    """`Range: 0-N` (bytes the registry holds, inclusive) -> the next offset to send."""
    if not header or "-" not in header:
        return fallback
    return int(header.rsplit("-", 1)[1]) + 1


def _eta(name: str, done: int, total: int, t0: float) -> str:
    elapsed = time.monotonic() - t0
    rate = done / elapsed if elapsed > 0 else 0
    eta = (total - done) / rate if rate else 0
    return f"{name}: {done}/{total} bytes ({100 * done // max(total, 1)}%), ETA {eta:.0f} s"


# ---------------------------------------------------------------------------- pull
def resolve(reg: Registry, ref: OciRef) -> tuple[str, dict]:
    """The manifest `ref` names: (digest, manifest), checked against the pin and the registry's word."""
    what = f"{ref.repo}:{ref.tag}" if ref.tag else f"{ref.repo}@{ref.digest}"
    by = ref.tag if ref.tag else ref.digest
    with reg.request("GET", reg.url(ref, "manifests", by), {"Accept": MANIFEST_TYPE}, ok=(200,),
                     what=f"manifest {what}") as resp:
        body = resp.read(MAX_MANIFEST + 1)
        said = resp.headers.get("Docker-Content-Digest")
    if len(body) > MAX_MANIFEST:
        raise RegistryError(f"{ref}: the manifest is larger than {MAX_MANIFEST} bytes; not an EdgeSDK package")
    digest = _digest(body)
    if ref.digest and digest != ref.digest:
        if ref.tag:
            raise RegistryError(f"{ref}: the tag {ref.tag!r} moved: it now names {digest}, not the pinned "
                                f"{ref.digest}; pull by the new digest if that release is intended")
        raise RegistryError(f"{ref}: the registry sent a manifest whose digest is {digest}; refusing it")
    if said and said != digest:
        raise RegistryError(f"{ref}: registry says the manifest is {said} but its content hashes to {digest}")
    try:
        manifest = json.loads(body)
    except ValueError as exc:
        raise RegistryError(f"{ref}: the manifest is not JSON ({exc})") from exc
    return digest, manifest


def package_layer(ref: OciRef, manifest: dict) -> dict:
    """The one layer holding the package; refuses other artifacts with a clear reason."""
    kind = manifest.get("artifactType") or (manifest.get("config") or {}).get("mediaType")
    layers = [l for l in manifest.get("layers") or [] if isinstance(l, dict) and l.get("mediaType") == LAYER_TYPE]
    if len(layers) != 1:
        raise RegistryError(f"{ref} is not an EdgeSDK package (artifact type {kind!r}, expected one layer of "
                            f"{LAYER_TYPE}); push one with `edgesdk push PKG {ref}`")
    layer = layers[0]
    if not isinstance(layer.get("size"), int) or layer["size"] < 0 or \
            not str(layer.get("digest", "")).startswith("sha256:"):
        raise RegistryError(f"{ref}: the package layer has no valid size or sha256 digest")
    return layer


def pull(source: str, dest_dir: PathLike, registry: Optional[Registry] = None, progress: Progress = _quiet,
         **registry_options) -> Transfer:
    """Download the package `oci://...` names into `dest_dir` (resuming), digest-verified."""
    ref = parse_ref(source)
    reg = registry or Registry(ref.host, **registry_options)
    digest, manifest = resolve(reg, ref)
    layer = package_layer(ref, manifest)
    title = os.path.basename(str((layer.get("annotations") or {}).get(TITLE) or "")) or \
        layer["digest"].split(":")[1][:16] + ".edgepkg"
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / title
    with _pull_lock(dest, progress):  # two pulls into one folder would write one .part at once
        moved, reused = _download_blob(reg, ref, layer, final, progress)
    progress(f"pulled {ref} ({digest}) to {final}" + (" (already complete)" if reused else f", {moved} bytes"))
    return Transfer(f"oci://{ref.host}/{ref.repo}@{digest}", digest, layer["digest"], layer["size"], moved, final,
                    dict(manifest.get("annotations") or {}), reused)


@contextlib.contextmanager
def _pull_lock(dest: Path, progress: Progress) -> Iterator[None]:
    fd = os.open(dest / ".pull.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another pull into {dest}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _download_blob(reg: Registry, ref: OciRef, layer: dict, final: Path, progress: Progress) -> tuple[int, bool]:
    want, size = layer["digest"], layer["size"]
    if final.is_file() and final.stat().st_size == size and _file_digest(final) == want:
        return 0, True
    part, meta = final.with_name(final.name + ".part"), final.with_name(final.name + ".part.json")
    if _read_json(meta).get("digest") != want:
        part.unlink(missing_ok=True)  # a partial download of another blob
        atomic_write(meta, json.dumps({"digest": want, "source": str(ref)}))
    failures, restarted, counter = 0, False, [0]  # counter: bytes received, also by attempts that broke off
    while True:
        try:
            _download_range(reg, ref, want, part, size, progress, counter)
        except RegistryError as exc:
            failures += 1
            if failures > RETRIES or not exc.transient:
                raise
            progress(f"{final.name}: download interrupted ({exc}); resuming")
            time.sleep(min(0.1 * 2 ** failures, 3.0))
            continue
        got = _file_digest(part)
        if got == want and part.stat().st_size == size:
            break
        part.unlink(missing_ok=True)
        if not restarted:  # a stale or mixed .part: one clean retry from zero
            restarted = True
            progress(f"{final.name}: sha256 mismatch; downloading once more from the start")
            continue
        meta.unlink(missing_ok=True)
        raise RegistryError(f"{ref}: the package blob hashes to {got}, not the {want} its manifest names (wrong "
                            "digest: corrupt or tampered registry storage); nothing was kept")
    os.replace(part, final)
    meta.unlink(missing_ok=True)
    fsync_dir(final.parent)
    return counter[0], False


def _download_range(reg: Registry, ref: OciRef, digest: str, part: Path, size: int, progress: Progress,
                    counter: list) -> None:
    """Append to `part` from where it ends, adding what arrives to `counter[0]`."""
    offset = part.stat().st_size if part.exists() else 0
    if offset > size:
        part.unlink()
        offset = 0
    if offset == size:
        return
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    got, t0, last = 0, time.monotonic(), 0.0
    try:
        resp = reg.request("GET", reg.url(ref, "blobs", digest), headers, ok=(200, 206), what=f"blob {digest}")
        with resp, open(part, "ab" if resp.status == 206 else "wb") as out:
            if resp.status == 206 and offset:
                progress(f"{part.name}: resuming at byte {offset}")
            else:
                offset = 0
            while True:
                chunk = resp.read(READ)
                if not chunk:
                    break
                out.write(chunk)
                got += len(chunk)
                counter[0] += len(chunk)
                if time.monotonic() - last > 2:
                    last = time.monotonic()
                    progress(_eta(part.name, offset + got, size, t0))
            out.flush()
            os.fsync(out.fileno())
    except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
        raise RegistryError(f"registry {ref.host}: connection lost during blob {digest}: {exc!r}",
                            transient=True) from exc
    if offset + got < size:
        raise RegistryError(f"registry {ref.host}: connection closed at byte {offset + got} of {size}",
                            transient=True)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
