"""`edgesdk convert`: a thin layer over `edgesdk.convert.convert`."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import click

from ..errors import ConversionError
from .decoder_flags import decoder_flags, pop_decoder
from .preprocess_flags import pop_preprocess, preprocess_flags


def _shape(value: Optional[str]) -> Optional[list[int]]:
    if not value:
        return None
    parts = [p for p in re.split(r"[,x\s]+", value.strip()) if p]
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise ConversionError(f"--input-shape takes integers like 1,3,640,640 or 1x3x640x640, got {value!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise ConversionError(f"--input-shape dims must be >= 1, got {value!r}")
    return dims


@click.command("convert")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-p", "--profile", required=True, help="Device profile name or YAML file (edgesdk profiles).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Bundle directory to create.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16", "int8"]), default="auto",
              show_default=True, help="auto: measure here when the profile is this host, else the profile's order.")
@click.option("--calib", help="Calibration data: image folder, video file or .npy (real samples, never noise).")
@click.option("--calib-size", type=int, default=64, show_default=True, help="At most this many calibration samples.")
@click.option("--val", help="Held-out data for the accuracy check (default: a quarter of --calib, never calibrated on).")
@click.option("--calib-method", type=click.Choice(["nncf", "minmax", "movavg", "entropy", "percentile"]), default="nncf",
              show_default=True, help="Range estimation for onnxruntime static INT8.")
@click.option("--max-accuracy-drop", type=float, default=None,
              help="Budget (default 0.02): 1 - cosine, 1 - top-1 agreement (classifiers) or the --eval metric's drop.")
@click.option("--input-shape", help="Input shape, e.g. 1,3,640,640 (needed for dynamic models); -1 (or ?) keeps a dim "
              "dynamic where the target allows it (onnxruntime, OpenVINO), e.g. 1,3,48,-1 with --resize fit-height.")
@click.option("--freeze-input", "freeze_input", multiple=True, metavar="NAME=V1,V2,...",
              help="Bake an input that is not the image into the model as a constant (repeatable), e.g. "
              "scale_factor=1,1 for a PaddleDetection export; recorded in the manifest.")
@click.option("--preset", help="Known model preset (default: recognized from the file; 'none': use no preset).")
@click.option("--exclude", multiple=True, help="Node to keep float in INT8 variants (repeatable).")
@click.option("--metric", help="What the budget judges: top1|top5|cosine|box-f1|module:function "
              "(default: top1 for classifiers, box-f1 for detectors with a decoder, else cosine).")
@click.option("--keep-best", is_flag=True, help="No variant within budget: write the closest, marked over budget.")
@click.option("--eval", "eval_spec", help="module:function(runtime) -> metric on your labelled data (higher is better).")
@click.option("--prune", type=click.FloatRange(0, 1, max_open=True), help="Structured channel pruning ratio before conversion (e.g. 0.3).")
@click.option("--refit/--no-refit", default=None, help="Least-squares refit of the pruned convolutions on --calib "
              "(default: on when --prune has --calib; seconds, no training).")
@click.option("--prune-criterion", type=click.Choice(["l1", "l2", "activation"]), default="l1", show_default=True)
@click.option("--prune-max-flops", type=float, help="Measure each group's damage on --calib and leave the worst per FLOP "
              "saved whole, while FLOPs stay <= this share of the original (e.g. 0.6).")
@click.option("--prune-max-activations", type=float, help="With --prune-max-flops: also keep onnxruntime's activation "
              "elements (its latency follows them) <= this share (e.g. 0.72).")
@click.option("--lowrank", type=click.FloatRange(0, 1, min_open=True), help="Low-rank (SVD) factorization keeping this energy share (e.g. 0.9).")
@click.option("--distill", is_flag=True, help="Train the pruned/factorized model back to the original (no labels; uses --calib).")
@click.option("--distill-minutes", type=click.FloatRange(0, 24 * 60, min_open=True), default=10.0, show_default=True, help="Distillation time budget.")
@click.option("--resume", is_flag=True, help="Continue an interrupted distillation or QAT from its checkpoint (OUTPUT.distill.pt, OUTPUT.VARIANT.qat.pt).")
@click.option("--qat", is_flag=True, help="INT8 still over the budget after the guard: quantization-aware fine-tuning "
              "towards the fp32 model on --calib (no labels), then judged again.")
@click.option("--qat-minutes", type=click.FloatRange(0, 24 * 60, min_open=True), default=4.0, show_default=True,
              help="QAT time budget per INT8 variant.")
@click.option("--backend", "backends", multiple=True, help="Only consider this backend of the profile (repeatable).")
@click.option("--measure/--no-measure", default=None, help="Time the candidates here (default: auto on this host).")
@click.option("--accuracy-control", type=click.Choice(["edgesdk", "nncf"]), default="edgesdk", show_default=True,
              help="INT8 over budget: own layer-sensitivity guard, or NNCF's accuracy control (OpenVINO, slow).")
@click.option("--guard-steps", type=click.IntRange(min=0), default=8, show_default=True,
              help="0 turns the INT8 accuracy guard off; with --accuracy-control nncf, its most steps.")
@click.option("--threads", type=int, help="Engine threads for checks and timing.")
@click.option("--bench-seconds", type=float, default=1.0, show_default=True,
              help="Time spent timing each variant (split over 3 interleaved rounds at the end).")
@click.option("--profiles-dir", multiple=True, type=click.Path(path_type=Path), help="Extra profile folder.")
@click.option("--task", type=click.Choice(["classification", "detection", "segmentation", "text_recognition", "raw"]),
              default=None, help="What the outputs are (default: the preset's or the model metadata's, else raw).")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Class names, one per line in class-index order (default: from the model's metadata).")
@click.option("--example-shape", help="PyTorch input (.pt, .pt2, module:factory): the input shape to trace, e.g. 1,3,224,224.")
@click.option("--assume-preprocess", is_flag=True,
              help="Accept the default preprocessing for an image --calib when nothing states it (loud warning).")
@preprocess_flags
@decoder_flags
@click.option("-f", "--force", is_flag=True, help="Replace the output bundle if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def convert(model: Path, profile: str, output: Path, precision: str, calib: Optional[str], calib_size: int,
            val: Optional[str], calib_method: str, max_accuracy_drop: Optional[float], input_shape: Optional[str],
            preset: Optional[str], exclude: tuple, eval_spec: Optional[str], prune: Optional[float],
            prune_criterion: str, prune_max_flops: Optional[float], prune_max_activations: Optional[float],
            refit: Optional[bool], lowrank: Optional[float], distill: bool, distill_minutes: float,
            resume: bool, qat: bool, qat_minutes: float, backends: tuple, measure: Optional[bool], accuracy_control: str, guard_steps: int,
            threads: Optional[int], bench_seconds: float, profiles_dir: tuple, force: bool, quiet: bool,
            task: Optional[str], labels: Optional[Path], example_shape: Optional[str], assume_preprocess: bool,
            metric: Optional[str] = None, keep_best: bool = False, freeze_input: tuple = (),
            **flags: Any) -> None:
    """Convert MODEL (ONNX, TFLite, PyTorch .pt/.pt2 or module:factory) into a bundle for a device
    profile, checked against the original.

    \b
    Example:
      edgesdk convert ppocrv4_det.onnx -p intel-xeon-amx --calib images/ \\
          --input-shape 1,3,640,640 -o det.bundle
    """
    from ..convert import _stderr
    from ..convert import convert as run_convert
    from ..conversion.markdown import verdict_cells
    from ..report import text_table
    from converters.freeze_inputs import parse_freeze

    from ..shapes import dynamic_targets, parse_input_shape

    shape = parse_input_shape(input_shape)
    if shape is not None and None in shape:
        # targets that need static shapes are left out before any heavy work (their records say which)
        from ..profiles import load_profile

        backends, skipped = dynamic_targets(load_profile(profile, list(profiles_dir) or None), list(backends), shape)
        for note in skipped:
            click.echo(f"[convert] {note}", err=True)
    result = run_convert(
        model, profile, output, precision=precision, calib=calib, max_accuracy_drop=max_accuracy_drop,
        input_shape=shape, freeze_inputs=parse_freeze(freeze_input) or None, preset=preset, calib_size=calib_size, val=val, calib_method=calib_method,
        exclude=list(exclude), eval_fn=eval_spec, prune=prune, prune_criterion=prune_criterion,
        prune_max_flops=prune_max_flops, prune_max_activations=prune_max_activations, refit=refit,
        lowrank=lowrank, distill=distill, distill_minutes=distill_minutes, resume=resume, qat=qat, qat_minutes=qat_minutes,
        backends=list(backends or ()) or None, measure=measure, accuracy_control=accuracy_control,
        guard_steps=guard_steps, threads=threads, bench_seconds=bench_seconds, force=force, profiles_dirs=list(profiles_dir) or None,
        progress=None if quiet else _stderr, task=task, labels=labels, assume_preprocess=assume_preprocess,
        preprocess_options=pop_preprocess(flags), example_shape=_shape(example_shape),
        metric=metric, keep_best=keep_best, decoder=pop_decoder(flags))
    rows = []
    for v in result.report["variants"]:
        acc = v.get("accuracy") or {}
        lat = v.get("latency") or {}
        rows.append([("* " if v["key"] == result.chosen.key else "  ") + v["key"], v.get("runtime_precision") or v["precision"],
                     None if v.get("size_bytes") is None else round(v["size_bytes"] / 1e6, 3), v.get("size_ratio"),
                     lat.get("p50_ms"), lat.get("spread"), v.get("speedup"), acc.get("cosine"), *verdict_cells(v),
                     (v.get("error") or "")[:60]])
    click.echo(text_table(["variant", "precision", "MB", "size x", "p50 ms", "spread", "speed-up", "cosine",
                           "metric", "held-out n", "drop [95%]", "verdict", "error"], rows))
    click.echo(f"\nchosen: {result.chosen.name} - {result.report['decision']}")
    for warning in result.report.get("warnings") or []:
        click.echo(f"WARNING: {warning}")
    click.echo(f"bundle: {result.path}  (report: {result.path / 'report.md'})")
