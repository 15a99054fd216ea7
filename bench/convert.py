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
INT8 variants over the accuracy budget (1 - cosine <= 0.02) go through the accuracy guard.
Target on the detector at 640x640: the best INT8 variant >= 2x faster than onnxruntime fp32,
<= 0.3x its size, cosine >= 0.98. The run prints whether each target is met.

    python bench/convert.py [--models cls,det] [--threads 2] [--seconds 3] [--tflite] [--markdown out.md]
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

BUDGET = 0.02
TARGET = {"speedup": 2.0, "size_ratio": 0.3, "cosine": 0.98}


def _data(model: str, quick: bool):
    import convdata

    if model == "cls":
        return convdata.cls_samples("calibration"), convdata.cls_samples("heldout")
    n_cal, n_held = (24, 8) if quick else (64, 24)
    return convdata.det_samples("calibration", n_cal, 640), convdata.det_samples("heldout", n_held, 640)


def bench_model(key: str, path: Path, shape: list[int], args, work: Path) -> dict:
    import onnx

    from converters.compare import Comparator
    from converters.flops import count
    from converters.passes import PassContext, default_passes, load_onnx, run_passes
    from converters.variants import BuildSettings, VariantBuilder

    say = (lambda m: print(f"  [{key}] {m}", file=sys.stderr, flush=True))
    calib, held = _data(key, args.quick)
    model, records = run_passes(load_onnx(path), default_passes(), PassContext(input_shapes={"x": shape}))
    prepared = work / f"{key}.onnx"
    onnx.save(model, str(prepared))
    flops = count(prepared).flops
    task = "classification" if key == "cls" else "raw"
    cmp = Comparator(path, held, task=task)
    cmp.kind = "cosine"  # the bench's measure for both models (top-1 is reported too)
    settings = BuildSettings(prepared=prepared, work=work / key, input_name="x", input_shape=shape, calib=calib,
                             comparator=cmp, budget=BUDGET, threads=args.threads, measure=False,
                             bench_seconds=args.seconds, guard_steps=args.guard_steps, progress=say,
                             model_name=path.name)
    builder = VariantBuilder(settings)
    plan = [("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("onnxruntime", "int8"),
            ("openvino", "fp32"), ("openvino", "fp16"), ("openvino", "bf16"), ("openvino", "int8"),
            ("openvino", "int8+bf16"), ("openvino", "int8-qdq")]
    from converters import tflite

    if args.tflite and tflite.is_available() and (key == "cls" or args.tflite_det):
        plan += [("litert", "fp32"), ("litert", "fp16"), ("litert", "int8")]
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
    builder.remeasure(variants, rounds=args.rounds)
    base = next(v for v in variants if v.key == "onnxruntime-fp32")
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
        if v.comparison:
            row.update({"cosine": v.comparison.cosine, "cosine_min": v.comparison.cosine_min,
                        "max_abs": v.comparison.max_abs, "top1": v.comparison.top1_agreement})
        if v.guard:
            row["guard"] = {"float_layers": v.guard.excluded, "initial_drop": v.guard.initial_drop,
                            "final_drop": v.guard.final_drop, "stopped": v.guard.stopped}
        rows.append(row)
    return {"model": key, "file": path.name, "shape": shape, "gflop": flops / 1e9, "calibration": len(calib),
            "held_out": len(held), "passes": [r.to_dict() for r in records], "rows": rows}


def _table(res: dict) -> str:
    from edgesdk.report import markdown_table

    rows = []
    for r in res["rows"]:
        g = r.get("guard")
        rows.append([r["variant"], r.get("runtime_precision") or r["file_precision"], r.get("size_mb"),
                     r.get("size_ratio"), r.get("p50_ms"), r.get("latency_ratio"), r.get("speedup"),
                     r.get("gflops_per_s"), r.get("cosine"), r.get("cosine_min"), r.get("top1"),
                     (f"{len(g['float_layers'])} float" if g else ""), (r.get("error") or "")[:70]])
    return markdown_table(["variant", "precision", "MB", "size ratio", "p50 ms", "latency ratio", "speed-up",
                           "GFLOP/s", "cosine", "worst cos", "top-1", "guard", "error"], rows)


def _targets(res: dict) -> list[str]:
    lines = []
    int8 = [r for r in res["rows"] if r["file_precision"] in ("int8", "mixed") and r.get("speedup") and r.get("cosine")]
    if not int8:
        return ["no INT8 variant was built: targets NOT met"]
    for r in int8:
        ok = {"speedup": r["speedup"] >= TARGET["speedup"], "size": r["size_ratio"] <= TARGET["size_ratio"],
              "cosine": r["cosine"] >= TARGET["cosine"]}
        lines.append(f"{r['variant']:26s} speed-up {r['speedup']:.2f}x ({'met' if ok['speedup'] else 'NOT met'}), "
                     f"size {r['size_ratio']:.3f}x ({'met' if ok['size'] else 'NOT met'}), "
                     f"cosine {r['cosine']:.4f} ({'met' if ok['cosine'] else 'NOT met'})"
                     + ("  <- all three" if all(ok.values()) else ""))
    all3 = [r for r in int8 if r["speedup"] >= TARGET["speedup"] and r["size_ratio"] <= TARGET["size_ratio"]
            and r["cosine"] >= TARGET["cosine"]]
    if all3:
        best = max(all3, key=lambda r: r["speedup"])
        lines.append(f"TARGET MET by {best['variant']}: {best['speedup']:.2f}x faster, {best['size_ratio']:.3f}x size, "
                     f"cosine {best['cosine']:.4f}")
    else:
        met = {k: any(c) for k, c in (("speed-up >= 2x", [r["speedup"] >= 2 for r in int8]),
                                       ("size <= 0.3x", [r["size_ratio"] <= 0.3 for r in int8]),
                                       ("cosine >= 0.98", [r["cosine"] >= 0.98 for r in int8]))}
        lines.append("TARGET NOT MET by any single INT8 variant; met separately: "
                     + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in met.items()))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="cls,det", help="cls, det or both")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--seconds", type=float, default=2.0, help="timing per variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--guard-steps", type=int, default=8)
    ap.add_argument("--tflite", action="store_true", help="also TFLite variants via onnx2tf (classifier)")
    ap.add_argument("--tflite-det", action="store_true", help="TFLite for the detector too (minutes)")
    ap.add_argument("--quick", action="store_true", help="fewer detector images (smoke test)")
    ap.add_argument("--markdown", type=Path, help="also write the tables to this file")
    ap.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = ap.parse_args()
    paths = fetch_models.fetch(quiet=True)
    models = {"cls": (paths["ppocr_cls.onnx"], [1, 3, 48, 192]), "det": (paths["ppocrv4_det.onnx"], [1, 3, 640, 640])}
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
            t0 = time.perf_counter()
            res = bench_model(key, path, shape, args, work)
            res["seconds"] = time.perf_counter() - t0
            results.append(res)
            title = f"{res['file']} {'x'.join(map(str, shape))} ({res['gflop']:.2f} GFLOP; {res['calibration']} calibration / {res['held_out']} held-out real images)"
            table = _table(res)
            print(f"\n## {title}\n\n{table}\n")
            out_md += [f"## {title}\n", table, ""]
            if key == "det":
                lines = _targets(res)
                print("Targets (detector 640x640, best INT8 variant):")
                for line in lines:
                    print("  " + line)
                out_md += ["Targets (best INT8 variant >= 2x faster than onnxruntime fp32, <= 0.3x size, cosine >= 0.98):", ""]
                out_md += [f"- {line}" for line in lines] + [""]
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
