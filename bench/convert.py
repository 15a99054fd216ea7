#!/usr/bin/env python3
"""What conversion buys, per model, format and precision: size, latency, fidelity.

Models: the PP-OCR text-direction classifier (1x3x48x192) and the PP-OCRv4 text detector at
640x640. Every variant the converters can build here is built from the same prepared model
with the converter's own code (converters.variants), calibrated on real images and checked on
HELD-OUT real images made from other photographs and other text (tests/convdata.py):
  size ratio    model files / the ONNX fp32 file
  latency ratio p50 / onnxruntime fp32 p50, timed interleaved in rounds in one run (noisy
                machines: compare within one run), batch 1, --threads threads
  cosine        mean over held-out samples of the cosine similarity to the original's output
                (the detector's probability map; the classifier's probabilities), worst sample too
  GFLOP/s       achieved, from converters.flops (to show the distance to the machine's peak)
  box F1        the detector's decoded boxes (the PP-OCR decoder) against fp32's own boxes
Every INT8 variant (onnxruntime QDQ, OpenVINO, LiteRT) quantizes a float model whose Conv/Gemm
weights were first rounded to int8 steps on the calibration data (converters.weight_rounding).
INT8 variants over the accuracy budget go through the accuracy guard (bisection over the
sensitivity ranking), LiteRT INT8 too (TFLite ops kept float, converters.tflite_guard; its row
is litert-int8-mixed when the guard kept layers float, the fully quantized drop is in the guard's
initial_drop). "chosen" is what `--precision auto` picks when measuring: the fastest variant
within the budget.

Issue-12 targets (printed as met / NOT met):
  imagenet (EfficientNet-Lite0, no preset, .cache/models/efficientnet_lite0.onnx, made by
    tools/fetch_models.py on the wt-model branch): calibrated on >= 64 crops of real photos,
    judged on crops of OTHER photos (held out by photo): chosen >= 97% top-1 agreement at
    <= 0.5x onnxruntime fp32 latency; every backend's INT8 >= 95%.
  det (PP-OCRv4, --det-size, 640 for the target): chosen cosine >= 0.99 and box F1 >= 0.97 at
    <= 0.25x onnxruntime fp32 latency; onnxruntime INT8 cosine >= 0.98.

    python bench/convert.py [--models imagenet,cls,det] [--det-size 640] [--threads 2] [--seconds 1]
                            [--tflite] [--markdown out.md]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))

import fetch_models  # noqa: E402

#: accuracy budgets per model (what the guard holds each variant to)
#: (det: the guard judges box F1 against fp32's own decoded boxes, so 0.03 = the F1 >= 0.97 target)
BUDGET = {"cls": 0.02, "det": 0.03, "imagenet": 0.03}
#: a reference box whose score (mean probability inside it) is within this of the decoder's
#: box_thresh is "at the threshold edge": any tiny change of the map can drop or add it
EDGE_MARGIN = 0.05
TARGET = {"imagenet": {"chosen_top1": 0.97, "chosen_latency": 0.5, "int8_top1": 0.95},
          "det": {"chosen_cosine": 0.99, "chosen_box_f1": 0.97, "chosen_latency": 0.25, "ort_int8_cosine": 0.98}}
#: photographs among scikit-image's data (one source each; the horse/camera etc. are grey)
IMAGENET_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                   "retina", "camera", "clock", "coins", "brick", "grass", "gravel", "moon", "page", "text", "cell",
                   "colorwheel")


def _data(model: str, args):
    import convdata

    if model == "cls":
        return convdata.cls_samples("calibration"), convdata.cls_samples("heldout"), "other crops"
    if model == "imagenet":
        return _imagenet_data()
    n_cal, n_held = (24, 8) if args.quick else (64, args.det_held_out)
    return (convdata.det_samples("calibration", n_cal, args.det_size),
            convdata.det_samples("heldout", n_held, args.det_size), "scenes from other photos and text")


def _imagenet_data():
    """11 crops of each real photo, preprocessed for EfficientNet-Lite0 (RGB, (x - 127) / 128,
    224x224); held out by photo (edgesdk.calibration's source split), so no photo is on both sides."""
    from edgesdk.calibration import CalibrationSet
    from edgesdk.preprocess import PreprocessSpec, Preprocessor
    from sampledata import _to_bgr
    from skimage import data

    spec = PreprocessSpec(size=(224, 224), resize="stretch", color="RGB", scale=1.0, mean=(127.0,) * 3,
                          std=(128.0,) * 3, layout="NCHW")
    crops, sources = [], []
    for name in IMAGENET_PHOTOS:
        img = _to_bgr(getattr(data, name)())
        h, w = img.shape[:2]
        boxes = [(0, 0, h, w)]
        for frac in (0.8, 0.6):  # center and four corners at two scales
            s = int(min(h, w) * frac)
            boxes += [((h - s) // 2, (w - s) // 2, s, s), (0, 0, s, s), (0, w - s, s, s), (h - s, 0, s, s),
                      (h - s, w - s, s, s)]
        for top, left, bh, bw in boxes:
            crops.append(np.ascontiguousarray(img[top:top + bh, left:left + bw]))
            sources.append(name)
    batch, _ = Preprocessor(spec)(crops)
    fit, held = CalibrationSet(batch, "skimage photos", "images", sources, sources, "one photo").split(0.25)
    return fit.samples, held.samples, f"crops of {held.source_count} other photos"


def bench_model(key: str, path: Path, shape: list[int], args, work: Path) -> dict:
    import onnx

    from converters.compare import Comparator
    from converters.flops import count
    from converters.passes import PassContext, default_passes, load_onnx, run_passes
    from converters.variants import BuildSettings, VariantBuilder

    say = (lambda m: print(f"  [{key}] {m}", file=sys.stderr, flush=True))
    calib, held, held_what = _data(key, args)
    source = load_onnx(path)
    name_in = source.graph.input[0].name
    model, records = run_passes(source, default_passes(), PassContext(input_shapes={name_in: shape}))
    prepared = work / f"{key}.onnx"
    onnx.save(model, str(prepared))
    flops = count(prepared).flops
    task = "raw" if key == "det" else "classification"
    decoder = None
    if key == "det":
        from edgesdk.accuracy import box_decoder_for
        from edgesdk.presets import get_preset

        decoder = box_decoder_for(get_preset("ppocrv4_det"), shape)
    metric = {"imagenet": "top1", "det": "box-f1"}.get(key, "cosine")
    cmp = Comparator(path, held, task=task, metric=metric, box_decoder=decoder)
    settings = BuildSettings(prepared=prepared, work=work / key, input_name=name_in, input_shape=shape, calib=calib,
                             comparator=cmp, budget=BUDGET[key], threads=args.threads, measure=False,
                             bench_seconds=args.seconds, guard_steps=args.guard_steps, progress=say,
                             ranking_samples=args.ranking_samples,
                             model_name=path.name)
    builder = VariantBuilder(settings)
    plan = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")]
    if args.all_precisions:
        plan += [("onnxruntime", "fp16"), ("openvino", "fp16"), ("openvino", "bf16"), ("openvino", "int8+bf16"),
                 ("openvino", "int8-qdq")]
    from converters import tflite

    if args.tflite and tflite.is_available() and (key != "det" or args.tflite_det):
        plan += [("litert", "fp32"), ("litert", "int8")]
    variants = []
    for backend, precision in plan:
        t0 = time.perf_counter()
        say(f"building {backend} {precision}")
        v = builder.build(backend, precision)
        say(f"  {v.key}: {v.error or (v.comparison.summary() if v.comparison else 'built')} "
            f"({time.perf_counter() - t0:.1f} s)")
        variants.append(v)
    builder.close()
    say(f"timing {sum(v.ok for v in variants)} variants interleaved, {args.rounds} rounds")
    builder.s.bench_seconds = args.seconds * args.rounds
    timing_warnings = builder.remeasure(variants, rounds=args.rounds)
    base = next(v for v in variants if v.key == "onnxruntime-fp32")
    boxes = _box_diagnostics(variants, held, path, args.threads) if key == "det" else {}
    base_size = path.stat().st_size
    rows = []
    for v in variants:
        row = {"variant": v.key, "name": v.name, "backend": v.backend, "file_precision": v.precision,
               "runtime_precision": v.runtime_precision, "error": v.error}
        if v.ok:
            row.update({"size_mb": v.size_bytes / 1e6, "size_ratio": v.size_bytes / base_size})
        if v.latency and base.latency:
            p50 = v.latency["p50_ms"]
            row.update({"p50_ms": p50, "latency_ratio": p50 / base.latency["p50_ms"],
                        "speedup": base.latency["p50_ms"] / p50, "gflops_per_s": flops / (p50 / 1e3) / 1e9})
        if v.latency:
            row["spread"] = v.latency.get("spread")
        if v.comparison:
            row.update({"cosine": v.comparison.cosine, "cosine_min": v.comparison.cosine_min,
                        "max_abs": v.comparison.max_abs, "top1": v.comparison.top1_agreement,
                        "box_f1": v.comparison.box_f1, "drop": v.comparison.drop,
                        "within": v.within(BUDGET[key]),
                        "interval": v.verdict.interval if v.verdict else None})
        row.update(boxes.get(v.key, {}))
        if v.guard:
            row["guard"] = {"float_layers": v.guard.excluded, "initial_drop": v.guard.initial_drop,
                            "final_drop": v.guard.final_drop, "stopped": v.guard.stopped}
        rows.append(row)
    timed = [r for r in rows if r.get("within") and r.get("p50_ms")]
    chosen = min(timed, key=lambda r: r["p50_ms"])["variant"] if timed else None
    return {"model": key, "file": path.name, "shape": shape, "gflop": flops / 1e9, "calibration": len(calib),
            "held_out": len(held), "held_out_what": held_what, "passes": [r.to_dict() for r in records],
            "rows": rows, "chosen": chosen, "budget": BUDGET[key], "warnings": timing_warnings,
            "rounding": builder.rounding_choice}


def _box_diagnostics(variants, held, original: Path, threads: int) -> dict:
    """Per variant: the boxes the F1 rests on and where they are lost. Reference boxes of fp32
    (with their scores), the share at the threshold edge (score within EDGE_MARGIN of
    box_thresh), the reference scores of the boxes each variant loses, and the F1 on boxes clear
    of that edge (edge boxes neither missed nor extra count): a diagnostic, not the target."""
    import runtimes
    from converters.compare import box_matches, f1_from_counts, iou_matrix
    from edgesdk.decoders import make_decoder
    from edgesdk.preprocess import Transform
    from edgesdk.presets import get_preset

    pre = get_preset("ppocrv4_det")
    dec = make_decoder(decoder=pre.decoder, labels=pre.labels, task=pre.task)
    edge = pre.decoder["box_thresh"] + EDGE_MARGIN
    size = held.shape[2:4]
    tr = Transform(input_size=size, original_size=size)

    def decoded(backend, file, precision=None):
        with runtimes.load(file, backend=backend, precision=precision, threads=threads) as rt:
            res = [dec(dict(rt.infer(held[i:i + 1])), [tr])[0] for i in range(len(held))]
        return [(r.boxes.reshape(-1, 4), np.asarray(r.scores)) for r in res]

    ref = decoded("onnxruntime", original, "fp32")
    n_ref = sum(len(b) for b, _ in ref)
    n_edge = sum(int((s < edge).sum()) for _, s in ref)
    out = {}
    for v in variants:
        if not v.ok or v.check_with is None:
            continue
        got = decoded(v.check_with[0], v.check_with[1], v.runtime_precision)
        counts, clear, lost = [], [], []
        for (rb, rs), (cb, cs) in zip(ref, got):
            counts.append(box_matches(rb, cb))
            m = iou_matrix(rb, cb)
            lost += [float(rs[i]) for i in range(len(rb)) if m.shape[1] == 0 or m[i].max() < 0.5]
            keep_r, keep_c = rs >= edge, cs >= edge
            tp_c = box_matches(rb[keep_r], cb)[0]  # clear reference boxes found (by any box)
            extra = box_matches(rb, cb[keep_c])[1]  # clear converted boxes no reference box explains
            clear.append((tp_c, extra, int(keep_r.sum()) - tp_c))
        out[v.key] = {"ref_boxes": n_ref, "edge_boxes": n_edge, "lost_ref_scores": sorted(lost),
                      "box_f1_clear": f1_from_counts(np.array(clear)),
                      "box_counts": np.array(counts).sum(0).tolist()}
    return out


def _table(res: dict) -> str:
    from edgesdk.report import markdown_table

    rows = []
    for r in res["rows"]:
        g = r.get("guard")
        ci = r.get("interval")
        rows.append([("* " if r["variant"] == res.get("chosen") else "") + r["variant"],
                     r.get("runtime_precision") or r["file_precision"], r.get("size_mb"),
                     r.get("size_ratio"), r.get("p50_ms"), r.get("spread"), r.get("latency_ratio"),
                     r.get("gflops_per_s"), r.get("cosine"), r.get("cosine_min"), r.get("top1"), r.get("box_f1"),
                     r.get("drop"), f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "",
                     _boxes_cell(r),
                     (f"{len(g['float_layers'])} float" if g else ""), (r.get("error") or "")[:70]])
    return markdown_table(["variant", "precision", "MB", "size ratio", "p50 ms", "spread", "latency ratio",
                           "GFLOP/s", "cosine", "worst cos", "top-1", "box F1", "drop", "95% CI",
                           "boxes tp/fp/fn; F1 clear of edge", "guard", "error"],
                          rows)


def _boxes_cell(r: dict) -> str:
    if "box_counts" not in r:
        return ""
    return "/".join(map(str, r["box_counts"])) + f"; {r['box_f1_clear']:.3f}"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _targets(res: dict) -> list[str]:
    """The issue-12 targets for this model, one line each."""
    key, rows = res["model"], {r["variant"]: r for r in res["rows"]}
    t = TARGET.get(key)
    if t is None:
        return []
    chosen = rows.get(res["chosen"]) if res.get("chosen") else None
    lines = []
    if chosen is None:
        lines.append("chosen: no variant within the budget: targets NOT met")
    int8 = [r for r in res["rows"] if r["file_precision"] in ("int8", "mixed") and r.get("drop") is not None]
    if key == "imagenet":
        if chosen:
            ok = chosen["top1"] >= t["chosen_top1"] and chosen["latency_ratio"] <= t["chosen_latency"]
            lines.append(f"chosen {chosen['variant']}: top-1 agreement {chosen['top1']:.1%} (>= 97%), latency "
                         f"{chosen['latency_ratio']:.2f}x onnxruntime fp32 (<= 0.5x): {_met(ok)}")
        for r in int8:
            lines.append(f"{r['variant']}: top-1 agreement {r['top1']:.1%} (>= 95%): {_met(r['top1'] >= t['int8_top1'])}")
    if key == "det":
        if chosen:
            ok = (chosen["cosine"] >= t["chosen_cosine"] and (chosen.get("box_f1") or 0) >= t["chosen_box_f1"]
                  and chosen["latency_ratio"] <= t["chosen_latency"])
            lines.append(f"chosen {chosen['variant']}: cosine {chosen['cosine']:.4f} (>= 0.99), box F1 "
                         f"{chosen.get('box_f1') or 0:.4f} (>= 0.97), latency {chosen['latency_ratio']:.2f}x "
                         f"(<= 0.25x): {_met(ok)}")
        ort = [r for r in int8 if r["backend"] == "onnxruntime"]
        for r in ort:
            lines.append(f"{r['variant']}: cosine {r['cosine']:.4f} (>= 0.98): {_met(r['cosine'] >= t['ort_int8_cosine'])}")
        if not ort:
            lines.append("onnxruntime INT8 was not built: NOT met")
        lines += _box_lines(res, chosen)
    lines += _context_lines(res)
    return lines


def _box_lines(res: dict, chosen) -> list[str]:
    """What the box F1 rests on, and where the chosen variant loses boxes."""
    any_row = next((r for r in res["rows"] if "ref_boxes" in r), None)
    if any_row is None:
        return []
    out = [f"box F1 rests on {any_row['ref_boxes']} fp32 boxes in {res['held_out']} held-out images; "
           f"{any_row['edge_boxes']} of them score within {EDGE_MARGIN} of box_thresh (threshold edge)"]
    if chosen and "lost_ref_scores" in chosen:
        lost = chosen["lost_ref_scores"]
        out.append(f"chosen loses {len(lost)} fp32 boxes, their fp32 scores: "
                   f"{', '.join(f'{x:.3f}' for x in lost) or 'none'}; F1 on boxes clear of the edge "
                   f"{chosen['box_f1_clear']:.4f} (diagnostic)")
    return out


def _context_lines(res: dict) -> list[str]:
    """The weight-rounding choice (INT8 slower than fp32 comes as a timing warning)."""
    out = []
    rc = res.get("rounding")
    if rc:
        out.append(f"weight rounding: {rc['kept']} kept (held-out drop with int8 weights only: data-aware "
                   f"{rc['data_aware_drop']:.4f}, nearest {rc['nearest_drop']:.4f}; cosine "
                   f"{rc['data_aware_cosine']:.4f} vs {rc['nearest_cosine']:.4f})")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="imagenet,det", help="comma list of imagenet, cls, det")
    ap.add_argument("--det-size", type=int, default=640, help="detector input size (640 for the target)")
    ap.add_argument("--all-precisions", action="store_true", help="also fp16/bf16/int8+bf16/int8-qdq variants")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--seconds", type=float, default=1.0, help="timing per variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--guard-steps", type=int, default=8)
    ap.add_argument("--det-held-out", type=int, default=48, help="held-out detector images (boxes: ~3 each)")
    ap.add_argument("--ranking-samples", type=int, default=8, help="held-out samples the guard ranks layers on")
    ap.add_argument("--tflite", action="store_true", help="also TFLite variants via onnx2tf (classifier)")
    ap.add_argument("--tflite-det", action="store_true", help="TFLite for the detector too (minutes)")
    ap.add_argument("--quick", action="store_true", help="fewer detector images (smoke test)")
    ap.add_argument("--markdown", type=Path, help="also write the tables to this file")
    ap.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = ap.parse_args()
    paths = fetch_models.fetch(quiet=True)
    models = {"cls": (paths["ppocr_cls.onnx"], [1, 3, 48, 192]),
              "det": (paths["ppocrv4_det.onnx"], [1, 3, args.det_size, args.det_size]),
              "imagenet": (ROOT / ".cache" / "models" / "efficientnet_lite0.onnx", [1, 3, 224, 224])}
    from edgesdk.hostinfo import closest_profile

    host = closest_profile()[0].name
    header = (f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, closest profile {host}; "
              f"{args.threads} threads, batch 1; ratios against onnxruntime fp32 in the same run")
    print(header)
    out_md = [f"# Conversion benchmark\n\n{header}\n"]
    results = []
    work = Path(tempfile.mkdtemp(prefix="edgesdk-bench-convert-"))
    try:
        for key in [m.strip() for m in args.models.split(",") if m.strip()]:
            path, shape = models[key]
            if not path.is_file():
                print(f"\n## {key}: {path} is missing: run tools/fetch_models.py (wt-model branch); skipped")
                continue
            t0 = time.perf_counter()
            res = bench_model(key, path, shape, args, work)
            res["seconds"] = time.perf_counter() - t0
            results.append(res)
            title = f"{res['file']} {'x'.join(map(str, shape))} ({res['gflop']:.2f} GFLOP; {res['calibration']} calibration / {res['held_out']} held-out real images)"
            table = _table(res)
            print(f"\n## {title}\n\n{table}\n")
            out_md += [f"## {title}\n", table, ""]
            lines = _targets(res) + [f"WARNING: {w}" for w in res["warnings"]]
            if lines:
                print(f"Targets ({key}, budget {res['budget']}; held out: {res['held_out_what']}):")
                for line in lines:
                    print("  " + line)
                out_md += [f"Targets ({key}):", ""] + [f"- {line}" for line in lines] + [""]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(out_md) + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
