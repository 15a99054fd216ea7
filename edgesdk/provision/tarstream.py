"""A bounded tar reader: raw 512-byte headers, PAX and GNU long names, nothing unbounded.

The interpreter's `tarfile` parses extended headers before anything of ours can look at them,
and in Python releases before 3.11.10 its PAX parser takes time that grows with the square of
a record's length (CVE-2024-6232); a GNU long name is read whole into memory whatever its
size. Package headers are read before the signature is verified, so an attacker chooses them.
This reader does the work itself with hard bounds whatever the interpreter version:

- a PAX record block or GNU long name/link is at most `MAX_EXTENDED_BYTES` bytes, and at
  most `MAX_EXTENDED_RUN` of them may precede one member;
- PAX records are parsed in one linear pass (`length key=value\\n`, the length's digits
  bounded); only `path`, `linkpath` and `size` are honoured;
- global PAX headers and sparse members (GNU type 'S' or PAX `GNU.sparse.*` keys) are refused;
- header checksums are checked, so a block of random bytes is not read as a header.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Iterator, Optional

from ..errors import PackageError

BLOCK = 512
MAX_EXTENDED_BYTES = 64 << 10
MAX_EXTENDED_RUN = 4
MAX_NAME_BYTES = 4096
KINDS = {b"0": "file", b"\x00": "file", b"7": "contiguous", b"5": "dir", b"2": "symlink", b"1": "hardlink",
         b"3": "chardev", b"4": "blockdev", b"6": "fifo"}


@dataclass(frozen=True)
class RawMember:
    name: str
    kind: str  # a KINDS value, or "unknown"
    size: int
    linkname: str
    mode: int
    typeflag: bytes


def shown(name: str, limit: int = 120) -> str:
    """A name for an error message: repr'd and cut short (a hostile name may be kilobytes long)."""
    return repr(name) if len(name) <= limit else repr(name[:limit]) + f"... ({len(name)} characters)"


def _read_exact(stream: IO[bytes], n: int, what: str) -> bytes:
    chunks, left = [], n
    while left:
        data = stream.read(left)
        if not data:
            raise PackageError(f"{what} is not a valid package archive (corrupt or truncated): the tar "
                               "stream ends inside a member")
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


def _number(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:  # base-256 (GNU), for sizes past 8 GiB
        if field[0] != 0x80:
            raise PackageError(f"{what}: a tar header holds a negative or oversized number")
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise PackageError(f"{what} is not a valid package archive (corrupt or truncated): a tar header "
                           f"number field holds {field!r}") from None


def _checksum_ok(block: bytes, what: str) -> bool:
    stored = _number(block[148:156], what)
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = unsigned - 2 * sum(b for b in block[:148] + block[156:] if b > 127)
    return stored in (unsigned, signed)


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PackageError(f"{what}: a member name is not valid UTF-8; package paths are UTF-8") from None


def parse_pax(data: bytes, what: str) -> dict[str, str]:
    """PAX records in one linear pass; PackageError for malformed or sparse ones."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # padding after the last record
            break
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise PackageError(f"{what}: a PAX extended header record is malformed")
        length = int(digits)
        record = data[pos:pos + length]
        if length <= len(digits) + 1 or len(record) != length or not record.endswith(b"\n") \
                or b"=" not in record:
            raise PackageError(f"{what}: a PAX extended header record is malformed")
        key, value = record[len(digits) + 1:-1].split(b"=", 1)
        out[_text(key, what)] = _text(value, what)
        pos += length
    if any(k.startswith("GNU.sparse.") for k in out):
        raise PackageError(f"{what}: a member is a PAX sparse file; packages may hold only regular files, "
                           "directories and links inside the package")
    return out


def _extended(stream: IO[bytes], flag: bytes, size: int, what: str) -> bytes:
    limit = MAX_EXTENDED_BYTES if flag == b"x" else MAX_NAME_BYTES + 1
    if size > limit:
        raise PackageError(f"{what}: a tar extended header unpacks to more than {limit} bytes ({size} declared); "
                           "refusing the package before reading it (make packages with `edgesdk pack`)")
    data = _read_exact(stream, -(-size // BLOCK) * BLOCK, what)
    return data[:size]


class MemberData:
    """One member's bytes, read at most `size` from the stream."""

    def __init__(self, stream: IO[bytes], size: int, what: str) -> None:
        self._stream, self.left, self._what = stream, size, what
        self._pad = -size % BLOCK

    def read(self, size: int = -1) -> bytes:
        n = self.left if size is None or size < 0 else min(size, self.left)
        if n <= 0:
            return b""
        data = _read_exact(self._stream, min(n, 1 << 20), self._what)
        self.left -= len(data)
        return data

    def skip(self) -> None:
        while self.left:
            self.read(1 << 20)
        _read_exact(self._stream, self._pad, self._what)
        self._pad = 0

    def close(self) -> None:
        pass


def read_members(stream: IO[bytes], what: str) -> Iterator[tuple[RawMember, MemberData]]:
    """Yield each member with its data (skipped for the caller if it does not read it)."""
    pax: dict[str, str] = {}
    long_name: Optional[str] = None
    long_link: Optional[str] = None
    run = 0
    while True:
        block = stream.read(BLOCK)
        if len(block) < BLOCK:
            if block:
                block += _read_exact(stream, BLOCK - len(block), what)
            else:
                return  # end of stream without the end-of-archive blocks: accepted, as tar does
        if block == bytes(BLOCK):
            return
        if not _checksum_ok(block, what):
            raise PackageError(f"{what} is not a valid package archive (corrupt or truncated): a tar header "
                               "fails its checksum")
        flag, size = block[156:157], _number(block[124:136], what)
        if flag in (b"x", b"L", b"K"):
            run += 1
            if run > MAX_EXTENDED_RUN:
                raise PackageError(f"{what}: more than {MAX_EXTENDED_RUN} tar extended headers in a row; refusing "
                                   "the package")
            data = _extended(stream, flag, size, what)
            if flag == b"x":
                pax.update(parse_pax(data, what))
            elif flag == b"L":
                long_name = _text(data.rstrip(b"\x00"), what)
            else:
                long_link = _text(data.rstrip(b"\x00"), what)
            continue
        if flag == b"g":
            raise PackageError(f"{what}: the archive has a global PAX header; EdgeSDK packages have none")
        if flag == b"S":
            raise PackageError(f"{what}: a member is a GNU sparse file; packages may hold only regular files, "
                               "directories and links inside the package")
        name = _text(block[0:100].split(b"\x00", 1)[0], what)
        prefix = block[345:500].split(b"\x00", 1)[0] if block[257:262] == b"ustar" else b""
        if prefix:
            name = _text(prefix, what) + "/" + name
        name = pax.get("path", long_name if long_name is not None else name)
        link = pax.get("linkpath", long_link if long_link is not None else
                       _text(block[157:257].split(b"\x00", 1)[0], what))
        if "size" in pax:
            if not pax["size"].isdigit() or len(pax["size"]) > 20:
                raise PackageError(f"{what}: a PAX size record is not a number")
            size = int(pax["size"])
        kind = KINDS.get(flag, "unknown")
        data_size = size if kind in ("file", "contiguous") else 0
        member = RawMember(name, kind, size, link, _number(block[100:108], what), flag)
        data = MemberData(stream, data_size, what)
        yield member, data
        data.skip()
        pax, long_name, long_link, run = {}, None, None, 0
