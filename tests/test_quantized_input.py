"""A model that arrives already quantized (the real PP-OCR direction classifier, dynamic-quantized
by onnxruntime) is built as given and said so; quantizing or casting it again is refused."""
from __future__ import annotations

import json

import cv2
import onnx
import pytest

from clitools import cli
from converters.quantized_input import describe, quantized_ops


@pytest.fixture(scope="module")
def quantized_cls(cls_model, tmp_path_factory):
    from onnxruntime.quantization import quantize_dynamic

    d = tmp_path_factory.mktemp("quantized")
    path = d / "cls_dynamic_int8.onnx"
    quantize_dynamic(str(cls_model), str(path))
    return path


@pytest.fixture(scope="module")
def crops(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("crops")
    for name in ("page", "text", "coffee", "camera", "astronaut", "chelsea"):
        cv2.imwrite(str(d / f"{name}.png"), cv2.resize(photos[name], (192, 48)))
    return d


def test_quantization_operators_are_found_and_a_float_model_has_none(cls_model, quantized_cls):
    assert quantized_ops(onnx.load(str(cls_model))) == {}
    found = quantized_ops(onnx.load(str(quantized_cls)))
    assert found.get("ConvInteger", 0) > 0 and "ConvInteger" in describe(found)


def _convert(model, out, crops, *extra):
    return ["convert", str(model), "-p", "amd-epyc-zen4", "--backend", "onnxruntime", "--calib", str(crops),
            "--input-shape", "1,3,48,192", "--assume-preprocess", "-o", str(out), *extra]


def test_asking_int8_of_a_quantized_model_is_refused(quantized_cls, crops, tmp_path, capsys):
    out = tmp_path / "int8.bundle"
    code, _, err = cli(_convert(quantized_cls, out, crops, "--precision", "int8", "-q"), capsys)
    assert code != 0 and "is already quantized" in err and "--precision fp32" in err
    assert not out.exists()


def test_a_quantized_model_is_built_as_given_and_said_so(quantized_cls, crops, tmp_path, capsys):
    out = tmp_path / "asis.bundle"
    code, text, err = cli(_convert(quantized_cls, out, crops), capsys)
    assert code == 0, err
    assert "is already quantized" in text + err and "is already quantized" in (out / "report.md").read_text()
    rows = json.loads((out / "report.json").read_text())["variants"]
    assert {r["precision"] for r in rows} == {"fp32"}  # no INT8 variant re-quantized over it
    assert quantized_ops(onnx.load(str(out / "model.onnx"))).get("ConvInteger", 0) > 0
