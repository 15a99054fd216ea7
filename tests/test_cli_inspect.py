"""`edgesdk info`, `edgesdk predict`, `edgesdk bench` through the real entry point (exit codes,
messages) on real models and photos."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgesdk.cli import main
from edgesdk.presets import make_bundle


def run(capsys, *args):
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def images(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("images")
    paths = {}
    for name in ("astronaut", "coffee", "page"):
        paths[name] = d / f"{name}.jpg"
        cv2.imwrite(str(paths[name]), photos[name])
    line = photos["page"][10:36, 0:110]  # the title line "Region-based"
    paths["line"], paths["line180"] = d / "line.png", d / "line180.png"
    cv2.imwrite(str(paths["line"]), line)
    cv2.imwrite(str(paths["line180"]), cv2.rotate(line, cv2.ROTATE_180))
    paths["bad"] = d / "bad.jpg"
    paths["bad"].write_text("this is not an image")
    return paths


# ------------------------------------------------------------------ info
def test_info_bare_onnx_model(capsys, cls_model):
    code, out, _ = run(capsys, "info", cls_model)
    assert code == 0
    assert "preset    ppocr_cls" in out and "opset ai.onnx 11" in out and "producer PaddlePaddle" in out
    assert "onnxruntime (CPU" in out and "x: float32[?x3x?x?] NCHW" in out
    assert "preprocess 48x192 fit_height, BGR" in out and "labels    0, 180" in out


def test_info_bare_tflite_model_json(capsys, blazeface_model):
    code, out, _ = run(capsys, "info", blazeface_model, "--json")
    assert code == 0
    d = json.loads(out)
    assert d["preset"] == "blazeface_short" and list(d["backends"]) == ["litert"]
    assert d["backends"]["litert"]["inputs"][0]["shape"] == [1, 128, 128, 3]


def test_info_bundle_and_its_broken_states(capsys, cls_model, tmp_path):
    b = make_bundle(cls_model, tmp_path / "cls")
    code, out, _ = run(capsys, "info", b.path)
    assert code == 0 and "ok" in out and "ppocr_cls.onnx" in out and "task classification" in out
    model = b.path / "ppocr_cls.onnx"
    model.write_bytes(model.read_bytes() + b"x")
    code, out, err = run(capsys, "info", b.path)
    assert code == 7 and "MODIFIED (sha256 mismatch)" in out and "fails verification" in err
    model.unlink()
    code, out, err = run(capsys, "info", b.path)
    assert code == 7 and "missing" in out
    code, _, err = run(capsys, "info", tmp_path / "nothing")
    assert code == 7 and "does not exist" in err
    (tmp_path / "notabundle").mkdir()
    code, _, err = run(capsys, "info", tmp_path / "notabundle")
    assert code == 7 and "has no manifest.json" in err


# ------------------------------------------------------------------ predict
def test_predict_faces(capsys, blazeface_model, images):
    code, out, err = run(capsys, "predict", blazeface_model, images["astronaut"], images["coffee"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{images['astronaut']}: 1 face ")
    x1, y1, x2, y2 = (float(v) for v in lines[1].split("[")[1].rstrip("]").split(","))
    assert 160 < x1 < 200 and 250 < x2 < 290 and 60 < y1 < 100 and 155 < y2 < 195
    assert lines[2].startswith(f"{images['coffee']}: 0 faces")
    assert "litert" in err and "precision fp32" in err


def test_predict_text_direction(capsys, cls_model, images):
    code, out, _ = run(capsys, "predict", cls_model, images["line"], images["line180"], "--top-k", "1")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split()[0] == "0" and lines[3].split()[0] == "180" and len(lines) == 4


def test_predict_json_and_text_detection(capsys, det_model, images, tmp_path):
    bundle = make_bundle(det_model, tmp_path / "det", limit_side_len=480)
    code, out, _ = run(capsys, "predict", bundle.path, images["page"], "--json", "--threads", "2")
    assert code == 0
    (d,) = [json.loads(line) for line in out.splitlines()]
    assert d["image"] == str(images["page"]) and len(d["detections"]) >= 3
    assert all(len(det["polygon"]) == 4 and det["label"] == "text" for det in d["detections"])


def test_predict_unknown_model_prints_raw_summaries(capsys, tiny_models, images):
    code, out, err = run(capsys, "predict", tiny_models.conv_net(), images["coffee"])
    assert code == 0 and "logits: float32[10] min" in out


@pytest.mark.parametrize("case, code, needle", [
    ("missing_image", 9, "does not exist"),
    ("bad_image", 9, "cannot decode"),
    ("unknown_backend", 4, "unknown backend 'tensorflow'; choose one of onnxruntime"),
    ("wrong_backend", 3, "the litert backend cannot run .onnx files"),
    ("missing_model", 7, "does not exist (expected a model file or a bundle directory)"),
    ("no_images", 2, "Missing argument"),
    ("bad_top_k", 2, "--top-k"),
])
def test_predict_bad_inputs(capsys, cls_model, images, tmp_path, case, code, needle):
    args = {
        "missing_image": [cls_model, tmp_path / "nope.png"],
        "bad_image": [cls_model, images["bad"]],
        "unknown_backend": [cls_model, images["line"], "--backend", "tensorflow"],
        "wrong_backend": [cls_model, images["line"], "--backend", "litert"],
        "missing_model": [tmp_path / "none.onnx", images["line"]],
        "no_images": [cls_model],
        "bad_top_k": [cls_model, images["line"], "--top-k", "0"],
    }[case]
    got, out, err = run(capsys, "predict", *args)
    assert got == code and needle in err and "Traceback" not in err
    assert out == ""
