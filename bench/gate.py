"""Change gate: skipped frames and kept results per video x detector, against the target of
issue #13 (>= 50 % of frames skipped while >= 98 % of per-frame results match the ungated run:
same count, boxes IoU >= 0.5).

    PYTHONPATH=$PWD .venv/bin/python bench/gate.py [--threshold X] [--frames N] [--only walk,corner]

Videos: the original test video (photos held for a second with zoom/shift jitter), the same
jitter on a crisp black-and-white mask (silhouette: skimage's horse, the case the gate reads as
change in every frame), and the
generated scenes of tests/streamdata.py (walk, enter_leave, shake, light, corner), with a face
crop (larger for BlazeFace short-range, which finds no small faces) or a sign with words for the
text detector. Each pair runs
through `edgesdk.streaming.run` twice, ungated and gated. A mismatch is `flicker` when the frame
shows the same geometry as the frame whose result was re-emitted (only light, sensor and codec
noise differ): the detector's own instability, which no gate that skips can follow; the rest are
changes the gate missed. Both are counted, neither is hidden: PASS/FAIL uses all mismatches.
`near-thr` counts the mismatches that are only in boxes scoring within NEAR (0.1) of the decoder's
score threshold (of all mismatches, flicker or missed). `unstable` counts, in the ungated run alone, frames whose result differs from that of the last
earlier frame of equal geometry (the previous frame in a still stretch; on the static video, whose
zoom/shift jitter repeats every 6 frames, the same jitter step a cycle before): how much the
detector flickers by itself, gate or not.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "tests")]

import fetch_models  # noqa: E402
from streamdata import (SCENES, SILHOUETTE_PATTERN, STATIC_PATTERN, make_scene_video, make_video,  # noqa: E402
                        same_result, static_states)

from edgesdk.presets import make_bundle  # noqa: E402
from edgesdk.streaming import run  # noqa: E402

SKIP_TARGET, MATCH_TARGET = 0.50, 0.98
#: detector -> (model file, bundle options, scene object kind)
DETECTORS = {"yolov8n": ("nudenet_320n.onnx", {}, "face"), "blazeface": ("blazeface_short.tflite", {}, "closeup"),
             "ppocr_det": ("ppocrv4_det.onnx", {"limit_side_len": 320, "limit_type": "max"}, "text")}


def _videos(folder: Path, frames: int, only: set) -> dict:
    """(name, kind) -> (path, per-frame states); kind None: the static video, every detector."""
    out = {}
    if not only or "static" in only:
        v = make_video(folder / "static.mp4", STATIC_PATTERN, fps=15.0)
        out[("static", None)] = (v.path, static_states())
    if not only or "silhouette" in only:
        v = make_video(folder / "silhouette.mp4", SILHOUETTE_PATTERN, fps=15.0)
        out[("silhouette", None)] = (v.path, static_states(SILHOUETTE_PATTERN))
    for name in SCENES:
        if only and name not in only:
            continue
        for kind in sorted({kind for _, _, kind in DETECTORS.values()}):
            v = make_scene_video(folder / f"{name}_{kind}.mp4", name, kind, n=frames)
            out[(name, kind)] = (v.path, v.states)
    return out


def _results(bundle: Path, video: Path, **gate) -> dict:
    got: dict = {}
    run(str(bundle), [f"clip={video}"], on_result=lambda f, r: got.__setitem__(f.index, r), **gate)
    return got


#: a box scoring less than this above the decoder's threshold is "near the threshold"
NEAR = 0.1


def _score_floor(bundle: Path) -> float:
    from edgesdk.bundle import Bundle
    decoder = Bundle.load(bundle).manifest.decoder or {}
    return float(decoder.get("score_threshold", decoder.get("box_thresh", 0.0))) + NEAR


def _strong(result, floor: float) -> SimpleNamespace:
    return SimpleNamespace(boxes=result.boxes[result.scores >= floor])


def _unstable(off: dict, states: list) -> int:
    """The detector's own instability, gate or not: frames whose result differs from the last earlier
    frame showing the same geometry (only light, sensor and codec noise differ between the two)."""
    last_seen: dict = {}
    count = 0
    for i in sorted(off):
        j = last_seen.get(states[i])
        count += j is not None and not same_result(off[i], off[j])
        last_seen[states[i]] = i
    return count


def measure(bundle: Path, video: Path, states: list, threshold) -> dict:
    off = _results(bundle, video)
    on = _results(bundle, video, gate="change", gate_threshold=threshold)
    if sorted(on) != sorted(off):
        raise RuntimeError(f"{video.name}: gated run gave {len(on)} results, ungated {len(off)}")
    cached_from = {i: on[i].meta["cached_from"] for i in off if on[i].meta.get("cached")}
    return tally(off, on, cached_from, states, _score_floor(bundle))


def tally(off: dict, on: dict, cached_from: dict, states: list, floor: float) -> dict:
    """The row for one case: `off` and `on` the ungated and gated results by frame index,
    `cached_from` frame index -> the frame whose result the gate re-emitted for it
    (tools/gate_replay.py counts with this too)."""
    n = len(off)
    bad = [i for i in off if not same_result(off[i], on[i])]
    flicker = [i for i in bad if i in cached_from and states[i] == states[cached_from[i]]]
    # mismatches only in boxes near the score threshold: a toss-up either way
    near = [i for i in bad if same_result(_strong(off[i], floor), _strong(on[i], floor))]
    unstable = _unstable(off, states)
    return {"frames": n, "skipped": len(cached_from) / n, "match": 1 - len(bad) / n, "mismatches": len(bad),
            "flicker": len(flicker), "unstable": unstable, "near_threshold": len(near),
            "boxes_per_frame": sum(len(r.boxes) for r in off.values()) / n}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threshold", type=float, default=None, help="--gate-threshold (default: the gate's)")
    ap.add_argument("--frames", type=int, default=150, help="frames per generated scene (default 150)")
    ap.add_argument("--only", default="", help="comma-separated videos: static,silhouette," + ",".join(SCENES))
    ap.add_argument("--detectors", default=",".join(DETECTORS))
    args = ap.parse_args(argv)
    models = fetch_models.fetch(quiet=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        videos = _videos(folder, args.frames, set(filter(None, args.only.split(","))))
        pairs = [(v, d) for v in videos for d in args.detectors.split(",") if v[1] in (None, DETECTORS[d][2])]
        bundles = {d: make_bundle(models[DETECTORS[d][0]], folder / f"b_{d}", **DETECTORS[d][1]).path
                   for d in {d for _, d in pairs}}
        start = time.monotonic()
        for k, ((name, kind), det) in enumerate(pairs):
            path, states = videos[(name, kind)]
            row = {"video": name if kind is None else f"{name}/{kind}", "detector": det,
                   **measure(bundles[det], path, states, args.threshold)}
            rows.append(row)
            eta = (time.monotonic() - start) / (k + 1) * (len(pairs) - k - 1)
            print(f"[{k + 1}/{len(pairs)}] {row['video']} x {det} done, ETA {eta:.0f} s", file=sys.stderr, flush=True)
    _table(rows, args.threshold)
    return 0 if all(_ok(r) for r in rows) else 1


def _ok(row: dict) -> bool:
    return row["skipped"] >= SKIP_TARGET and row["match"] >= MATCH_TARGET


def _table(rows: list, threshold) -> None:
    print(f"\nchange gate, threshold {threshold if threshold is not None else 'default'}; target: skipped >= "
          f"{SKIP_TARGET:.0%}, match >= {MATCH_TARGET:.0%}")
    print(f"{'video':19s} {'detector':10s} {'boxes/fr':>8s} {'skipped':>8s} {'match':>7s} {'mismatch':>8s} "
          f"{'flicker':>7s} {'missed':>6s} {'near-thr':>8s} {'unstable':>8s}  verdict")
    for r in rows:
        print(f"{r['video']:19s} {r['detector']:10s} {r['boxes_per_frame']:8.2f} {r['skipped']:8.1%} {r['match']:7.1%} "
              f"{r['mismatches']:8d} {r['flicker']:7d} {r['mismatches'] - r['flicker']:6d} {r['near_threshold']:8d} {r['unstable']:8d}  "
              f"{'PASS' if _ok(r) else 'FAIL'}")
    n_ok = sum(_ok(r) for r in rows)
    print(f"PASS {n_ok}/{len(rows)}; mismatches {sum(r['mismatches'] for r in rows)}, of which detector flicker on "
          f"unchanged frames {sum(r['flicker'] for r in rows)}, only in boxes near the score threshold "
          f"{sum(r['near_threshold'] for r in rows)}")


if __name__ == "__main__":
    sys.exit(main())
