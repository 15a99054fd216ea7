"""Compare `edgesdk run` JSONL results of two machines frame by frame (x86 vs emulated arm64).

A frame matches when every detection pairs with one of the same class on the other machine
whose box corners differ by at most `box_tol` pixels and whose score differs by at most
`score_tol`. Pairing is greedy, so the order the decoders list boxes in does not matter.

Unpaired detections scoring below `borderline` are counted apart, not as mismatches: a
detection at the edge of the decoder's thresholds (PP-OCR det's tiny boxes on photos without
text) appears on one machine and not the other when the decoded video frames differ by a grey
level (each machine's own ffmpeg/SIMD) even though the models agree to 1e-7 on the same
tensor (the health check). `borderline=0` makes every unpaired detection a mismatch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional


def read_results(path: Path) -> dict[int, list[dict]]:
    """frame_index -> detections of one JSONL sink file."""
    frames: dict[int, list[dict]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            frames[int(d["frame_index"])] = d.get("detections", [])
    return frames


def _corner_diff(a: dict, b: dict) -> float:
    return max(abs(float(x) - float(y)) for x, y in zip(a["box"], b["box"]))


def pair_frame(want: list[dict], got: list[dict]) -> tuple[list[tuple[dict, dict]], list[dict]]:
    """Greedy pairs of same-class detections (closest boxes first) and the detections left over."""
    left = list(got)
    pairs, lone = [], []
    for w in sorted(want, key=lambda d: -d["score"]):
        same = [g for g in left if g.get("class_id") == w.get("class_id")]
        if not same:
            lone.append(w)
            continue
        best = min(same, key=lambda g: _corner_diff(w, g))
        left.remove(best)
        pairs.append((w, best))
    return pairs, lone + left


def compare_runs(x86: Path, arm: Path, box_tol: float, score_tol: float, borderline: float = 0.0) -> dict[str, Any]:
    a, b = read_results(x86), read_results(arm)
    worst_box = worst_score = 0.0
    bad: list[str] = []
    marginal: list[str] = []
    detections = 0
    for idx in sorted(set(a) | set(b)):
        if idx not in a or idx not in b:
            bad.append(f"frame {idx}: only in {'x86' if idx in a else 'arm64'} results")
            continue
        pairs, lone = pair_frame(a[idx], b[idx])
        detections += len(a[idx])
        weak = [d for d in lone if d["score"] < borderline]
        if len(weak) < len(lone):
            bad.append(f"frame {idx}: {len(a[idx])} detections on x86, {len(b[idx])} on arm64")
        elif weak:
            scores = ", ".join(f"{d['score']:.2f}" for d in weak)
            marginal.append(f"frame {idx}: {len(a[idx])} vs {len(b[idx])} (unpaired scores {scores})")
        for w, g in pairs:
            box, score = _corner_diff(w, g), abs(w["score"] - g["score"])
            worst_box, worst_score = max(worst_box, box), max(worst_score, score)
            if box > box_tol or score > score_tol:
                bad.append(f"frame {idx}: box differs by {box:.2f} px, score by {score:.4f}")
    return {"frames": len(a), "frames_arm64": len(b), "detections_x86": detections,
            "worst_box_px": round(worst_box, 3), "worst_score": round(worst_score, 5),
            "mismatches": bad[:20], "mismatch_count": len(bad), "borderline": marginal[:20],
            "ok": not bad and len(a) > 0}


def _json_file(path: Path) -> Optional[Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def device_steps(out: Path, log: str) -> dict[str, Any]:
    """What the guest's detect / install / health steps answered."""
    steps: dict[str, Any] = {}
    for name in ("rpi4", "rpi5"):
        d = _json_file(out / f"detect_{name}.json") or {}
        best = d.get("best") or d.get("profile") or {}
        steps[f"detect_{name}"] = best.get("name") if isinstance(best, dict) else best
    steps["install_health"] = _health_of(_json_file(out / "status.json") or {})
    steps["install_health_fp32"] = _health_of(_json_file(out / "status_fp32.json") or {})
    x86_log = (out / "install_x86_profile.log").read_text() if (out / "install_x86_profile.log").is_file() else ""
    steps["foreign_profile_warning"] = next((ln.strip() for ln in x86_log.splitlines() if "x86_64" in ln
                                             and "profile" in ln), None)
    steps["versions"] = next((ln.split("versions:", 1)[1].strip() for ln in log.splitlines()
                              if ln.startswith("versions:")), None)
    steps["machine"] = next((ln[3:].strip() for ln in log.splitlines() if ln.startswith("== machine:")), None)
    return steps


def _health_of(status: dict) -> Optional[str]:
    current = status.get("current") or {}
    health = current.get("health") if isinstance(current, dict) else None
    if isinstance(health, dict):
        return ("passed: " if health.get("ok") else "FAILED: ") + str(health.get("reason"))
    return None


def frame_difference(x86_video: Path, arm_frames: Path) -> Optional[dict[str, float]]:
    """How far the two machines' decodes of the same video are apart (grey levels)."""
    import cv2
    import numpy as np

    if not Path(arm_frames).is_file():
        return None
    cap, frames = cv2.VideoCapture(str(x86_video)), []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    a, b = np.stack(frames).astype(np.int16), np.load(arm_frames).astype(np.int16)
    if a.shape != b.shape:
        return {"shape_x86": list(a.shape), "shape_arm64": list(b.shape)}
    d = np.abs(a - b)
    return {"max": int(d.max()), "mean": round(float(d.mean()), 3), "pixels_differing": round(float((d > 0).mean()), 3)}


def report(x86: dict[str, Path], arm: dict[str, Path], log: str, box_tol: float, score_tol: dict[str, float],
           borderline: float = 0.0) -> dict[str, Any]:
    """`score_tol`: per bundle name (key "*" for the rest)."""
    runs = {name: compare_runs(x86[name], arm[name], box_tol, score_tol.get(name, score_tol["*"]), borderline)
            if arm[name].is_file()
            else {"ok": False, "mismatches": [f"no arm64 results at {arm[name]}"], "mismatch_count": 1}
            for name in x86}
    out = next(iter(arm.values())).parent
    steps = device_steps(out, log)
    ok = all(r["ok"] for r in runs.values()) and all(
        str(steps.get(k)).startswith("passed") for k in ("install_health", "install_health_fp32"))
    return {"ok": ok, "tolerance": {"box_px": box_tol, "score": score_tol, "borderline_score": borderline},
            "decoded_frames_differ": frame_difference(x86[next(iter(x86))].parent / "video.mp4",
                                                      out / "frames.arm64.npy"),
            "runs": runs, "device": steps,
            "note": "arm64 ran under qemu-user emulation on an x86 CPU: no timing from it is a device number"}


def markdown(rep: dict[str, Any]) -> str:
    lines = ["# arm64 device path (emulated) vs x86", "",
             f"Tolerance: box corners <= {rep['tolerance']['box_px']} px, scores <= {rep['tolerance']['score']} "
             f"(by bundle); "
             f"unpaired detections scoring < {rep['tolerance']['borderline_score']} are listed as borderline. "
             + rep["note"] + ".", "",
             "| bundle | frames | detections (x86) | worst box diff px | worst score diff | result |",
             "|---|---|---|---|---|---|"]
    for name, r in rep["runs"].items():
        lines.append(f"| {name} | {r.get('frames', '-')} | {r.get('detections_x86', '-')} | "
                     f"{r.get('worst_box_px', '-')} | {r.get('worst_score', '-')} | "
                     f"{'same' if r['ok'] else 'DIFFERENT: ' + '; '.join(r['mismatches'][:3])}"
                     f"{' (borderline: ' + '; '.join(r['borderline'][:3]) + ')' if r.get('borderline') else ''} |")
    lines += ["", f"Decoded video frames, arm64 vs x86 (grey levels): {rep['decoded_frames_differ']}"]
    lines += [""] + [f"- {k}: {v}" for k, v in rep["device"].items()]
    lines.append(f"\nOverall: {'PASS' if rep['ok'] else 'FAIL'}")
    return "\n".join(lines)
