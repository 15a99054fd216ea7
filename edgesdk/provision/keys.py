"""Ed25519 signing keys.

`generate_keypair` writes NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub (PEM). A key id is
the first 16 hex digits of the sha256 of the raw 32-byte public key: short enough to read,
long enough that two keys of one fleet never share one. A trusted-keys directory is any
directory of `*.pub` files; the device trusts exactly those.
"""
from __future__ import annotations

import base64
import hashlib
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import PackageError
from .fsutil import atomic_write

PathLike = Union[str, Path]
PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    key_id: str


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(out_dir: PathLike, name: str = "edgesdk", overwrite: bool = False) -> KeyPair:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out_dir / f"{name}{PRIVATE_SUFFIX}", out_dir / f"{name}{PUBLIC_SUFFIX}"
    for p in (priv_path, pub_path):
        if p.exists() and not overwrite:
            raise PackageError(f"{p} already exists; refusing to overwrite a key (choose another --name or "
                               "directory, or pass --force if you really mean to replace it)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic_write(priv_path, pem, mode=0o600)
    atomic_write(pub_path, pub, mode=0o644)
    return KeyPair(priv_path, pub_path, key_id(key.public_key()))


def load_private_key(path: PathLike) -> Ed25519PrivateKey:
    path = Path(path)
    if not path.is_file():
        raise PackageError(f"signing key {path} does not exist; create one with `edgesdk keygen -o DIR`")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # like ssh: a private key others can read is no longer private
        raise PackageError(f"signing key {path} is readable by group/others (mode {mode:04o}); "
                           f"run `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise PackageError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise PackageError(f"{path} holds a {type(key).__name__}; EdgeSDK signs with Ed25519 keys "
                           "(`edgesdk keygen`)")
    return key


def load_public_key(path: PathLike) -> Ed25519PublicKey:
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, TypeError, OSError) as exc:
        raise PackageError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise PackageError(f"{path} holds a {type(key).__name__}; trusted keys must be Ed25519")
    return key


def load_trusted_keys(directory: PathLike) -> dict[str, Ed25519PublicKey]:
    """All `*.pub` keys of a directory, by key id."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PackageError(f"trusted-keys directory {directory} does not exist; copy the signer's .pub "
                           "file(s) there")
    keys = {key_id(k): k for k in (load_public_key(p) for p in sorted(directory.glob(f"*{PUBLIC_SUFFIX}")))}
    if not keys:
        raise PackageError(f"trusted-keys directory {directory} holds no *{PUBLIC_SUFFIX} files; copy the "
                           "signer's public key there")
    return keys


def sign(key: Ed25519PrivateKey, data: bytes) -> dict:
    """A detached signature document over `data`."""
    return {"algorithm": "ed25519", "key_id": key_id(key.public_key()),
            "signature": base64.b64encode(key.sign(data)).decode("ascii")}


def check_signature(public_key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        public_key.verify(signature, data)
        return True
    except InvalidSignature:
        return False
