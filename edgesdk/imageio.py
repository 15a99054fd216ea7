"""Reading image files: the one place EdgeSDK decodes them, with a pixel cap checked first.

A 2.6 MB PNG can declare 30000x30000 pixels and take 5 GB to decode. The width and height are
read from the file's header (PNG, JPEG, BMP, GIF, WebP, TIFF, PNM) before the decoder runs,
and an image over the cap is refused with a message naming the cap and how to raise it:
`--max-pixels N` where a command has it, the `EDGESDK_MAX_PIXELS` environment variable, or
`set_max_pixels(N)`. Files whose format has no header parser here are refused too: their size
cannot be bounded before decoding.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO, Optional, Union

import cv2
import numpy as np

from .errors import ConfigError, SourceError

MAX_PIXELS_ENV = "EDGESDK_MAX_PIXELS"
#: 100 megapixels (300 MB as BGR): above the largest common camera sensors' 8K video frames and
#: 50 MP photos; raise it for larger stills
DEFAULT_MAX_PIXELS = 100_000_000
FORMATS = "PNG, JPEG, BMP, GIF, WebP, TIFF, PPM/PGM/PBM"
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_override: Optional[int] = None


def set_max_pixels(limit: Optional[int]) -> None:
    """Set the cap for this process (None: back to EDGESDK_MAX_PIXELS or the default)."""
    global _override
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"the pixel cap must be a positive whole number, got {limit!r}")
    _override = limit


def max_pixels() -> int:
    """The cap in force: set_max_pixels(), else EDGESDK_MAX_PIXELS, else DEFAULT_MAX_PIXELS."""
    if _override is not None:
        return _override
    text = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not text:
        return DEFAULT_MAX_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{MAX_PIXELS_ENV}={os.environ[MAX_PIXELS_ENV]!r} is not a positive whole number of "
                          "pixels; set it like EDGESDK_MAX_PIXELS=200000000 or unset it")
    return int(text)


def _png(f: BinaryIO, head: bytes) -> Optional[tuple[int, int]]:
    if head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def _jpeg(f: BinaryIO, head: bytes) -> Optional[tuple[int, int]]:
    f.seek(2)
    for _ in range(10_000):  # segments before the frame header (APPn, DQT, ...); bounded
        if f.read(1) != b"\xff":
            return None
        code = f.read(1)
        while code == b"\xff":  # fill bytes
            code = f.read(1)
        if not code or code[0] in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        if code[0] in (0xD8, 0x01) or 0xD0 <= code[0] <= 0xD7:  # markers without a length
            continue
        seg = f.read(2)
        if len(seg) < 2:
            return None
        if code[0] in _JPEG_SOF:
            frame = f.read(5)
            height, width = struct.unpack(">HH", frame[1:5])
            return width, height
        f.seek(struct.unpack(">H", seg)[0] - 2, os.SEEK_CUR)
    return None


def _bmp(f: BinaryIO, head: bytes) -> Optional[tuple[int, int]]:
    if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", head[18:22])
    width, height = struct.unpack("<ii", head[18:26])
    return abs(width), abs(height)


def _gif(f: BinaryIO, head: bytes) -> Optional[tuple[int, int]]:
    return struct.unpack("<HH", head[6:10])


def _webp(f: BinaryIO, head: bytes) -> Optional[tuple[int, int]]:
    chunk = head[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        bits = struct.unpack("<I", head[21:25])[0]
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    return None


def _tiff(f: BinaryIO, head: bytes) -> Optional[tuple[int, int]]:
    order = "<" if head[:2] == b"II" else ">"
    f.seek(struct.unpack(order + "I", head[4:8])[0])
    count_raw = f.read(2)
    if len(count_raw) < 2:
        return None
    size: dict[int, int] = {}
    for _ in range(min(struct.unpack(order + "H", count_raw)[0], 4096)):
        entry = f.read(12)
        if len(entry) < 12:
            return None
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            short = kind == 3
            size[tag] = struct.unpack(order + ("H" if short else "I"), entry[8:10] if short else entry[8:12])[0]
    return (size[256], size[257]) if len(size) == 2 else None


def _pnm(f: BinaryIO, head: bytes) -> Optional[tuple[int, int]]:
    tokens: list[int] = []
    for line in head[2:].split(b"\n"):
        for tok in line.split(b"#", 1)[0].split():
            if not tok.isdigit():
                return None
            tokens.append(int(tok))
            if len(tokens) == 2:
                return tokens[0], tokens[1]
    return None


def _reader(head: bytes):
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png
    if head.startswith(b"\xff\xd8"):
        return _jpeg
    if head.startswith(b"BM"):
        return _bmp
    if head.startswith((b"GIF87a", b"GIF89a")):
        return _gif
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _webp
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff
    if head[:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
        return _pnm
    return None


def image_size(f: BinaryIO) -> Optional[tuple[int, int]]:
    """(width, height) from an image file's header, or None when the format or header is unknown."""
    f.seek(0)
    head = f.read(512)
    parse = _reader(head)
    if parse is None:
        return None
    try:
        return parse(f, head)
    except (struct.error, OSError, ValueError, KeyError):
        return None


def check_pixels(size: Optional[tuple[int, int]], what: str, limit: Optional[int] = None) -> None:
    """SourceError unless `size` is known and within the cap."""
    limit = max_pixels() if limit is None else limit
    if size is None:
        raise SourceError(f"cannot decode {what}: its width and height cannot be read from its header (a format "
                          f"other than {FORMATS}, or not an image at all), so its size cannot be bounded before "
                          "decoding. Convert it to PNG or JPEG")
    width, height = size
    if width * height > limit:
        raise SourceError(f"{what} is {width}x{height} = {width * height} pixels, over the cap of {limit} "
                          f"(decoding would take about {width * height * 3 >> 20} MiB); refusing to decode it. "
                          f"Raise the cap with --max-pixels or {MAX_PIXELS_ENV}=N if the image is genuine")


def read_image(path: Union[str, Path], limit: Optional[int] = None) -> np.ndarray:
    """Read an image file as OpenCV does (HxWx3 uint8 BGR), its pixel count checked before decoding."""
    path = Path(path)
    what = f"image {str(path)!r}"
    if not path.is_file():
        raise SourceError(f"{what} does not exist or is not a file")
    try:
        with open(path, "rb") as f:
            check_pixels(image_size(f), what, limit)
            data = np.frombuffer(f.read() if f.seek(0) == 0 else b"", dtype=np.uint8)
    except PermissionError as exc:
        raise SourceError(f"{what} is not readable (check its permissions)") from exc
    except OSError as exc:
        raise SourceError(f"{what} cannot be read: {exc.strerror or exc}") from exc
    # imdecode from bytes: cv2.imread cannot open non-ASCII paths on some platforms
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise SourceError(f"cannot decode {str(path)!r} as an image (expected {FORMATS})")
    return img
