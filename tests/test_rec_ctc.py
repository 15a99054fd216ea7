"""PP-OCRv4 recognizer preset: CTC decoding with the dictionary from its ONNX metadata, at the
width each real text line needs; CTC and segmentation decoder errors."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from edgesdk.decoders import make_decoder
from edgesdk.errors import ConfigError
from edgesdk.preprocess import Transform


def _page_lines(page: np.ndarray) -> list[np.ndarray]:
    from textcrops import _bands

    gray = cv2.cvtColor(page, cv2.COLOR_BGR2GRAY)
    ink = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 25, 15)
    lines = []
    for y0, y1 in _bands(ink.sum(1) > 255 * 3, 8):
        cols = np.where(ink[y0:y1].sum(0) > 0)[0]
        if len(cols) >= 20:
            lines.append(page[max(0, y0 - 3):y1 + 3, max(0, cols[0] - 3):cols[-1] + 3])
    return lines


def test_recognizer_reads_real_text_lines_at_their_own_width(model_paths, photos):
    from edgesdk.predictor import Predictor
    from edgesdk.preprocess import Preprocessor

    lines = _page_lines(photos["page"])[:3]
    with Predictor(model_paths["ppocrv4_rec.onnx"]) as p:
        assert p.manifest.task == "text_recognition" and len(p.manifest.labels) == 6623  # from metadata
        widths = [p.preprocessor.target_size(*line.shape[:2])[1] for line in lines]
        assert min(widths) > 320  # wide lines are not squeezed into 320
        texts = [r.meta["text"] for r in p.predict(lines)]
        assert texts[0] == "Region-based segmentation"
        assert texts[1].startswith("Let us first determine markers of the coins")
        # the same lines forced to the fixed width 320 lose characters
        p.preprocessor = Preprocessor(dataclasses.replace(p.manifest.preprocess, dynamic_width=False))
        fixed = [r.meta["text"] for r in p.predict(lines)]
    assert fixed[1] != texts[1]


def test_ctc_merges_repeats_and_drops_blanks():
    dec = make_decoder(decoder={"type": "ctc"}, labels=["a", "b"])  # classes: blank, a, b, space
    steps = [1, 1, 0, 1, 2, 3, 2, 0]
    probs = np.eye(4, dtype=np.float32)[steps][None]
    r = dec({"y": probs}, [Transform()])[0]
    assert r.meta["text"] == "aab b" and r.meta["score"] == pytest.approx(1.0)


def test_ctc_with_a_wrong_dictionary_says_so():
    with pytest.raises(ConfigError, match="dictionary"):
        make_decoder(decoder={"type": "ctc"}, labels=[])
    dec = make_decoder(decoder={"type": "ctc"}, labels=["a", "b", "c"])
    with pytest.raises(ConfigError, match="wrong dictionary"):
        dec({"y": np.zeros((1, 5, 4), np.float32)}, [Transform()])


def test_segmentation_mask_maps_back_through_a_letterbox():
    dec = make_decoder(decoder={"type": "segmentation"}, labels=["bg", "person"], task="segmentation")
    scores = np.zeros((1, 2, 64, 64), np.float32)
    scores[0, 0] = 1.0
    scores[0, 1, 16:48, 32:] = 2.0  # right half of the image band is "person"
    # a 200x100 (w x h) image letterboxed into 64x64: ratio 0.32, 16 px bands top and bottom
    t = Transform(ratio=(0.32, 0.32), pad=(16.0, 0.0), input_size=(64, 64), original_size=(100, 200))
    mask = dec({"y": scores}, [t])[0].meta["mask"]
    assert mask.shape == (100, 200)
    assert mask[:, :95].max() == 0 and mask[:, 105:].min() == 1
    r = dec({"y": scores}, [t])[0]
    assert r.meta["class_share"]["person"] == pytest.approx(0.5, abs=0.02)


def test_converted_recognizer_at_a_static_width_reads_real_lines(model_paths, photos, tmp_path, capsys):
    """convert with a static width: the dictionary comes from the metadata, the width is fixed (padded)."""
    from clitools import cli

    lines = _page_lines(photos["page"])[:2]
    calib = tmp_path / "lines"
    calib.mkdir()
    for i, line in enumerate(_page_lines(photos["page"])):
        cv2.imwrite(str(calib / f"l{i}.png"), line)
    out = tmp_path / "rec.bundle"
    code, _, err = cli(["convert", str(model_paths["ppocrv4_rec.onnx"]), "-p", "amd-epyc-zen4", "--precision", "fp32",
                        "--backend", "openvino", "--input-shape", "1,3,48,960", "--calib", str(calib), "-o", str(out),
                        "-q"], capsys)
    assert code == 0, err
    from edgesdk.predictor import Predictor

    with Predictor(out) as p:
        assert p.manifest.preprocess.dynamic_width is False and p.manifest.preprocess.size == (48, 960)
        texts = [r.meta["text"] for r in p.predict(lines)]
    assert texts[0] == "Region-based segmentation"
    assert texts[1].startswith("Let us first determine markers of the coins")
