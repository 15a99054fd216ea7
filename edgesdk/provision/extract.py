"""Reading package archives safely.

An `.edgepkg` is a tar archive (gzip-compressed or plain). Every member header is checked
as it is read, before any byte of it reaches the disk:

- names: relative, no `..`, no empty or `.` components, no backslashes, no duplicates, no
  member below another member that is a file or a link;
- types: regular files, directories, symlinks and hardlinks only (device files, fifos,
  sparse and contiguous files are refused);
- links: a symlink's target must be relative and stay inside the package when resolved
  against the package's own members (no chains through other symlinks); a hardlink must
  point at an earlier regular-file member;
- size: per-member and total declared sizes, member count, and the ratio of declared bytes to
  compressed bytes (a decompression bomb declares far more than it weighs) are bounded by
  `Limits`; the decompressed stream itself is capped too, so even tar's own extended
  headers cannot balloon.

`iter_members` streams the archive once (the file objects it yields must be read before
the next member). `scan` runs the checks without writing; `extract` scans first, then
writes into a fresh directory with O_EXCL|O_NOFOLLOW, fsyncing each file.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Optional, Union

from ..errors import PackageError
from .fsutil import fsync_tree
from .tarstream import RawMember, read_members, shown

PathLike = Union[str, Path]
_CHUNK = 1 << 20
_GZIP_HEADER_MAX = 128 << 10  # FEXTRA is at most 64 KiB; a name or comment past this is hostile
_MAGIC = {b"\xfd7zXZ\x00": "xz", b"BZh": "bzip2", b"\x28\xb5\x2f\xfd": "zstd"}


@dataclass(frozen=True)
class Limits:
    """Bounds on what an archive may unpack to (defaults fit models of a few GB)."""

    max_members: int = 10_000
    max_member_bytes: int = 4 << 30
    max_total_bytes: int = 8 << 30
    #: declared bytes / compressed bytes; model weights compress ~1.1x, text ~5x
    max_ratio: float = 100.0
    #: the ratio is judged only past this many declared bytes (tiny files compress oddly)
    ratio_floor_bytes: int = 8 << 20


@dataclass(frozen=True)
class Member:
    name: str  # normalized relative path
    kind: str  # "file" | "dir" | "symlink" | "hardlink"
    size: int = 0
    target: str = ""  # link target as stored
    executable: bool = False


class _CappedReader(io.RawIOBase):
    """The decompressed stream, counting bytes and refusing to go past a cap."""

    def __init__(self, stream: IO[bytes], cap: int, what: str) -> None:
        self._stream, self._cap, self._what, self.count = stream, cap, what, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[override]
        want = min(len(buf), self._cap - self.count + 1)
        data = self._stream.read(want)
        self.count += len(data)
        if self.count > self._cap:
            raise PackageError(f"{self._what}: the archive unpacks to more than {self._cap} bytes; refusing "
                               "it as a decompression bomb (raise the limits if this package is genuine)")
        buf[:len(data)] = data
        return len(data)


_CORRUPT = (EOFError, OSError, zlib.error, UnicodeError)


def _corrupt(what: str, exc: BaseException) -> PackageError:
    return PackageError(f"{what} is not a valid package archive (corrupt or truncated): {exc}")


class _MemberData:
    """A member's data as the consumer reads it; decompression errors become PackageError here too."""

    def __init__(self, f: IO[bytes], what: str) -> None:
        self._f, self._what = f, what

    def read(self, size: int = -1) -> bytes:
        try:
            return self._f.read(size)
        except _CORRUPT as exc:
            raise _corrupt(self._what, exc) from exc

    def close(self) -> None:
        self._f.close()


def _check_gzip_header(raw: IO[bytes], what: str) -> None:
    """gzip's optional file name and comment end at a NUL byte that Python's reader looks for one byte
    at a time: a header of many megabytes costs seconds before anything is verified. Bound it here."""
    head = raw.read(_GZIP_HEADER_MAX)
    raw.seek(0)
    flags = head[3] if len(head) > 3 else 0
    pos = 10 + (2 + int.from_bytes(head[10:12], "little") if flags & 4 else 0)  # FEXTRA
    for flag in (8, 16):  # FNAME, FCOMMENT
        if flags & flag:
            end = head.find(b"\0", pos)
            if end < 0:
                raise PackageError(f"{what}: the gzip header's file name or comment is longer than "
                                   f"{_GZIP_HEADER_MAX} bytes; refusing the package (make packages with "
                                   "`edgesdk pack`)")
            pos = end + 1


def normalize_name(name: str, what: str) -> str:
    """A member name as a clean relative path, or PackageError saying why it is unsafe."""
    if len(name) > 4096:
        raise PackageError(f"{what}: member name {shown(name)} is longer than 4096 characters")
    if not name or "\x00" in name:
        raise PackageError(f"{what}: a member has an empty or NUL-containing name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise PackageError(f"{what}: member {shown(name)} has an absolute path; refusing to write outside the "
                           "release directory")
    if "\\" in name:
        raise PackageError(f"{what}: member {shown(name)} contains a backslash; package paths use '/'")
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        raise PackageError(f"{what}: member {shown(name)} contains '..' (path traversal); refusing the package")
    if any(p in ("", ".") for p in parts) or len(name) > 4096 or any(len(p) > 255 for p in parts):
        raise PackageError(f"{what}: member {shown(name)} is not a clean relative path")
    return "/".join(parts)


def _member(info: RawMember, what: str) -> Member:
    name = normalize_name(info.name, what)
    if info.kind == "file":
        return Member(name, "file", info.size, executable=bool(info.mode & 0o111))
    if info.kind == "dir":
        return Member(name, "dir")
    if info.kind in ("symlink", "hardlink"):
        return Member(name, info.kind, target=info.linkname)
    kinds = {"chardev": "a character device", "blockdev": "a block device", "fifo": "a fifo",
             "contiguous": "a contiguous file"}
    kind = kinds.get(info.kind, f"of tar type {info.typeflag!r}")
    raise PackageError(f"{what}: member {shown(info.name)} is {kind}; "
                       "packages may hold only regular files, directories and links inside the package")


def _resolve_symlink(name: str, target: str, symlinks: set[str], what: str) -> str:
    """Resolve a symlink target against the package tree; refuse escapes and chains."""
    if not target or target.startswith("/"):
        raise PackageError(f"{what}: symlink {shown(name)} points to {shown(target)}, an absolute path outside "
                           "the package")
    parts = name.split("/")[:-1]
    for comp in target.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                raise PackageError(f"{what}: symlink {shown(name)} -> {shown(target)} points outside the package")
            parts.pop()
            continue
        parts.append(comp)
        if "/".join(parts) in symlinks:
            raise PackageError(f"{what}: symlink {shown(name)} -> {shown(target)} goes through another symlink; "
                               "link chains are refused")
    return "/".join(parts)


class _Checker:
    """The running checks over one archive's headers."""

    def __init__(self, what: str, limits: Limits, compressed_size: Optional[int]) -> None:
        self.what, self.limits, self.compressed_size = what, limits, compressed_size
        self.count = self.total = 0
        self.kinds: dict[str, str] = {}
        self.symlinks: dict[str, str] = {}
        self.dirs: set[str] = {""}  # directories implied by member paths

    def check(self, m: Member) -> None:
        lim, what = self.limits, self.what
        self.count += 1
        if self.count > lim.max_members:
            raise PackageError(f"{what}: more than {lim.max_members} members; refusing it as a bomb")
        if m.name in self.kinds:
            raise PackageError(f"{what}: member {shown(m.name)} appears twice; refusing (a later copy could "
                               "replace a checked one)")
        parts = m.name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if self.kinds.get(parent, "dir") != "dir":
                raise PackageError(f"{what}: member {shown(m.name)} lies below {parent!r}, which is a "
                                   f"{self.kinds[parent]}, not a directory (link escape)")
        if m.kind == "symlink":
            _resolve_symlink(m.name, m.target, set(), what)  # early: absolute and '..' escapes
            self.symlinks[m.name] = m.target
        elif m.kind == "hardlink":
            try:
                target = normalize_name(m.target, what)
            except PackageError:
                target = None
            if target is None or self.kinds.get(target) != "file":
                raise PackageError(f"{what}: hardlink {shown(m.name)} points to {shown(m.target)}, which is not a "
                                   "regular file earlier in the package (link escape)")
        elif m.kind == "file":
            if m.size > lim.max_member_bytes:
                raise PackageError(f"{what}: member {shown(m.name)} declares {m.size} bytes, over the limit of "
                                   f"{lim.max_member_bytes}; refusing it as oversized")
            self.total += m.size
            if self.total > lim.max_total_bytes:
                raise PackageError(f"{what}: the members declare more than {lim.max_total_bytes} bytes in all; "
                                   "refusing it as a decompression bomb")
            if (self.compressed_size and self.total > lim.ratio_floor_bytes
                    and self.total / self.compressed_size > lim.max_ratio):
                raise PackageError(
                    f"{what}: {self.compressed_size} compressed bytes declare {self.total} bytes "
                    f"(ratio {self.total / self.compressed_size:.0f} > {lim.max_ratio:.0f}); refusing it as a "
                    "decompression bomb")
        self.kinds[m.name] = m.kind
        self.dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))

    def finish(self) -> None:
        names = set(self.symlinks)
        for name, target in self.symlinks.items():
            resolved = _resolve_symlink(name, target, names, self.what)
            if self.kinds.get(resolved) not in ("file", "dir", "hardlink") and resolved not in self.dirs:
                raise PackageError(f"{self.what}: symlink {shown(name)} -> {shown(target)} points to nothing in "
                                   "the package")


def iter_members(path: PathLike, limits: Limits = Limits()) -> Iterator[tuple[Member, Optional[IO[bytes]]]]:
    """Yield (member, data stream for files) in archive order, checking each header first.

    Link targets are checked once the whole archive is read (a symlink may precede its target):
    consume the iterator to the end before trusting anything it yielded.
    """
    path = Path(path)
    what = str(path)
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise PackageError(f"cannot open package {path}: {exc.strerror}") from exc
    with raw:
        magic = raw.read(6)
        raw.seek(0)
        for prefix, kind in _MAGIC.items():
            if magic.startswith(prefix):
                raise PackageError(f"{what} is {kind}-compressed; EdgeSDK packages are gzip or plain tar "
                                   "(make them with `edgesdk pack`)")
        compressed = magic[:2] == b"\x1f\x8b"
        if compressed:
            _check_gzip_header(raw, what)
        stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        cap = limits.max_total_bytes + 2048 * limits.max_members + (1 << 20)  # data + headers
        capped = _CappedReader(stream, cap, what)
        checker = _Checker(what, limits, os.fstat(raw.fileno()).st_size if compressed else None)
        try:
            for info, data in read_members(capped, what):
                m = _member(info, what)
                checker.check(m)
                yield m, (_MemberData(data, what) if m.kind == "file" else None)
            # Read to the end so gzip checks its CRC and length: a flipped byte anywhere in the
            # compressed stream is caught, not only in the parts tar happened to need.
            while capped.read(_CHUNK):
                pass
        except _CORRUPT as exc:
            raise _corrupt(what, exc) from exc
        checker.finish()


def scan(path: PathLike, limits: Limits = Limits()) -> list[Member]:
    """Check every header and link of an archive without writing anything."""
    members = []
    for m, _ in iter_members(path, limits):
        members.append(m)
    return members


def extract(path: PathLike, dest: PathLike, expected: Optional[dict[str, dict]] = None,
            limits: Limits = Limits(), scan_first: bool = True,
            on_file: Optional[Callable[[str], None]] = None) -> list[Member]:
    """Unpack into `dest` (created; must not exist), checking sha256/size against `expected`.

    `expected` maps member names to {"sha256", "size"} (files and hardlinks) or {"symlink": target};
    members not in it and entries missing from the archive are refused. With `scan_first`
    the whole archive is checked before the first write. `dest` is removed on any failure.
    """
    path, dest = Path(path), Path(dest)
    what = str(path)
    if scan_first:
        scan(path, limits)
    os.mkdir(dest, 0o755)
    written: list[Member] = []
    try:
        for m, data in iter_members(path, limits):
            if on_file is not None:
                on_file(m.name)
            want = None
            if expected is not None and m.kind != "dir":
                want = expected.get(m.name)
                if want is None:
                    raise PackageError(f"{what}: member {shown(m.name)} is not listed in the signed package manifest")
            target = dest / m.name
            if m.kind == "dir":
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
            elif m.kind == "symlink":
                if want is not None and want.get("symlink") != m.target:
                    raise PackageError(f"{what}: symlink {shown(m.name)} -> {shown(m.target)} differs from the "
                                       "manifest")
                target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                os.symlink(m.target, target)
            else:
                target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                source = data if m.kind == "file" else open(dest / normalize_name(m.target, what), "rb")
                try:
                    _write_file(source, target, 0o755 if m.executable else 0o644, want, m.name, what)
                finally:
                    if m.kind == "hardlink":
                        source.close()
            written.append(m)
        if expected is not None:
            missing = sorted(set(expected) - {m.name for m in written})
            if missing:
                raise PackageError(f"{what}: files listed in the manifest are missing from the archive: {missing}")
        fsync_tree(dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return written


def _write_file(source: IO[bytes], target: Path, mode: int, want: Optional[dict], name: str, what: str) -> None:
    h = hashlib.sha256()
    size = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out:
        for chunk in iter(lambda: source.read(_CHUNK), b""):
            h.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if want is not None and (want.get("sha256") != h.hexdigest() or want.get("size") != size):
        raise PackageError(f"{what}: file {shown(name)} fails its sha256 check against the signed manifest "
                           "(tampered or corrupt); refusing the package")
