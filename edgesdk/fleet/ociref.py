"""`oci://HOST[:PORT]/REPO[:TAG][@sha256:DIGEST]`: where a package lives in an OCI registry.

`REPO:TAG@sha256:D` pins the tag: a pull refuses it when the tag now names another manifest (the
tag moved). Without a tag or digest the tag is `latest` (Docker's and ORAS's default).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from ..errors import PackageError

SCHEME = "oci://"
_REPO = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::\d{1,5})?|\[[0-9A-Fa-f:]+\](?::\d{1,5})?")


def is_oci(text: str) -> bool:
    return str(text).startswith(SCHEME)


@dataclass(frozen=True)
class OciRef:
    host: str  # with the port, as the registry's URLs use it
    repo: str
    tag: Optional[str]
    digest: Optional[str]

    @property
    def reference(self) -> str:
        """What goes into /v2/REPO/manifests/<reference>: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return f"{SCHEME}{self.host}/{self.repo}" + (f":{self.tag}" if self.tag else "") + \
            (f"@{self.digest}" if self.digest else "")


def parse_ref(text: str) -> OciRef:
    """Parse an oci:// reference, naming what is wrong with a bad one."""
    if not is_oci(text):
        raise PackageError(f"{text!r} is not an OCI reference; write oci://HOST:PORT/REPO:TAG")
    rest = text[len(SCHEME):]
    host, _, path = rest.partition("/")
    if not host or not _HOST.fullmatch(host) or not path:
        raise PackageError(f"{text!r}: expected oci://HOST[:PORT]/REPO[:TAG][@sha256:DIGEST]")
    path, _, digest = path.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise PackageError(f"{text!r}: digest {digest!r} is not sha256: followed by 64 lowercase hex digits")
    repo, tag = path, None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = path.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise PackageError(f"{text!r}: tag {tag!r} is not valid (letters, digits, _ . -; at most 128)")
    if not _REPO.fullmatch(repo):
        raise PackageError(f"{text!r}: repository {repo!r} is not valid (lowercase letters, digits, "
                           "separators . _ - and /)")
    return OciRef(host, repo, tag if tag or digest else "latest", digest or None)
