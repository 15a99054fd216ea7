"""Change-gated inference: frames that barely changed reuse the last result (marked
cached), counted per source; checked on a real video with static stretches (photos held
for a second with camera-like zoom/shift jitter) through two real models."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgesdk.errors import ConfigError
from edgesdk.results import Frame
from edgesdk.streaming import Pipeline, run
from edgesdk.streaming.gate import ChangeGate, make_gate
from edgesdk.streaming.sources import ProducerSource
from streamdata import make_video
from streamfakes import FakeModel

STATIC = (("astronaut", 15), ("coffee", 15), ("page", 15), ("camera", 15), ("rocket", 15), ("horse", 15),
          ("page", 15))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = np.maximum(a[:2], b[:2])
    x2, y2 = np.minimum(a[2:], b[2:])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _same(r1, r2) -> bool:
    """Same number of boxes, each matched to a distinct one with IoU >= 0.5."""
    if len(r1.boxes) != len(r2.boxes):
        return False
    used: set[int] = set()
    for b in r1.boxes:
        score, j = max(((_iou(b, c), j) for j, c in enumerate(r2.boxes) if j not in used), default=(0.0, -1))
        if score < 0.5:
            return False
        used.add(j)
    return True


@pytest.fixture(scope="module")
def static_video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("gate") / "static.mp4", STATIC, fps=15.0)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, model_paths):
    from edgesdk.presets import make_bundle
    d = tmp_path_factory.mktemp("gate_bundles")
    return {"blazeface": make_bundle(model_paths["blazeface_short.tflite"], d / "bf").path,
            "ppocr_det": make_bundle(model_paths["ppocrv4_det.onnx"], d / "det", limit_side_len=320,
                                     limit_type="max").path}


@pytest.mark.parametrize("model", ["blazeface", "ppocr_det"])
def test_gate_skips_half_the_static_frames_and_keeps_98pct_of_results(bundles, static_video, model, tmp_path):
    results: dict[str, dict[int, object]] = {"off": {}, "on": {}}
    run(str(bundles[model]), [str(static_video.path)], on_result=lambda f, r: results["off"].__setitem__(f.index, r))
    out = tmp_path / "gated.jsonl"
    report = run(str(bundles[model]), [f"clip={static_video.path}"], [str(out)], gate="change",
                 on_result=lambda f, r: results["on"].__setitem__(f.index, r))
    off, on = results["off"], results["on"]
    assert sorted(on) == sorted(off) == list(range(len(static_video)))
    assert sum(len(r.boxes) for r in off.values()) > 20  # the models do find things here
    cached = sum(bool(r.meta.get("cached")) for r in on.values())
    assert cached / len(on) >= 0.5
    assert sum(_same(off[i], on[i]) for i in off) / len(off) >= 0.98
    assert report.stats["sources"]["clip"]["cached"] == cached == report.stats["cached"]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(bool(d.get("meta", {}).get("cached")) for d in lines) == cached  # marked in the sink's output too


def test_max_age_forces_a_fresh_inference():
    frames = [np.full((16, 16, 3), 100, np.uint8)] * 30
    model = FakeModel(a_ms=0.1, c_ms=0.1)
    src = ProducerSource(frames, "still", live=True, fps=100)
    report = run(model, [src], realtime=True, gate="change", gate_threshold=0.5, gate_max_age_s=0.05)
    fresh = report.stats["frames_out"] - report.stats["cached"]
    assert report.stats["cached"] > 0 and fresh >= 4  # ~0.3 s of frames, a fresh one at least every 0.05 s


def test_gate_decides_per_source_and_on_change():
    gate = ChangeGate(0.05, 10.0)
    a = np.zeros((32, 32, 3), np.uint8)
    b = np.full((32, 32, 3), 200, np.uint8)
    f = lambda sid, i, img: Frame(sid, i, float(i), img)  # noqa: E731
    assert gate.decide(f("x", 0, a)) and not gate.decide(f("x", 1, a))
    assert gate.decide(f("y", 0, a))  # another source has its own reference
    assert gate.decide(f("x", 2, b))  # a real change


@pytest.mark.parametrize("kw, match", [
    ({"gate": "change", "gate_threshold": -0.1}, "within \\[0, 1\\]"),
    ({"gate": "change", "gate_threshold": 1.5}, "within \\[0, 1\\]"),
    ({"gate": "change", "gate_threshold": math.nan}, "within \\[0, 1\\]"),
    ({"gate": "change", "gate_max_age_s": 0}, "gate-max-age-s"),
    ({"gate": "change", "gate_max_age_s": math.inf}, "gate-max-age-s"),
    ({"gate_threshold": 0.1}, "need --gate change"),
    ({"gate": "motion"}, "--gate must be one of"),
])
def test_bad_gate_settings_are_refused(kw, match):
    with pytest.raises(ConfigError, match=match):
        Pipeline(FakeModel(), ["x"], **kw)
    with pytest.raises(ConfigError, match=match):
        make_gate(kw.get("gate"), kw.get("gate_threshold"), kw.get("gate_max_age_s"))
