"""Downloading packages over HTTP(S): resume with Range, check sha256, rename into place.

The download goes to `NAME.part` beside the destination, with `NAME.part.json` remembering the
URL and the server's validator (ETag / Last-Modified). A dropped connection is retried from
where it stopped (`Range: bytes=N-`, with `If-Range` so a changed file restarts from zero),
also by a later process after a crash or power loss. Only a complete file whose sha256 matches
is renamed to its final name.
"""
from __future__ import annotations

import errno
import http.client
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Union

from ..bundle import sha256_file
from ..errors import PackageError
from .fsutil import atomic_write, fsync_dir

PathLike = Union[str, Path]
_CHUNK = 1 << 16
_ROOM_EVERY = 4 << 20  # free space is checked every this many bytes written
_HEAD_EVERY = 256 << 10  # how often the head of a growing download is asked for its signed size
RESERVE_BYTES = 64 << 20  # a download never leaves less free than this (or 5% of a small disk)
_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only: urllib would follow one to ftp:// too, outside every check here."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's signature)
        if not is_url(newurl):
            raise PackageError(f"download of {req.full_url} redirects to {newurl!r}, which is not http(s); refusing")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def is_url(text: str) -> bool:
    return str(text).startswith(("http://", "https://"))


def _name_for(url: str) -> str:
    base = _SAFE.sub("_", os.path.basename(urllib.parse.urlparse(url).path))[:120]
    # a URL path of "/", "/." or "/.." names no file: never let it name the downloads folder itself
    return base if base.strip(".") else "package.edgepkg"


def fetch(url: str, dest_dir: PathLike, sha256: Optional[str] = None, retries: int = 8, timeout: float = 30.0,
          progress: Optional[Callable[[str], None]] = None, max_bytes: Optional[int] = None,
          size_from_head: Optional[Callable[[Path], Optional[int]]] = None) -> Path:
    """Download `url` into `dest_dir` and return the file's path (resuming a partial download).

    The body may be at most `max_bytes` (None: no cap of its own), nor more than `size_from_head`
    says once it can tell from the bytes so far (install passes the bound its signed manifest
    states), and may not take the file system below `RESERVE_BYTES` free; past any of these the
    download stops and its `.part` is removed."""
    budget = Budget(max_bytes, size_from_head)
    try:
        return _fetch(url, Path(dest_dir), sha256, retries, timeout, progress or (lambda _m: None), budget)
    except PackageError:
        final = Path(dest_dir) / _name_for(url)
        for p in (final.with_name(final.name + ".part"), final.with_name(final.name + ".part.json")):
            try:
                p.unlink(missing_ok=True)
            except OSError:
                pass
        raise


class Budget:
    """How large the body may grow: the caller's cap, tightened once the head of the file tells."""

    def __init__(self, max_bytes: Optional[int], size_from_head: Optional[Callable[[Path], Optional[int]]]) -> None:
        self.max_bytes, self._head = max_bytes, size_from_head

    def update(self, part: Path) -> None:
        if self._head is None:
            return
        bound = self._head(part)
        if bound is not None:
            self.max_bytes = bound if self.max_bytes is None else min(self.max_bytes, bound)
            self._head = None


def _fetch(url: str, dest_dir: Path, sha256: Optional[str], retries: int, timeout: float,
           say: Callable[[str], None], budget: Budget) -> Path:
    if not is_url(url):
        raise PackageError(f"{url!r} is not an http:// or https:// URL")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise PackageError(f"sha256 {sha256!r} is not 64 hex digits")
    sha256 = sha256.lower() if sha256 else None
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / _name_for(url)
    if sha256 and final.is_file() and sha256_file(final) == sha256:
        say(f"{final.name}: already downloaded (sha256 ok)")
        return final
    part, meta_path = final.with_name(final.name + ".part"), final.with_name(final.name + ".part.json")
    meta = _read_meta(meta_path)
    if meta.get("url") != url:
        part.unlink(missing_ok=True)
        meta = {"url": url}
    restarted = False
    attempt = 0
    while True:
        attempt += 1
        try:
            _download(url, part, meta, meta_path, timeout, say, budget)
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt > retries:  # 4xx will not get better by asking again
                raise PackageError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
            say(f"{final.name}: server error HTTP {exc.code}; retrying")
            time.sleep(min(0.1 * 2 ** attempt, 5.0))
            continue
        except (http.client.HTTPException, OSError) as exc:  # OSError: refused, reset, timeout, URLError
            if attempt > retries:
                raise PackageError(f"download of {url} failed after {attempt} attempts: {exc}; run the "
                                   "same command again to resume") from exc
            have = part.stat().st_size if part.exists() else 0
            say(f"{final.name}: connection lost at {have} bytes ({type(exc).__name__}); resuming")
            time.sleep(min(0.1 * 2 ** attempt, 5.0))
            continue
        digest = sha256_file(part)
        if sha256 and digest != sha256:
            part.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            if meta.get("resumed") and not restarted:
                # a resumed file can mix two versions of a changed file: one clean retry from zero
                say(f"{final.name}: sha256 mismatch after resuming; downloading again from the start")
                restarted, meta = True, {"url": url}
                continue
            raise PackageError(f"download of {url}: sha256 {digest} differs from the expected {sha256}; "
                               "the file was not kept")
        os.replace(part, final)
        meta_path.unlink(missing_ok=True)
        fsync_dir(dest_dir)
        say(f"{final.name}: downloaded {final.stat().st_size} bytes" + (" (sha256 ok)" if sha256 else ""))
        return final


def _read_meta(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _check_room(part: Path, size: int, more: Optional[int], max_bytes: Optional[int], url: str) -> int:
    """Refuse going past the cap, or filling the disk (`more`: bytes still announced, if known).
    Returns how many more bytes may be written before the next check."""
    if max_bytes is not None and size + (more or 0) > max_bytes:
        raise PackageError(f"download of {url} is larger than the {max_bytes}-byte cap"
                           + (f" (the server announces {size + more} bytes)" if more else "")
                           + "; stopped and removed the partial file. Pass a larger --max-download-bytes if "
                             "the package is genuine")
    usage = shutil.disk_usage(part.parent)
    free, reserve = usage.free, min(RESERVE_BYTES, usage.total // 20)
    if free - (more or 0) < reserve:
        raise PackageError(f"download of {url} would leave less than {reserve} bytes free on the file "
                           f"system of {part.parent} ({free} bytes free); stopped and removed the partial file. "
                           "Free space and run again")
    room = min(free - reserve, _ROOM_EVERY, _HEAD_EVERY)
    return room if max_bytes is None else min(room, max_bytes - size + 1)


def _write_body(resp, part: Path, mode: str, budget: Budget, url: str) -> int:
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if mode == "ab" else os.O_TRUNC)
        with os.fdopen(os.open(part, flags, 0o644), mode) as out:  # never through a planted link
            next_check = out.tell() + _check_room(part, out.tell(), 0, budget.max_bytes, url)
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                if out.tell() >= next_check:
                    out.flush()
                    budget.update(part)
                    next_check = out.tell() + _check_room(part, out.tell(), 0, budget.max_bytes, url)
            out.flush()
            os.fsync(out.fileno())
            return out.tell()
    except OSError as exc:
        if exc.filename is None and exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
            raise  # the connection, not the disk: retried by the caller
        raise PackageError(f"download of {url}: cannot write {part}: {exc.strerror or exc}; removed the partial "
                           "file") from exc


def _download(url: str, part: Path, meta: dict, meta_path: Path, timeout: float, say, budget: Budget) -> None:
    """One request: append to `part` from where it ends; returns when the body is complete."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "edgesdk-fetch/1", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = meta.get("etag") or meta.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = _OPENER.open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # asked past the end: the .part is complete or stale
            length = _total_from_content_range(exc.headers.get("Content-Range"))
            if length == offset:
                return
            part.unlink(missing_ok=True)
            raise ConnectionError("range not satisfiable; restarting from zero") from exc
        raise
    with resp:
        if resp.status == 206:
            start = _start_from_content_range(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise ConnectionError(f"server resumed at byte {start}, not {offset}; restarting")
            mode, meta["resumed"] = "ab", True
            say(f"{part.name}: resuming at byte {offset}")
        else:
            mode, offset = "wb", 0  # a server without Range support sends everything again
        length = resp.headers.get("Content-Length")
        expected_end = offset + int(length) if length is not None and length.isdigit() else None
        _check_room(part, offset, None if expected_end is None else expected_end - offset, budget.max_bytes, url)
        if resp.status != 206:
            meta.update({"etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified")})
            atomic_write(meta_path, json.dumps(meta))
        size = _write_body(resp, part, mode, budget, url)
    if expected_end is not None and size < expected_end:
        raise ConnectionError(f"connection closed at byte {size} of {expected_end}")


def _start_from_content_range(value: Optional[str]) -> Optional[int]:
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    return int(m.group(1)) if m else None


def _total_from_content_range(value: Optional[str]) -> Optional[int]:
    m = re.match(r"bytes \*/(\d+)", value or "")
    return int(m.group(1)) if m else None
