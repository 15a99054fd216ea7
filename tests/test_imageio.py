"""The pixel cap: image dimensions read from the header before decoding, in one image-reading home."""
from __future__ import annotations

import os
import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from edgesdk.errors import ConfigError, ConversionError, SourceError
from edgesdk.imageio import MAX_PIXELS_ENV, image_size, max_pixels, read_image, set_max_pixels
from provisiondata import art, edgesdk  # noqa: F401 (art: fixture)


def huge_png(path, width=30000, height=30000):
    """A real, valid grayscale PNG of width x height (zeros compress to ~1 MB)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.fixture(autouse=True)
def _default_cap(monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    set_max_pixels(None)
    yield
    set_max_pixels(None)


@pytest.mark.parametrize("ext", ["png", "jpg", "bmp", "webp", "tif", "ppm", "pgm"])
@pytest.mark.parametrize("photo", ["astronaut", "coffee", "page"])
def test_header_size_matches_the_decoded_photo(photos, tmp_path, ext, photo):
    img = photos[photo]
    path = tmp_path / f"{photo}.{ext}"
    assert cv2.imwrite(str(path), img if ext != "pgm" else img[..., 0])
    with open(path, "rb") as f:
        assert image_size(f) == (img.shape[1], img.shape[0])
    assert read_image(path).shape[:2] == img.shape[:2]


def test_a_30000_square_png_is_refused_before_decoding(tmp_path):
    big = huge_png(tmp_path / "big.png")
    assert big.stat().st_size < 4 << 20
    t0 = time.perf_counter()
    with pytest.raises(SourceError, match=r"30000x30000 = 900000000 pixels, over the cap of 100000000"):
        read_image(big)
    assert time.perf_counter() - t0 < 2.0  # decoding would take seconds and ~1-5 GB


def test_predict_refuses_it_and_the_cap_can_be_raised_or_lowered(art, photos, tmp_path):
    big = huge_png(tmp_path / "big.png", 12000, 10000)
    r = edgesdk("predict", art.bundle, big)
    assert r.returncode == SourceError.exit_code and "over the cap" in r.stderr and "--max-pixels" in r.stderr
    assert "Traceback" not in r.stderr
    small = tmp_path / "page.png"
    cv2.imwrite(str(small), photos["page"])
    r = edgesdk("predict", art.bundle, small, "--max-pixels", "1000")
    assert r.returncode == SourceError.exit_code and "over the cap of 1000" in r.stderr
    assert edgesdk("predict", art.bundle, small).returncode == 0


def test_forged_jpeg_dimensions_are_refused(photos, tmp_path):
    ok, data = cv2.imencode(".jpg", photos["coffee"])
    data = bytearray(data.tobytes())
    for i in range(2, len(data) - 9):
        if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2):
            data[i + 5:i + 9] = struct.pack(">HH", 65000, 65000)
            break
    forged = tmp_path / "forged.jpg"
    forged.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="65000x65000"):
        read_image(forged)


def test_environment_variable_and_its_errors(monkeypatch, photos, tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), photos["astronaut"])
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(SourceError, match="over the cap of 1000"):
        read_image(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ConfigError, match="EDGESDK_MAX_PIXELS"):
        max_pixels()
    with pytest.raises(ConfigError, match="positive whole number"):
        set_max_pixels(0)


def test_unknown_formats_are_not_decoded(tmp_path):
    odd = tmp_path / "x.exr"
    odd.write_bytes(b"v/1\x01" + os.urandom(100))
    with pytest.raises(SourceError, match="cannot decode .*its width and height cannot be read"):
        read_image(odd)


def test_folder_sources_skip_and_calibration_refuses_an_oversized_image(photos, tmp_path, caplog):
    from edgesdk.calibration import load_calibration
    from edgesdk.preprocess import PreprocessSpec
    from edgesdk.streaming.sources.images import ImageFolderSource
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), photos["coffee"])
    huge_png(folder / "b.png", 20000, 20000)
    with pytest.raises(ConversionError, match="b.png .* cannot be read: .*over the cap"):
        load_calibration(folder, PreprocessSpec(size=(64, 64)))
    src = ImageFolderSource(str(folder), "cam")
    src.open()
    frames = []
    while (img := src.read()) is not None:
        frames.append(img)
    assert len(frames) == 1 and "over the cap" in caplog.text
