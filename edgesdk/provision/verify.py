"""Verifying a package: signature first, then every file against the signed manifest.

Order matters. `edgepkg.json` and `edgepkg.sig` are the first members; the signature is
checked against the trusted keys before the payload is even read, so a package from an
unknown signer or with a modified manifest is refused at once. Then every payload member
is hashed against the (now trusted) manifest while the archive is scanned by
`extract.iter_members`, which refuses unsafe members. Nothing is written.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..bundle import sha256_file
from ..errors import PackageError
from .extract import Limits, iter_members
from .jsonsafe import loads_bounded
from .keys import check_signature, load_trusted_keys
from .package import MANIFEST_NAME, SIGNATURE_NAME, PackageManifest, package_id

PathLike = Union[str, Path]
_META_MAX = 4 << 20  # edgepkg.json: ~150 bytes a file, 10,000 files at most
_SIGNATURE_MAX = 4096  # edgepkg.sig is ~200 bytes: algorithm, key id, 88 characters of base64
UNSIGNED_WARNING = ("WARNING: installing a package WITHOUT a trusted signature (--allow-unsigned). Anyone "
                    "who can hand this device a file can run code on it. Use this for development only.")


@dataclass
class VerifiedPackage:
    path: Path
    manifest: PackageManifest
    manifest_bytes: bytes
    signature_bytes: Optional[bytes]
    key_id: Optional[str]  # the signer, when the signature was checked against a trusted key
    sha256: str  # of the archive file
    warnings: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return package_id(self.manifest_bytes)

    @property
    def release_name(self) -> str:
        return f"{self.manifest.version}-{self.id}"

    @property
    def signed(self) -> bool:
        return self.key_id is not None


def _read_small(data, name: str, what: str, limit: int) -> bytes:
    blob = data.read(limit + 1)
    if len(blob) > limit:
        raise PackageError(f"{what}: {name} is larger than {limit} bytes; refusing the package")
    return blob


def check_signature_doc(sig_bytes: Optional[bytes], manifest_bytes: bytes,
                        trusted: Optional[dict[str, Ed25519PublicKey]], allow_unsigned: bool,
                        what: str) -> tuple[Optional[str], list[str]]:
    """(signer key id or None, warnings); PackageError when the package must be refused."""
    if sig_bytes is None:
        if not allow_unsigned:
            raise PackageError(f"{what} is not signed; refusing it. Sign it with `edgesdk pack --key KEY`, or pass "
                               "--allow-unsigned for development only")
        return None, [UNSIGNED_WARNING]
    try:
        doc = loads_bounded(sig_bytes, f"{what}: {SIGNATURE_NAME}", _SIGNATURE_MAX, max_depth=1)
        algorithm, kid = doc["algorithm"], str(doc["key_id"])
        signature = base64.b64decode(doc["signature"], validate=True)
    except (KeyError, TypeError, binascii.Error) as exc:
        raise PackageError(f"{what}: {SIGNATURE_NAME} is malformed ({exc}); refusing the package") from exc
    if algorithm != "ed25519":
        raise PackageError(f"{what}: signature algorithm {algorithm!r} is not supported (ed25519 only)")
    if trusted is None or kid not in trusted:
        if allow_unsigned:
            return None, [UNSIGNED_WARNING + f" (signed by key {kid}, which is not trusted here)"]
        known = ", ".join(sorted(trusted)) if trusted else "none"
        raise PackageError(f"{what} is signed by unknown key {kid}; trusted keys: {known}. Refusing it. If you "
                           "trust the signer, add its .pub file to the trusted-keys directory")
    if not check_signature(trusted[kid], signature, manifest_bytes):
        raise PackageError(f"{what}: the signature by key {kid} does not match {MANIFEST_NAME}: the package was "
                           "modified after signing (tampered) or is corrupt; refusing it")
    return kid, []


def verify_package(path: PathLike, trusted_keys: Union[None, PathLike, dict[str, Ed25519PublicKey]],
                   allow_unsigned: bool = False, limits: Limits = Limits()) -> VerifiedPackage:
    """Check a package completely without writing anything; PackageError says why it is refused."""
    path = Path(path)
    what = f"package {path}"
    trusted = load_trusted_keys(trusted_keys) if isinstance(trusted_keys, (str, Path)) else trusted_keys
    if trusted is None and not allow_unsigned:
        raise PackageError("no trusted keys given; pass --trusted-keys DIR (or --allow-unsigned for development)")
    manifest_bytes: Optional[bytes] = None
    sig_bytes: Optional[bytes] = None
    manifest: Optional[PackageManifest] = None
    key_id: Optional[str] = None
    warnings: list[str] = []
    seen: set[str] = set()
    for index, (m, data) in enumerate(iter_members(path, limits)):
        if index == 0:
            if m.name != MANIFEST_NAME or data is None:
                raise PackageError(f"{what} is not an EdgeSDK package: its first member is {m.name!r}, not "
                                   f"{MANIFEST_NAME} (make packages with `edgesdk pack`)")
            manifest_bytes = _read_small(data, MANIFEST_NAME, what, _META_MAX)
            continue
        if index == 1 and m.name == SIGNATURE_NAME and data is not None:
            sig_bytes = _read_small(data, SIGNATURE_NAME, what, _SIGNATURE_MAX)
            continue
        if manifest is None:
            # The signature is judged before the first payload byte is read.
            key_id, warnings = check_signature_doc(sig_bytes, manifest_bytes, trusted, allow_unsigned, what)
            manifest = PackageManifest.from_bytes(manifest_bytes, what)
        _check_member(m, data, manifest, what)
        seen.add(m.name)
    if manifest_bytes is None:
        raise PackageError(f"{what} is empty")
    if manifest is None:
        key_id, warnings = check_signature_doc(sig_bytes, manifest_bytes, trusted, allow_unsigned, what)
        manifest = PackageManifest.from_bytes(manifest_bytes, what)
    missing = sorted(set(manifest.files) - seen)
    if missing:
        raise PackageError(f"{what}: files listed in the manifest are missing from the archive: {missing}")
    return VerifiedPackage(path, manifest, manifest_bytes, sig_bytes, key_id, sha256_file(path), warnings)


def signed_size_bound(path: PathLike, trusted_keys: Union[None, PathLike, dict[str, Ed25519PublicKey]],
                      allow_unsigned: bool = False) -> Optional[int]:
    """The most a package can weigh according to its signed manifest, judged from the first bytes of
    a download in progress: None until the manifest and signature have arrived (PackageError when
    the signature already fails). A download can then be stopped at this size."""
    what = f"download {path}"
    trusted = load_trusted_keys(trusted_keys) if isinstance(trusted_keys, (str, Path)) else trusted_keys
    head: list[bytes] = []
    try:
        for index, (m, data) in enumerate(iter_members(path)):
            if index == 2 or data is None or (index == 1 and m.name != SIGNATURE_NAME):
                head.append(b"")  # a later member has begun: the head is complete
                break
            head.append(_read_small(data, m.name, what, _META_MAX if index == 0 else _SIGNATURE_MAX))
    except PackageError:
        return None  # not all there yet (or not a package: the full verification will say)
    if len(head) < 2 or not head[-1] == b"":
        return None
    manifest_bytes, sig_bytes = head[0], (head[1] if len(head) == 3 else None)
    check_signature_doc(sig_bytes, manifest_bytes, trusted, allow_unsigned, what)
    files = PackageManifest.from_bytes(manifest_bytes, what).files.values()
    # data padded to 512-byte blocks, each member's header and PAX header, tar's end record, and
    # deflate's worst case for incompressible data (stored blocks: +5 bytes per 64 KiB)
    tar = sum(-(-int(e.get("size", 0)) // 512) * 512 for e in files) + len(manifest_bytes) + len(sig_bytes or b"")
    tar += (len(files) + 2) * 6144 + 20480
    return tar + tar // 1000 + 65536


def _check_member(m, data, manifest: PackageManifest, what: str) -> None:
    if m.kind == "dir":
        return
    if m.name in (MANIFEST_NAME, SIGNATURE_NAME):
        raise PackageError(f"{what}: {m.name} appears again later in the archive; refusing it")
    want = manifest.files.get(m.name)
    if want is None:
        raise PackageError(f"{what}: member {m.name!r} is not listed in the signed package manifest; refusing it")
    if m.kind == "symlink":
        if want.get("symlink") != m.target:
            raise PackageError(f"{what}: symlink {m.name!r} -> {m.target!r} differs from the manifest")
        return
    if m.kind == "hardlink":
        # its content is the earlier file's, hashed there; extraction re-hashes the copy
        if manifest.files.get(m.target, {}).get("sha256") != want.get("sha256"):
            raise PackageError(f"{what}: hardlink {m.name!r} -> {m.target!r} differs from the manifest")
        return
    h = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: data.read(1 << 20), b""):
        h.update(chunk)
        size += len(chunk)
    if h.hexdigest() != want.get("sha256") or size != want.get("size"):
        raise PackageError(f"{what}: file {m.name!r} fails its sha256 check against the signed manifest "
                           "(tampered or corrupt); refusing it")
