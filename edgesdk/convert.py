"""`convert(...)`: a trained model -> the bundle that runs best on a device profile, checked.

    from edgesdk.convert import convert
    result = convert("ppocrv4_det.onnx", "intel-xeon-amx", "det.bundle", calib="images/",
                     input_shape=[1, 3, 640, 640])
    print(result.chosen.name, result.bundle.path)

Steps (each recorded in the bundle's report):
1. graph preparation passes (static shapes, opset >= 13, node names, constant folding, shape
   inference) on the ONNX model (a PyTorch module is exported to ONNX first);
2. optional structured pruning (`prune=RATIO`, converters.pruning) of the prepared model;
3. calibration data (folder / video / .npy) preprocessed exactly as the bundle's PreprocessSpec
   will preprocess at run time, split into calibration and held-out samples;
4. candidate variants from the profile's backend preferences (formats and precisions), each
   compared with the original on the held-out samples; INT8 over the accuracy budget keeps its
   most sensitive layers float until the budget holds;
5. the choice: with `precision="auto"` on the profile's own hardware, every candidate is timed
   here and the fastest within the budget wins (INT8 is not always faster); elsewhere the
   profile's preference order decides, among candidates within the budget;
6. an atomic bundle write (nothing is left behind on errors or Ctrl-C) with report.md,
   report.json and accuracy_latency.png.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from .bundle import Bundle, Manifest, sha256_file, write_bundle
from .errors import BundleError, ConversionError, EdgeSDKError
from .preprocess import PreprocessSpec
from .preprocess_options import PreprocessOptions

from .convert_options import DEFAULT_MAX_DROP, PRECISION_CHOICES, TASK_CHOICES, ConvertOptions  # noqa: F401
from runtimes.registry import RECORDS, record  # noqa: E402  one record per backend

#: what each backend's converter can produce (read from its record)
PRODUCES = {name: r.precisions for name, r in RECORDS.items()}

Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"[convert] {msg}", file=sys.stderr, flush=True)


@dataclass
class ConvertResult:
    bundle: Bundle
    chosen: Any                      # converters.variants.Variant
    variants: list[Any]
    report: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.bundle.path


@dataclass
class _Candidate:
    backend: str
    precision: str      # what VariantBuilder.build takes (incl. "bf16", "int8+bf16")
    device: str
    layout: str
    rank: int           # position in the profile's preference order
    listed: bool = True


# --------------------------------------------------------------------------- inputs

def _load_model(model: Any, work: Path, torch_example: Any, progress: Progress,
                example_shape: Optional[Sequence[int]] = None) -> tuple[Path, Any]:
    """The model as ONNX: an .onnx file as is; PyTorch (a module, a TorchScript / ExportedProgram
    file or ``module:factory``) exported to ``<name>.onnx`` so the bundle is named after it."""
    from converters.passes import load_onnx

    from .torch_source import is_torch_source, load_torch_source

    if is_torch_source(model):
        model, torch_example, name = load_torch_source(str(model), example_shape)
    elif isinstance(model, (str, Path)):
        path = Path(model)
        if not path.exists():
            raise ConversionError(f"model {str(path)!r} does not exist")
        suffix = path.suffix.lower()
        if suffix != ".onnx":
            kinds = {".tflite": "TFLite", ".xml": "OpenVINO IR", ".engine": "TensorRT engine"}
            kind = kinds.get(suffix, f"'{suffix or 'no suffix'}'")
            raise ConversionError(
                f"edgesdk convert takes ONNX, PyTorch (.pt TorchScript, .pt2 ExportedProgram, module:factory) and "
                f"TFLite models; {path.name} is {kind}. Export it to ONNX first, or wrap an already converted "
                "model in a bundle with edgesdk.presets.make_bundle")
        return path, load_onnx(path)
    else:
        name = _torch_name(model)
        if torch_example is None and example_shape is not None:
            import torch

            torch_example = torch.zeros(*[int(d) for d in example_shape])
    if torch_example is None:
        raise ConversionError("converting a PyTorch module needs an example input (torch_example=torch.randn(...) "
                              "or --example-shape 1,3,224,224)")
    from converters.torch_export import export

    progress(f"exporting the PyTorch module {name} to ONNX")
    path = export(model, torch_example, work / f"{name}.onnx", input_names=["input"])
    return path, load_onnx(path)


def _static_shape(model: Any, input_shape: Optional[Sequence[Any]], spec: Optional[PreprocessSpec],
                  batch: int) -> tuple[str, list[Optional[int]], np.dtype]:
    """(input name, shape, dtype): the stated shape (None where -1 keeps a dim dynamic: see
    edgesdk.shapes), else the model's dims with a dynamic batch set to `batch` and dynamic
    spatial dims filled from the preprocessing's size."""
    from onnx import helper

    from converters.passes import graph_inputs, input_dims

    from .shapes import parse_input_shape, show

    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise ConversionError(f"edgesdk convert takes single-input models; this one has {len(inputs)} inputs "
                              f"({', '.join(i.name for i in inputs)})")
    vi = inputs[0]
    dims = input_dims(vi)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
    if input_shape is not None:
        shape = parse_input_shape(input_shape) or []
        if len(shape) != len(dims):
            raise ConversionError(f"--input-shape {show(shape)} has rank {len(shape)}, the model input {vi.name!r} "
                                  f"has rank {len(dims)} ({show(dims)})")
        fixed = [a for a, (want, have) in enumerate(zip(shape, dims)) if want is None and have is not None]
        if fixed:
            raise ConversionError(f"--input-shape {show(shape)} keeps axis {', '.join(map(str, fixed))} dynamic, but "
                                  f"the model input {vi.name!r} fixes it ({show(dims)}); give "
                                  f"{', '.join(str(dims[a]) for a in fixed)} there")
        return vi.name, shape, dtype
    shape = list(dims)
    if shape and shape[0] is None:
        shape[0] = batch
    if None in shape and spec is not None and spec.size is not None and len(shape) == 4:
        h, w = spec.size
        if spec.layout == "NCHW":
            shape[2] = shape[2] or h
            shape[3] = shape[3] or w
        else:
            shape[1] = shape[1] or h
            shape[2] = shape[2] or w
    if None in shape:
        shown = ["?" if d is None else d for d in dims]
        raise ConversionError(
            f"model input {vi.name!r} has dynamic dims {shown}; pass --input-shape with their sizes, e.g. "
            f"{','.join(str(d or 640) for d in [batch] + shape[1:])}, or -1 for a dim to keep dynamic on targets that "
            "allow it (onnxruntime, OpenVINO), e.g. 1,3,48,-1 with --resize fit-height for text lines")
    return vi.name, [int(d) for d in shape], dtype


def _bundle_spec(spec: Optional[PreprocessSpec], shape: list[Optional[int]]) -> Optional[PreprocessSpec]:
    """The preset's preprocessing with the size fixed to the static input shape (dynamic dims:
    filled per image, see edgesdk.shapes.spec_for_shape)."""
    from .shapes import spec_for_shape

    return spec_for_shape(spec, shape)[0]


@dataclass
class ModelFacts:
    """Stage 1 (prepare): what the model is and how it is fed; the report replays `sources`."""

    name: str
    input_name: str
    shape: list[int]
    dtype: np.dtype
    preset: Any
    preprocess: PreprocessSpec
    sources: dict[str, Any]
    task: str
    labels: list[str]
    decoder: dict[str, Any]
    notes: list[str] = field(default_factory=list)


#: decoder settings for a task when no preset names one
TASK_DECODERS = {"classification": {"type": "classification", "top_k": 5},
                 "segmentation": {"type": "segmentation"}, "raw": {"type": "raw"},
                 "text_recognition": {"type": "ctc"}}


def _model_facts(model: Any, src: Path, proto: Any, preset: Optional[str], input_shape: Optional[Sequence[int]],
                 preprocess: Optional[PreprocessSpec], options: Optional[PreprocessOptions], task: Optional[str],
                 labels: Union[str, Path, Sequence[str], None], calib: Any, assume: bool,
                 say: Progress, stated_decoder: Optional[Mapping[str, Any]] = None) -> ModelFacts:
    from converters.passes import graph_inputs, input_dims

    from . import presets
    from .decoders import decoder_for_task
    from .model_metadata import read_model_facts
    from .preprocess_options import ResolvedPreprocess, resolve_preprocess

    pre = presets.lookup_preset(preset, src) if preset or isinstance(model, (str, Path)) else None
    meta = read_model_facts(src)
    from .shapes import dynamic_notes, shape_for_resolve

    inputs = graph_inputs(proto)
    dims = input_dims(inputs[0]) if len(inputs) == 1 else None
    if preprocess is not None:
        resolved = ResolvedPreprocess(preprocess, {k: "argument preprocess" for k in preprocess.to_dict()})
    else:
        resolved = resolve_preprocess(options, model_facts=meta, preset=pre.preprocess if pre else None,
                                      preset_name=pre.name if pre else "",
                                      input_shape=shape_for_resolve(dims, input_shape, options),
                                      input_name=inputs[0].name if inputs else "input")
    name_in, shape, dtype = _static_shape(proto, input_shape, resolved.spec, batch=1)
    spec = _bundle_spec(replace(resolved.spec, dtype=np.dtype(dtype).name), shape)
    notes: list[str] = dynamic_notes(name_in, shape, resolved.spec, resolved.sources)
    _check_stated(pre, preprocess, resolved, calib, assume, options, say, notes)
    the_task = task or meta.get("task") or (pre.task if pre else "raw")
    if the_task not in TASK_CHOICES:
        raise ConversionError(f"the task {the_task!r} (from the model's metadata) is not one of {', '.join(TASK_CHOICES)}")
    names = _labels(labels, meta, pre, proto, the_task)
    if pre is not None and pre.task == the_task and not stated_decoder:
        decoder = dict(pre.decoder)
    else:  # no preset decoder: the decoders package decides (YOLO layouts from the output shape) and says why
        decoder, line = decoder_for_task(the_task, _outputs(proto), names, stated_decoder,
                                         TASK_DECODERS.get(the_task), spec.size)
        if line:
            say(line)
            notes.append(line)
    if not decoder:
        raise ConversionError(f"--task {the_task} needs a decoder this model's preset would give (none known for "
                              f"{src.name}); use --task raw to ship the outputs undecoded")
    if the_task == "text_recognition" and not names and meta.get("character"):
        names = list(meta["character"])  # the CTC dictionary the model carries (PP-OCR's 'character')
    if the_task == "raw" and _looks_like_scores(proto):
        notes.append("the output looks like class scores; pass --task classification (and --labels FILE) to get "
                     "top-k names from predict")
    sources = {**resolved.to_dict(), "metadata_keys": meta.get("keys", [])}
    if None in shape:
        sources["dynamic_axes"] = [a for a, d in enumerate(shape) if d is None]  # what the manifest keeps dynamic
    model_name = pre.name if pre else src.stem  # a PyTorch model was exported to <its name>.onnx
    return ModelFacts(model_name, name_in, shape, dtype, pre, spec, sources, the_task, names, decoder, notes)


def _check_stated(pre: Any, preprocess: Optional[PreprocessSpec], resolved: Any, calib: Any, assume: bool,
                  options: Optional[PreprocessOptions], say: Progress, notes: list[str]) -> None:
    """An image calibration source is preprocessed by the bundle's spec: refuse to guess it."""
    images = isinstance(calib, (str, Path)) and Path(calib).suffix.lower() != ".npy"
    if pre is not None or preprocess is not None or resolved.normalization_stated or not images:
        return
    assumed = ", ".join(f"{k}={_short(getattr(resolved.spec, k))}" for k in resolved.assumed)
    if not assume:
        raise ConversionError(
            f"this model has no preset and states no preprocessing, and --calib {calib} holds images: "
            "say how the model was trained to be fed with --normalize imagenet|unit|symmetric|raw (or --mean R,G,B "
            "--std R,G,B --scale S), --color RGB|BGR, --resize stretch|letterbox|crop|fit-height and --layout "
            f"NCHW|NHWC, or pass --assume-preprocess to accept the defaults ({assumed})")
    warning = (f"WARNING: preprocessing ASSUMED, not stated: {assumed}. Calibration, the accuracy check and the "
               "bundle all use it; if the model was trained otherwise its accuracy is lost unnoticed")
    # on stderr even with --quiet: a guess that silently costs accuracy is what this refuses
    _stderr(warning)
    notes.append(warning)


def _short(v: Any) -> str:
    return ",".join(f"{x:.4g}" for x in v) if isinstance(v, tuple) else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _labels(labels: Union[str, Path, Sequence[str], None], meta: dict[str, Any], pre: Any, proto: Any,
            task: str) -> list[str]:
    """Labels from the argument (a list or a file, one name per line), the model metadata or the preset,
    checked against the class count."""
    origin = "--labels"
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        if not path.is_file():
            raise ConversionError(f"--labels {labels}: no such file (expected one class name per line)")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        origin = f"--labels {path.name}"
    elif labels is not None:
        names = [str(v) for v in labels]
    elif meta.get("labels"):
        names, origin = list(meta["labels"]), "the model's metadata labels"
    elif task == "classification" and meta.get("character") and len(meta["character"]) == _class_count(proto):
        # PaddleClas exports carry their class names as 'character', one per line, like a CTC dictionary
        return list(meta["character"])
    else:
        return list(pre.labels) if pre is not None else []
    classes = _class_count(proto)
    if task == "classification" and classes and names and len(names) != classes:
        raise ConversionError(f"{origin} has {len(names)} names but the model's output has {classes} classes: "
                              "give one name per class, in class-index order")
    return names


def _output_dims(proto: Any) -> list[Optional[int]]:
    from converters.passes import input_dims

    outs = proto.graph.output
    return input_dims(outs[0]) if len(outs) == 1 else []


def _outputs(proto: Any) -> list[tuple[str, list[Optional[int]]]]:
    from converters.passes import input_dims

    return [(o.name, input_dims(o)) for o in proto.graph.output]


def _class_count(proto: Any) -> Optional[int]:
    dims = _output_dims(proto)
    return dims[-1] if len(dims) == 2 else None


def _looks_like_scores(proto: Any) -> bool:
    dims = _output_dims(proto)
    return len(dims) == 2 and (dims[-1] or 0) > 1


def _torch_name(model: Any) -> str:
    import re

    cls = type(model).__name__
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls).lower() if cls and cls != "Module" else "model"


# --------------------------------------------------------------------------- candidates

def _candidates(profile: Any, precision: str, backends: Optional[Sequence[str]], measure: bool,
                available: Sequence[str], tflite_ok: bool) -> tuple[list[_Candidate], list[str]]:
    """Variants to build, in the profile's preference order, and notes on what was skipped."""
    notes: list[str] = []
    out: list[_Candidate] = []
    seen: set[tuple[str, str]] = set()

    def add(c: _Candidate) -> None:
        if (c.backend, c.precision) not in seen:
            seen.add((c.backend, c.precision))
            out.append(c)

    for rank, pref in enumerate(profile.backends):
        if backends and pref.backend not in backends:
            continue
        rec = record(pref.backend)
        if rec.engine and pref.backend not in available and measure:
            notes.append(f"{pref.backend} is not installed here: its variants were not built")
            continue
        if rec.needs == "onnx2tf" and not tflite_ok:
            notes.append(f"{pref.backend}: the ONNX -> TFLite converter (onnx2tf) is not installed (make tflite)")
            continue
        wanted = list(pref.precisions) if precision == "auto" else [p for p in pref.precisions if p == precision]
        for p in wanted:
            if p not in PRODUCES.get(pref.backend, ()):
                notes.append(f"{pref.backend} {p}: no converter for it")
                continue
            add(_Candidate(pref.backend, p, pref.device, pref.layout, rank))
        # on AMX-class CPUs the float parts of an int8 IR can run in bf16 too: measure it
        if (pref.backend == "openvino" and precision == "auto" and measure
                and "bf16" in pref.precisions and "int8" in pref.precisions):
            add(_Candidate("openvino", "int8+bf16", pref.device, pref.layout, rank))
        # OpenVINO also runs onnxruntime's QDQ model in int8 (a smaller file than the IR): measure it
        if pref.backend == "openvino" and measure and "int8" in wanted:
            add(_Candidate("openvino", "int8-qdq", pref.device, pref.layout, rank))
    if precision != "auto" and not out:
        # the profile does not list it: build it with the first backend that can
        for rank, pref in enumerate(profile.backends):
            if (not backends or pref.backend in backends) and precision in PRODUCES.get(pref.backend, ()):
                if record(pref.backend).needs == "onnx2tf" and not tflite_ok:
                    continue
                add(_Candidate(pref.backend, precision, pref.device, pref.layout, rank, listed=False))
                notes.append(f"the profile lists no {precision} variant; built {pref.backend} {precision} as asked")
                break
    if not out:
        raise ConversionError(
            f"profile {profile.name} offers nothing this converter can build"
            + (f" with precision {precision}" if precision != "auto" else "")
            + (f" on backends {', '.join(backends)}" if backends else "")
            + (": " + "; ".join(notes) if notes else ""))
    return out, notes


def _choose(variants: list[Any], candidates: list[_Candidate], budget: float, measure: bool,
            keep_best: bool = False, warnings: Sequence[str] = ()) -> tuple[Any, str]:
    ok = [(v, c) for v, c in zip(variants, candidates) if v.ok and v.within(budget) is not False]
    if not ok:
        checked = [v for v in variants if v.ok and v.comparison is not None]
        if keep_best and checked:
            best = min(checked, key=lambda v: v.comparison.drop)
            return best, (f"OVER BUDGET: no variant met the budget ({budget}); --keep-best wrote the closest, "
                          f"drop {best.comparison.drop:.4f}")
        failed = "; ".join(f"{v.name}: {v.error or f'drop {v.comparison.drop:.4f} > {budget}'}" for v in variants)
        why = (" Likely cause: " + " ".join(warnings)) if warnings else ""
        raise ConversionError(f"no variant could be built within the accuracy budget ({budget}): {failed}.{why} "
                              "Pass --keep-best to write the closest variant (marked over budget).")
    if measure:
        timed = [(v, c) for v, c in ok if v.latency]
        if timed:
            best = min(timed, key=lambda vc: (vc[0].latency["p50_ms"], vc[1].rank))
            return best[0], (f"fastest within the accuracy budget measured here "
                             f"({best[0].latency['p50_ms']:.2f} ms p50)")
    v, c = ok[0]
    checked = v.comparison is not None
    return v, ("first in the profile's preference order " + ("within the accuracy budget" if checked
                                                             else "(accuracy not checked: no held-out samples)"))


# --------------------------------------------------------------------------- report

def _plot(path: Path, rows: list[dict[str, Any]], chosen_key: str, title: str) -> bool:
    pts = [r for r in rows if r.get("latency") and r.get("accuracy")]
    if not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for r in pts:
        x = r["latency"]["p50_ms"]
        y = r["accuracy"]["cosine"]
        chosen = r["key"] == chosen_key
        ax.scatter([x], [y], s=90 if chosen else 40, marker="*" if chosen else "o",
                   color="tab:red" if chosen else ("tab:gray" if r.get("within_budget") is False else "tab:blue"))
        ax.annotate(r["key"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xlabel("latency p50 (ms, this machine)")
    ax.set_ylabel("cosine similarity to the original (held-out)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _markdown(report: dict[str, Any], plotted: bool) -> str:
    from .report import Report

    r = report
    rep = Report(f"Conversion report: {r['model']['file']} for {r['profile']['name']}")
    chosen = r["chosen"]
    rep.paragraph(f"**Chosen: {chosen['name']}** ({chosen['backend']}, file {chosen['precision']}, runtime "
                  f"precision {chosen.get('runtime_precision') or chosen['precision']}) - {r['decision']}.")
    rep.paragraph(f"Accuracy budget: drop <= {r['budget']} ({r['accuracy_measure']}). Mode: {r['mode']}. "
                  f"Profile is this host: {r['profile']['is_this_host']}.")
    rows = []
    for v in r["variants"]:
        acc = v.get("accuracy") or {}
        lat = v.get("latency") or {}
        rows.append([v["key"] + (" *" if v["key"] == chosen["key"] else ""), v["precision"],
                     v.get("runtime_precision") or "-", _mb(v.get("size_bytes")), v.get("size_ratio"),
                     lat.get("p50_ms"), v.get("speedup"), acc.get("cosine"), acc.get("cosine_min"),
                     acc.get("max_abs"), acc.get("top1_agreement"), acc.get("drop"),
                     {True: "yes", False: "no", None: "-"}[v.get("within_budget")],
                     (v.get("error") or "")[:120]])
    rep.heading("Variants")
    rep.table(["variant", "file", "runtime", "MB", "size ratio", "p50 ms", "speed-up", "cosine", "worst cos",
               "max abs", "top-1", "drop", "in budget", "error"], rows)
    rep.paragraph("Ratios are against onnxruntime fp32 of the prepared model, measured in the same run on this "
                  "machine (noisy; compare within one report).")
    if plotted:
        rep.image("accuracy_latency.png", "accuracy against latency")
    for v in r["variants"]:
        g = v.get("guard")
        if not g:
            continue
        rep.heading(f"Accuracy guard: {v['key']}", 3)
        rep.paragraph(f"Initial drop {g['initial_drop']:.4f} (budget {g['budget']}); final {g['final_drop']:.4f}; "
                      f"{g['candidates']} quantized layers ranked; stopped: {g['stopped']} ({g['seconds']} s).")
        if g["float_layers"]:
            rep.paragraph("Layers kept float: " + ", ".join(f"`{n}`" for n in g["float_layers"]))
        if g["steps"]:
            rep.table(["step", "layer", "drop after", "kept", "p50 ms"],
                      [[i + 1, s["layer"], s["drop"], "yes" if s["kept"] else "no (put back)", s["latency_ms"]]
                       for i, s in enumerate(g["steps"])])
        if g.get("frontier"):
            rep.paragraph("Accuracy-latency frontier (layers kept float -> drop, p50 ms):")
            rep.table(["float layers", "drop", "within budget", "p50 ms"],
                      [[len(s["excluded"]), s["drop"], "yes" if s["kept"] else "no", s["latency_ms"]]
                       for s in g["frontier"]])
    if r.get("warnings"):
        rep.heading("Warnings")
        rep.bullets(r["warnings"])
    rep.heading("Verified and not verified")
    for v in r["variants"]:
        items = [f"verified: {x}" for x in v.get("verified", [])] + [f"NOT verified: {x}" for x in v.get("not_verified", [])]
        items += [f"note: {x}" for x in v.get("notes", [])]
        if items:
            rep.paragraph(f"**{v['key']}**")
            rep.bullets(items)
    rep.heading("Graph preparation")
    rep.table(["pass", "changes", "s"], [[p["name"], "; ".join(p["changes"]) or "-", p["seconds"]] for p in r["passes"]])
    if r.get("pruning"):
        rep.heading("Pruning")
        rep.paragraph(r["pruning"]["markdown"])
    if r.get("distillation"):
        rep.paragraph(r["distillation"]["markdown"])
    cal = r.get("calibration")
    rep.heading("Calibration and held-out data")
    if cal:
        rep.bullets([f"source: {cal['source']} ({cal['kind']})",
                     f"{cal['calibration']} samples for calibration, {cal['held_out']} held out for the accuracy "
                     f"check ({cal['held_out_source']}); the guard's decisions use the same held-out samples",
                     f"model input {cal['shape']} {cal['dtype']}, preprocessed with the bundle's preprocessing"])
    else:
        rep.paragraph("No calibration data: INT8 static variants were not built and accuracy was not checked.")
    if r.get("notes"):
        rep.heading("Notes")
        rep.bullets(r["notes"])
    return rep.to_markdown()


def _mb(n: Optional[int]) -> Optional[float]:
    return None if n is None else round(n / 1e6, 3)


# --------------------------------------------------------------------------- main

def convert(
    model: Union[str, Path, Any],
    profile: Union[str, Path, Any],
    output: Union[str, Path],
    precision: str = "auto",
    calib: Union[str, Path, np.ndarray, None] = None,
    *,
    max_accuracy_drop: Optional[float] = None,
    input_shape: Optional[Sequence[int]] = None,
    preset: Optional[str] = None,
    preprocess: Optional[PreprocessSpec] = None,
    task: Optional[str] = None,
    labels: Optional[Sequence[str]] = None,
    decoder: Optional[Mapping[str, Any]] = None,
    calib_size: int = 64,
    val: Union[str, Path, np.ndarray, None] = None,
    holdout: float = 0.25,
    calib_method: str = "nncf",
    exclude: Sequence[str] = (),
    eval_fn: Union[str, Callable[[Any], float], None] = None,
    prune: Optional[float] = None,
    prune_criterion: str = "l1",
    lowrank: Optional[float] = None,
    distill: Any = False,
    distill_minutes: float = 10.0,
    resume: bool = False,
    backends: Optional[Sequence[str]] = None,
    measure: Optional[bool] = None,
    accuracy_control: str = "edgesdk",
    guard_steps: int = 8,
    threads: Optional[int] = None,
    bench_seconds: float = 1.0,
    name: Optional[str] = None,
    force: bool = False,
    torch_example: Any = None,
    example_shape: Optional[Sequence[int]] = None,
    preprocess_options: Optional[PreprocessOptions] = None,
    assume_preprocess: bool = False,
    profiles_dirs: Optional[Sequence[Union[str, Path]]] = None,
    progress: Optional[Progress] = _stderr,
    metric: Optional[str] = None,
    keep_best: bool = False,
    options: Optional[ConvertOptions] = None,
) -> ConvertResult:
    """Convert `model` for `profile` and write the bundle at `output` (see the module doc).

    Args:
        model: an ONNX file, a torch.nn.Module (with `torch_example` or `example_shape`), a TorchScript
            (.pt) or ExportedProgram (.pt2) file, or "module:factory" returning a module.
        profile: a device profile name or YAML path (edgesdk.profiles).
        output: the bundle directory to create (refused if it exists, unless `force`).
        precision: auto | fp32 | fp16 | bf16 | int8.
        calib: calibration data: image folder, video, .npy or array (preprocessed as the bundle will).
        max_accuracy_drop: the budget (default 0.02): 1 - cosine, 1 - top-1 agreement for
            classifiers, or the drop of the `eval_fn` metric.
        input_shape: static input shape (dynamic dims must be fixed for edge targets and INT8).
        preset: a known model preset name (default: recognized from the file).
        preprocess: a complete PreprocessSpec (overrides everything else);
        preprocess_options: stated preprocessing fields (edgesdk.preprocess_options), which win over
            the model's metadata and the preset; what is used and where each field came from is in
            the manifest (provenance.preprocess_sources).
        task / labels: override the preset's and the model metadata's (labels: a list or a file).
        decoder: decoder settings to use instead of the chosen ones ({"type": "yolo", "layout": "v5"}).
        assume_preprocess: accept an image calibration source for a model whose normalization
            nobody stated (a loud warning names what was assumed); refused otherwise.
        calib_size: at most this many calibration samples (evenly spaced).
        val: held-out data (same kinds as calib); default: `holdout` of the calibration samples.
        calib_method: nncf (NNCF writes the QDQ) | minmax | movavg | entropy | percentile (onnxruntime static INT8).
        exclude: node names to keep float in INT8 variants.
        eval_fn: user metric `fn(runtime) -> float` or "module:function".
        prune: structured channel pruning ratio before conversion (converters.pruning).
        lowrank / distill / distill_minutes / resume: low-rank factorization energy (converters.lowrank);
            distillation of the compressed model (True) or of an nn.Module student from the original,
            label-free on the calibration data, for at most distill_minutes; resume continues from
            the checkpoint beside `output` (converters.distill).
        backends: only consider these backends of the profile.
        measure: time candidates here (default: when `precision` is auto and the profile is this host).
        accuracy_control: "edgesdk" (own sensitivity guard, fast) or "nncf" (OpenVINO INT8 with
            nncf.quantize_with_accuracy_control; slow).
        guard_steps: at most this many layers tried float by the guard.
        threads: engine threads for checks and timing (default: the profile's, capped by this CPU).
        metric: what the budget is judged on: top1 | top5 | cosine | box-f1 | module:function
            (default from the model: top1 for classifiers, box-f1 with a box decoder, else cosine).
        keep_best: when no variant meets the budget, write the closest (marked over budget).
    """
    from converters.compare import Comparator, load_eval_fn
    from converters.passes import PassContext, default_passes, run_passes
    from converters.variants import BuildSettings, VariantBuilder

    from . import hostinfo, presets
    from .calibration import load_calibration, stderr_progress
    from .profiles import load_profile

    say = progress or (lambda msg: None)
    started = time.perf_counter()
    # one validated home for every setting; `options` replaces the keyword arguments
    opts = options or ConvertOptions(precision=precision, calib=calib, max_accuracy_drop=max_accuracy_drop, input_shape=input_shape, preset=preset, preprocess=preprocess, preprocess_options=preprocess_options, assume_preprocess=assume_preprocess, task=task, labels=labels, decoder=decoder, calib_size=calib_size, val=val, holdout=holdout, calib_method=calib_method, exclude=exclude, eval_fn=eval_fn, prune=prune, prune_criterion=prune_criterion, backends=backends, measure=measure, accuracy_control=accuracy_control, guard_steps=guard_steps, threads=threads, bench_seconds=bench_seconds, name=name, force=force, torch_example=torch_example, example_shape=example_shape, profiles_dirs=profiles_dirs)
    (precision, calib, max_accuracy_drop, input_shape, preset, preprocess, preprocess_options, assume_preprocess, task, labels, calib_size, val, holdout, calib_method, exclude, eval_fn, prune, prune_criterion, backends, measure, accuracy_control, guard_steps, threads, bench_seconds, name, force, torch_example, example_shape, profiles_dirs) = (getattr(opts, f) for f in ("precision", "calib", "max_accuracy_drop", "input_shape", "preset", "preprocess", "preprocess_options", "assume_preprocess", "task", "labels", "calib_size", "val", "holdout", "calib_method", "exclude", "eval_fn", "prune", "prune_criterion", "backends", "measure", "accuracy_control", "guard_steps", "threads", "bench_seconds", "name", "force", "torch_example", "example_shape", "profiles_dirs"))
    budget = opts.budget
    output = Path(output)
    if output.exists() and not force:
        raise BundleError(f"{output} already exists; choose another output or pass --force to replace it")
    prof = load_profile(profile, profiles_dirs) if not hasattr(profile, "backends") else profile
    from converters import guard as int8_guard

    from .accuracy import box_decoder_for, parse_metric

    metric_name, metric_fn = parse_metric(metric)
    eval_fn = metric_fn or eval_fn
    fn = load_eval_fn(eval_fn) if isinstance(eval_fn, str) else eval_fn
    warnings: list[str] = []
    if isinstance(model, (str, Path)) and Path(model).suffix.lower() == ".tflite" and Path(model).is_file():
        from .convert_tflite import convert_tflite

        return convert_tflite(Path(model), prof, output, opts, say)

    import runtimes
    from converters import tflite

    available = runtimes.available_backends()
    try:
        this_host = hostinfo.is_this_host(prof, extra_dirs=profiles_dirs)
    except EdgeSDKError:
        this_host = False
    do_measure = (precision == "auto" and this_host) if measure is None else bool(measure)
    cpu = os.cpu_count() or 1
    threads = threads or max(1, min(int(getattr(prof, "threads", cpu) or cpu), cpu))

    work = Path(tempfile.mkdtemp(prefix=".edgesdk-convert-", dir=output.parent if output.parent.exists() else None))
    try:
        # 1. the model and what it is
        src_path, model_proto = _load_model(model, work, torch_example, say, example_shape)
        facts = _model_facts(model, src_path, model_proto, preset, input_shape, preprocess, preprocess_options,
                             task, labels, calib, assume_preprocess, say, opts.decoder)
        pre, name_in, shape, dtype = facts.preset, facts.input_name, facts.shape, facts.dtype
        spec, the_task, labels = facts.preprocess, facts.task, facts.labels
        name = name or facts.name
        say(f"{src_path.name}: input {name_in} {shape}; preset {pre.name if pre else 'none'}; task {the_task}; "
            f"profile {prof.name} (this host: {this_host}); budget {budget}")

        # 2. graph preparation
        ctx = PassContext(input_shapes={name_in: shape}, work_dir=work)
        prepared_model, records = run_passes(model_proto, default_passes(), ctx)
        prepared = work / "prepared.onnx"
        import onnx

        onnx.save(prepared_model, str(prepared))
        say("graph prepared: " + "; ".join(f"{r.name}: {', '.join(r.changes)}" for r in records if r.changes))
        # 3. calibration and held-out data
        calib_set = fit = held = None
        cal_info = None
        if calib is not None:
            say(f"calibration data: {calib if not isinstance(calib, np.ndarray) else 'array'}")
            calib_set = load_calibration(calib, spec, calib_size, input_shape=shape, input_dtype=dtype,
                                         progress=stderr_progress if progress else None)
            if val is not None:
                fit = calib_set
                held = load_calibration(val, spec, None, input_shape=shape, input_dtype=dtype,
                                        progress=stderr_progress if progress else None)
                held_source = f"--val {held.source}"
            else:
                fit, held = calib_set.split(holdout)
                held_source = (f"{held.source_count} of {calib_set.source_count} sources of the calibration data held "
                               f"out whole ({calib_set.source_rule}), never used to calibrate")
            warnings += int8_guard.data_warnings(fit.samples, len(held), fit.source_count)
            cal_info = {"source": calib_set.source, "kind": calib_set.kind, "calibration": len(fit),
                        "held_out": len(held), "held_out_source": held_source, "shape": shape, "dtype": str(dtype)}
        elif val is not None:
            held = load_calibration(val, spec, None, input_shape=shape, input_dtype=dtype,
                                    progress=stderr_progress if progress else None)
        comparator = None
        if held is not None:
            say(f"reference outputs of the original model on {len(held)} held-out samples")
            comparator = Comparator(src_path if isinstance(model, (str, Path)) else prepared, held.samples,
                                    task=the_task, eval_fn=fn, reference_backend="onnxruntime", metric=metric_name,
                                    box_decoder=box_decoder_for(facts, shape))
            for w in warnings:
                say(f"WARNING: {w}")

        prune_info = None
        if prune:
            from converters.pruning import channel_prune

            say(f"structured channel pruning, ratio {prune} ({prune_criterion})"
                + (", biases compensated on the calibration samples" if fit is not None else ""))
            pruned, prep = channel_prune(prepared_model, prune, criterion=prune_criterion,
                                         input_shapes={name_in: shape},
                                         calib=fit.samples if fit is not None else None)
            onnx.save(pruned, str(prepared))
            prune_info = {"report": prep.to_dict(), "markdown": prep.to_markdown()}
        distill_info = None
        if lowrank or distill is not False:
            from converters import distill as kd

            distill_info = kd.compress_for_convert(
                prepared_model, prepared, pruned=bool(prune), lowrank=lowrank, distill_student=distill,
                fit=fit.samples if fit is not None else None, input_shapes={name_in: shape}, source=str(calib),
                config=kd.DistillConfig(minutes=distill_minutes, resume=resume, threads=threads,
                                        checkpoint=kd.checkpoint_path_for(output)), progress=say)

        # 4. candidates
        cands, cand_notes = _candidates(prof, precision, backends, do_measure, available, tflite.is_available())
        if precision == "int8" and fit is None and any(c.backend != "onnxruntime" for c in cands):
            raise ConversionError("INT8 needs calibration data: pass --calib with a folder of real images, a video "
                                  "or a .npy (never random noise)")
        pref = next((p for p in prof.backends if p.backend == "tensorrt"), None)
        settings = BuildSettings(
            prepared=prepared, work=work / "variants", input_name=name_in, input_shape=shape,
            calib=fit.samples if fit is not None else None, comparator=comparator, budget=budget,
            calib_method=calib_method, exclude=list(exclude), guard_steps=guard_steps,
            accuracy_control=accuracy_control, threads=threads, measure=do_measure, bench_seconds=bench_seconds,
            trt_version=str(dict(prof.software).get("tensorrt", "10.3")).split()[0] if pref else "10.3.0",
            dla_core=pref.option("dla_core") if pref else None, progress=say, model_name=src_path.name)
        builder = VariantBuilder(settings)
        baseline = None
        if do_measure and not any((c.backend, c.precision) == ("onnxruntime", "fp32") for c in cands):
            # ratios are against onnxruntime fp32: build it as a reference row if the profile has none
            baseline = builder.build("onnxruntime", "fp32")
            baseline.key, baseline.name = "baseline-onnxruntime-fp32", "onnxruntime fp32 (baseline)"
        variants = []
        if do_measure:
            # float variants first: the INT8 guard stops when a float variant is as fast
            order = sorted(range(len(cands)), key=lambda i: (cands[i].precision.startswith("int8"), i))
        else:
            order = list(range(len(cands)))
        built: dict[int, Any] = {}
        for i in order:
            c = cands[i]
            if not do_measure and any(v.ok and v.within(budget) is not False for v in built.values()):
                break  # the profile's order decides: the first good variant wins
            if record(c.backend).needs == "onnx2tf" and fit is None and (held is None):
                built[i] = _failed(c, "TFLite conversion needs real samples: pass --calib")
                continue
            say(f"building {c.backend} {c.precision}")
            v = builder.build(c.backend, c.precision)
            if c.layout == "NHWC" and record(v.backend).file_layout != "NHWC":
                v.notes.append("the profile prefers NHWC for this backend; ONNX/IR models stay NCHW")
            if c.device == "GPU" and v.ok and v.backend in ("openvino", "litert"):
                _attach_gpu_recipe(v, work)
            built[i] = v
            status = v.error or (v.comparison.summary() if v.comparison else "built")
            lat = f", {v.latency['p50_ms']:.2f} ms" if v.latency else ""
            say(f"  {v.name}: {status}{lat}")
        builder.close()
        cand_built = [(built[i], cands[i]) for i in sorted(built)]
        variants = [v for v, _ in cand_built]
        if do_measure:
            say(f"timing {sum(v.ok for v in variants) + bool(baseline)} variants again, interleaved in 3 rounds")
            warnings += builder.remeasure(([baseline] if baseline else []) + variants, rounds=3)
        chosen, decision = _choose(variants, [c for _, c in cand_built], budget, do_measure, keep_best, warnings)

        # 5. report and bundle
        base_for_ratio = baseline or next((v for v in variants if v.key == "onnxruntime-fp32" and v.ok), None)
        rows = ([baseline.to_dict(budget, base_for_ratio)] if baseline else []) + \
               [v.to_dict(budget, base_for_ratio) for v in variants]
        measure_kind = ("the eval function's metric" if fn else {
            "top1": "1 - top-1 agreement", "top5": "1 - top-5 agreement", "box-f1": "1 - box F1 vs the original's boxes",
            "cosine": "1 - mean cosine similarity"}[comparator.metric if comparator else "cosine"])
        report: dict[str, Any] = {
            "model": {"file": src_path.name, "sha256": sha256_file(src_path), "input": {"name": name_in, "shape": shape,
                                                                                        "dtype": str(dtype)}},
            "profile": {"name": prof.name, "is_this_host": this_host},
            "mode": ("measured here: fastest within budget" if do_measure else "profile preference order"),
            "precision_asked": precision, "budget": budget, "accuracy_measure": measure_kind,
            "passes": [r.to_dict() for r in records], "pruning": prune_info, "distillation": distill_info,
            "calibration": cal_info,
            "variants": rows, "chosen": chosen.to_dict(budget, base_for_ratio), "decision": decision,
            "notes": facts.notes + cand_notes, "threads": threads, "warnings": warnings,
            "over_budget": chosen.within(budget) is False,
            "preprocess": facts.sources, "options": opts.to_dict(),
            "host": {"machine": platform.machine(), "python": platform.python_version(), "cpus": cpu},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        manifest = _manifest(chosen, src_path, prof, spec, pre, the_task, labels, shape, name_in, dtype, report, name,
                             facts.decoder)

        def write_reports(stage: Path) -> None:
            plotted = _plot(stage / "accuracy_latency.png", rows, chosen.key,
                            f"{src_path.name} on {prof.name}: accuracy vs latency")
            report["seconds"] = round(time.perf_counter() - started, 1)
            (stage / "report.json").write_text(json.dumps(report, indent=2, default=_jsonable))
            (stage / "report.md").write_text(_markdown(report, plotted))
            if distill_info and distill_info.get("plot"):
                shutil.copy(distill_info["plot"], stage / "distill_curve.png")

        files = {rel: p for rel, p in chosen.files.items()}
        bundle = write_bundle(output, files, manifest, overwrite=force, extra_writer=write_reports)
        say(f"bundle written: {output} ({chosen.name}; {decision})")
        return ConvertResult(bundle, chosen, ([baseline] if baseline else []) + variants, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _attach_gpu_recipe(v: Any, work: Path) -> None:
    """OpenCL GPU targets: the bundle runs on the GPU; gpu/ says how to set it up and check it there."""
    from converters import gpu_recipes

    v.files.update(gpu_recipes.write_recipe(work / f"gpu-{v.key}", v.backend, v.model))
    v.device = "GPU"
    v.not_verified.append(gpu_recipes.not_verified(v.backend))


def _failed(c: _Candidate, why: str) -> Any:
    from converters.variants import Variant

    return Variant(f"{c.backend}-{c.precision}", f"{c.backend} {c.precision}", c.backend, c.precision, error=why)


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _manifest(v: Any, src: Path, prof: Any, spec: Optional[PreprocessSpec], pre: Any, task: str,
              labels: Optional[Sequence[str]], shape: list[int], input_name: str, dtype: np.dtype,
              report: dict[str, Any], name: Optional[str], decoder: dict[str, Any]) -> Manifest:
    import runtimes
    from runtimes import TensorSpec

    inputs = outputs = None
    # the specs of the file the bundle ships, read here with an engine that runs it
    local = record(v.backend).checked_with or v.backend
    try:
        with runtimes.load(v.files[v.model], backend=local) as rt:
            inputs, outputs = rt.inputs, rt.outputs
    except EdgeSDKError:
        inputs = None
    if inputs is None:
        inputs = [TensorSpec(input_name, tuple(shape), dtype)]
        outputs = []
    # the layout of the file the bundle ships: its own input spec when it is clear (an NHWC ONNX
    # model stays NHWC), else the variant's (onnx2tf writes NHWC)
    shipped = inputs[0].layout if len(inputs) == 1 and inputs[0].layout in ("NCHW", "NHWC") else None
    layout = shipped or record(v.backend).file_layout or None
    if spec is not None and layout and layout != spec.layout:
        spec = replace(spec, layout=layout)
    if spec is not None and v.input_dtype and v.input_dtype != spec.dtype:
        spec = replace(spec, dtype=v.input_dtype, quantization=v.input_quantization)
    runtime: dict[str, Any] = {"device": v.device}
    # what to ask the runtime for: OpenVINO's hint (bf16 runs an fp32 IR in bf16); engines that
    # run the file as stored (onnxruntime, litert) are only pinned for fp32 files
    if v.runtime_precision:
        runtime["precision"] = v.runtime_precision
    elif v.precision == "fp32":
        runtime["precision"] = "fp32"
    if report.get("mode", "").startswith("measured here"):
        runtime["threads"] = int(report["threads"])  # what the choice was measured with, on this machine
    elif getattr(prof, "threads", None):
        runtime["threads"] = int(prof.threads)
    metrics: dict[str, Any] = {"size_bytes": v.size_bytes}
    if report.get("over_budget"):
        metrics["over_budget"] = True  # written by --keep-best: no variant met the accuracy budget
    if v.comparison is not None:
        metrics["accuracy"] = v.comparison.to_dict()
    if v.latency is not None:
        metrics["latency_here"] = v.latency
    chosen = report["chosen"]
    if "speedup" in chosen:
        metrics["speedup_vs_onnxruntime_fp32"] = chosen["speedup"]
    if "size_ratio" in chosen:
        metrics["size_ratio_vs_onnxruntime_fp32"] = chosen["size_ratio"]
    precision = v.precision if v.precision in ("fp32", "fp16", "bf16", "int8", "mixed") else "fp32"
    return Manifest(
        name=name or (pre.name if pre else src.stem), model=v.model, backend=v.backend, precision=precision,
        inputs=list(inputs), outputs=list(outputs or []), task=task, preprocess=spec,
        decoder=dict(decoder), labels=list(labels or []),
        profile=prof.name, runtime=runtime,
        provenance={"source_file": src.name, "source_sha256": report["model"]["sha256"],
                    "made_by": "edgesdk.convert", "variant": v.key, "variant_name": v.name,
                    "passes": [p["name"] for p in report["passes"]], "decision": report["decision"],
                    "calibration": report.get("calibration"), "verified": v.verified, "not_verified": v.not_verified,
                    "preprocess_sources": report["preprocess"],
                    **({"preset": pre.name} if pre is not None else {})},
        metrics=metrics)


class _CallableModule(sys.modules[__name__].__class__):  # type: ignore[misc]
    """`from edgesdk import convert` finds this module once it is imported (Python sets the
    submodule as the package attribute); calling it calls `convert()`, as users expect."""

    def __call__(self, *args: Any, **kwargs: Any) -> ConvertResult:
        return convert(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
