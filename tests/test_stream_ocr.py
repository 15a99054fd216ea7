"""OCR cascade on a real stream: PP-OCRv4 detector -> direction classifier -> recognizer, on real
photos (skimage) with words drawn by cv2.putText. A drawn word counts as read when some box's text,
split on whitespace, contains it exactly (case-sensitive)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
MODELS = ROOT / ".cache" / "models"


@pytest.mark.skipif(not (MODELS / "ppocrv4_rec.onnx").exists(), reason="PP-OCR models not fetched")
def test_ocr_cascade_reads_drawn_words(tmp_path):
    from samplevideo import make_text_video
    from edgesdk.presets import make_bundle

    info, truth = make_text_video(tmp_path / "v.mp4")
    make_bundle(MODELS / "ppocrv4_det.onnx", tmp_path / "det", limit_side_len=480, limit_type="max")
    make_bundle(MODELS / "ppocr_cls.onnx", tmp_path / "cls")
    make_bundle(MODELS / "ppocrv4_rec.onnx", tmp_path / "rec")
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "edgesdk", "run", str(tmp_path / "det"), "--then", str(tmp_path / "cls"),
           "--then", str(tmp_path / "rec"), "--source", str(info.path), "--sink", str(out)]
    subprocess.run(cmd, check=True, env=env, timeout=300, capture_output=True)
    read = total = 0
    for line in out.read_text().splitlines():
        d = json.loads(line)
        texts = {w for x in d["detections"] for w in ((x["then"].get("ppocrv4_rec") or {}).get("meta", {}).get("text", "")).split()}
        total += len(truth[d["frame_index"]])
        read += sum(w in texts for w in truth[d["frame_index"]])
    assert total == sum(map(len, truth))
    print(f"OCR words read exactly: {read}/{total} = {read / total:.0%}")
    assert read / total >= 0.8


def _words_read(results, truth) -> tuple[int, int]:
    read = total = 0
    for r in results:
        texts = {w for x in r.then.get("ppocrv4_rec", []) if x is not None for w in x.meta.get("text", "").split()}
        words = truth[r.frame_index]
        total += len(words)
        read += sum(w in texts for w in words)
    return read, total


@pytest.mark.skipif(not (MODELS / "ppocrv4_rec.onnx").exists(), reason="PP-OCR models not fetched")
def test_upside_down_lines_are_turned_by_the_direction_classifier(tmp_path):
    """Real photos with words drawn, the whole frame turned 180 degrees: the detector still finds
    the lines, the direction classifier says 180, and the recognizer reads the turned crops. Without
    the classifier the same recognizer reads (almost) nothing: the turn is what makes them readable."""
    import cv2
    from samplevideo import OCR_PHOTOS, OCR_WORDS, draw_words, frame_of
    from edgesdk.presets import make_bundle
    from edgesdk.streaming import run
    from edgesdk.streaming.sources import ProducerSource

    imgs, truth = [], []
    for i in range(6):
        words = [OCR_WORDS[(i * 3 + j) % len(OCR_WORDS)] for j in range(3)]
        img = cv2.resize(frame_of(OCR_PHOTOS[i % len(OCR_PHOTOS)], i, (360, 360)), (480, 360))
        imgs.append(cv2.rotate(draw_words(img, words), cv2.ROTATE_180))
        truth.append([w for w, _ in words])
    det = make_bundle(MODELS / "ppocrv4_det.onnx", tmp_path / "det", limit_side_len=480, limit_type="max").path
    cls = make_bundle(MODELS / "ppocr_cls.onnx", tmp_path / "cls").path
    rec = make_bundle(MODELS / "ppocrv4_rec.onnx", tmp_path / "rec").path
    got: dict = {}
    for label, then in (("with cls", [cls, rec]), ("without", [rec])):
        out: list = []
        run(str(det), [ProducerSource(list(imgs), "flipped")], then=[str(b) for b in then],
            on_result=lambda f, r, o=out: o.append(r))
        got[label] = _words_read(out, truth)
    (read, total), (read_raw, _) = got["with cls"], got["without"]
    print(f"upside-down words read: {read}/{total} with the classifier, {read_raw}/{total} without")
    assert total == 18
    assert read / total >= 0.7
    assert read_raw <= read / 2
