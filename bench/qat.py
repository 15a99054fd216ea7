#!/usr/bin/env python3
"""Quantization-aware fine-tuning vs post-training INT8: EfficientNet-Lite0 on onnxruntime.

The same QDQ model (all layers INT8, no float layers, per-channel int8 weights, per-tensor uint8
activations) is judged as the post-training quantizer wrote it and after label-free QAT
(converters.qat) for --minutes on the calibration crops; both on crops of OTHER real photos
(held out by photo, bench/convert.py's imagenet data), top-1 agreement and cosine with fp32.
Also: the exported QAT file against the trained torch model, and how many layers onnxruntime and
OpenVINO run in int8 before and after. PASS when QAT raises held-out top-1 agreement.

    nice -n 5 python bench/qat.py [--minutes 4] [--methods nncf,minmax] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "tests"), str(ROOT / "bench")]
MODEL = ROOT / ".cache" / "models" / "efficientnet_lite0.onnx"


def _prepare(work: Path) -> Path:
    import onnx

    from converters.passes import PassContext, default_passes, load_onnx, run_passes

    source = load_onnx(MODEL)
    name = source.graph.input[0].name
    model, _ = run_passes(source, default_passes(), PassContext(input_shapes={name: [1, 3, 224, 224]}))
    path = work / "prepared.onnx"
    onnx.save(model, str(path))
    return path


def run_method(method: str, prepared: Path, fit, held, args, work: Path) -> dict:
    from converters.compare import Comparator
    from converters.onnx_quant import StaticQuantizer
    from converters.qat import QatConfig, int8_evidence, qat

    say = (lambda m: print(f"  [{method}] {m}", file=sys.stderr, flush=True))
    cmp = Comparator(prepared, held, task="classification", metric="top1")
    quantizer = StaticQuantizer(prepared, "image", fit, method=method, work_dir=work)
    ptq = quantizer.quantize(work / f"ptq_{method}.onnx")
    before = cmp.compare(ptq, backend="onnxruntime")
    say(f"post-training INT8: {before.summary()}")
    t0 = time.perf_counter()
    out = work / f"qat_{method}.onnx"
    _, rep = qat(prepared, ptq, fit, out, QatConfig(minutes=args.minutes, threads=args.threads, lr=args.lr),
                 progress=say, source="crops of real photos")
    after = cmp.compare(out, backend="onnxruntime")
    say(f"after QAT: {after.summary()}")
    return {"method": method, "ptq_top1": before.top1_agreement, "qat_top1": after.top1_agreement,
            "ptq_cosine": before.cosine, "qat_cosine": after.cosine, "minutes": rep.minutes, "steps": rep.steps,
            "stopped": rep.stopped, "val_cosine": [rep.start_cosine, rep.best_cosine],
            "torch_vs_onnxruntime": rep.torch_vs_onnxruntime, "int8": int8_evidence(out, work, ptq),
            "seconds": time.perf_counter() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--methods", default="nncf", help="comma-separated calibration methods (converters.onnx_quant)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core box)")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    from convert import _imagenet_data

    fit, held, what = _imagenet_data()
    print(f"EfficientNet-Lite0: {len(fit)} calibration crops, {len(held)} held out ({what})", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-qat-") as tmp:
        prepared = _prepare(Path(tmp))
        for method in args.methods.split(","):
            rows.append(run_method(method, prepared, fit, held, args, Path(tmp)))
    ok = True
    for r in rows:
        better = r["qat_top1"] > r["ptq_top1"]
        ok &= better
        print(f"{r['method']}: onnxruntime INT8 top-1 agreement {r['ptq_top1']:.1%} -> {r['qat_top1']:.1%} after "
              f"{r['minutes']:.1f} min QAT ({r['steps']} steps, {r['stopped']}); cosine {r['ptq_cosine']:.4f} -> "
              f"{r['qat_cosine']:.4f}; exported vs torch {r['torch_vs_onnxruntime']:.5f}; "
              f"{'PASS' if better else 'FAIL'} (QAT improves held-out top-1)")
        for engine, ev in r["int8"].items():
            print(f"  {engine}: {ev}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
