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
