"""`convert(...)`: a trained model -> the bundle that runs best on a device profile, checked.

    from edgesdk.convert import convert
    result = convert("ppocrv4_det.onnx", "intel-xeon-amx", "det.bundle", calib="images/",
                     input_shape=[1, 3, 640, 640])
    print(result.chosen.name, result.bundle.path)

Named stages (edgesdk/conversion/, one module each, like Olive's passes), each a short function
``stage(ctx, *earlier results) -> dataclass``; the report (report.json ``stages``, report.md
"Stages") replays them with their seconds and a one-line summary:
1. prepare: the model as ONNX (a PyTorch module is exported first), its facts (input, stated or
   read preprocessing, task, labels) and the graph preparation passes (static shapes, opset >= 13,
   node names, constant folding, shape inference);
2. data: calibration data (folder / video / .npy) preprocessed exactly as the bundle's
   PreprocessSpec will preprocess at run time, split into calibration and held-out samples, and
   the Comparator holding the original's outputs on the held-out ones;
3. compress: optional structured pruning (`prune=RATIO`), low-rank factorization and distillation
   (after "data": they use the calibration samples);
4. build: candidate variants from the profile's backend preferences (formats and precisions), each
   compared with the original on the held-out samples; INT8 over the accuracy budget keeps its
   most sensitive layers float until the budget holds;
5. choose: with `precision="auto"` on the profile's own hardware, every candidate is timed here
   and the fastest within the budget wins (INT8 is not always faster); elsewhere the profile's
   preference order decides, among candidates within the budget;
6. write: an atomic bundle write (nothing is left behind on errors or Ctrl-C) with report.md,
   report.json and accuracy_latency.png.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from .bundle import Bundle
from .errors import ConversionError
from .labels import read_labels
from .preprocess import PreprocessSpec
from .preprocess_options import PreprocessOptions

from .convert_options import DEFAULT_MAX_DROP, PRECISION_CHOICES, TASK_CHOICES, ConvertOptions  # noqa: F401
from .conversion.candidates import candidates as _candidates  # noqa: F401  (moved; tests import it from here)

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


#: what a user with a multi-input model can do instead (both input routes say it)
MULTI_INPUT_ADVICE = ("; export a graph with one image input (the others fixed as constants), or run this one with "
                      "runtimes.load(...).infer({name: array, ...}) without a bundle")


def _static_shape(model: Any, input_shape: Optional[Sequence[Any]], spec: Optional[PreprocessSpec],
                  batch: int) -> tuple[str, list[Optional[int]], np.dtype]:
    """(input name, shape, dtype): the stated shape (None where -1 keeps a dim dynamic: see
    edgesdk.shapes), else the model's dims with a dynamic batch set to `batch` and dynamic
    spatial dims filled from the preprocessing's size."""
    from onnx import helper

    from converters.freeze_inputs import freeze_advice
    from converters.passes import graph_inputs, input_dims
    from runtimes.dims import merge_stated_dims

    from .shapes import parse_input_shape, show

    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise ConversionError(f"edgesdk convert takes single-input models; this one has {len(inputs)} inputs "
                              f"({', '.join(i.name for i in inputs)}){freeze_advice(model) if inputs else ''}"
                              f"{MULTI_INPUT_ADVICE}")
    vi = inputs[0]
    dims = input_dims(vi)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
    if input_shape is not None:
        shape = parse_input_shape(input_shape) or []
        merge_stated_dims(dims, shape, vi.name, error=ConversionError)  # rank and fixed dims (runtimes.dims)
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


def _filled_dims_note(name: str, dims: Sequence[Optional[int]], shape: Sequence[Optional[int]],
                      sources: Mapping[str, str]) -> Optional[str]:
    """What the dynamic dims of the model's input were set to, and from where (nobody stated them)."""
    from runtimes.dims import show_dims

    axes = [a for a, (d, s) in enumerate(zip(dims, shape)) if d is None and s is not None]
    if not axes:
        return None
    why = (["batch 1"] if 0 in axes else []) + ([f"the rest from the preprocessing size ({sources.get('size', 'preset')})"]
                                                if any(a != 0 for a in axes) else [])
    return (f"input {name} {show_dims(dims)} has dynamic dims: the bundle is built for {show_dims(shape)} "
            f"({'; '.join(why)}); --input-shape sets them, -1 keeps one dynamic (onnxruntime, OpenVINO)")


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
    filled = _filled_dims_note(name_in, dims, shape, resolved.sources) if input_shape is None and dims else None
    if filled:
        say(filled)
        notes.append(filled)
    _check_stated(pre, preprocess, resolved, calib, assume, options, say, notes)
    the_task = task or meta.get("task") or (pre.task if pre else "raw")
    if the_task not in TASK_CHOICES:
        raise ConversionError(f"the task {the_task!r} (from the model's metadata) is not one of {', '.join(TASK_CHOICES)}")
    names = _labels(labels, meta, pre, proto, the_task)
    decoder, names = _task_decoder(the_task, task, pre, meta, _outputs(proto), names, stated_decoder, spec.size, src, say,
                                   notes)
    sources = {**resolved.to_dict(), "metadata_keys": meta.get("keys", [])}
    if None in shape:
        sources["dynamic_axes"] = [a for a, d in enumerate(shape) if d is None]  # what the manifest keeps dynamic
    model_name = pre.name if pre else src.stem  # a PyTorch model was exported to <its name>.onnx
    return ModelFacts(model_name, name_in, shape, dtype, pre, spec, sources, the_task, names, decoder, notes)


def _task_decoder(the_task: str, task: Optional[str], pre: Any, meta: Mapping[str, Any],
                  outputs: list[tuple[str, list[Optional[int]]]], names: list[str],
                  stated_decoder: Optional[Mapping[str, Any]], size: Any, src: Path,
                  say: Progress, notes: list[str]) -> tuple[dict, list[str]]:
    """The decoder of the task (the preset's, with any setting stated over it, or the decoders
    package's choice, said) and the label names it reads, for a model with these (name, dims)
    outputs; what was decided without being told goes to `notes`."""
    from .decoders import decoder_for_task, decoder_over_preset

    chosen = None
    if pre is not None and pre.task == the_task:
        chosen = decoder_over_preset(pre.decoder, pre.name, stated_decoder, outputs, names, the_task)
    # no preset decoder, or another one stated: the decoders package decides (YOLO layouts, SSD anchors), said
    decoder, line = chosen or decoder_for_task(the_task, outputs, names, stated_decoder,
                                               TASK_DECODERS.get(the_task), size)
    if line:
        say(line)
        notes.append(line)
    if not decoder:
        raise ConversionError(f"--task {the_task} needs a decoder this model's preset would give (none known for "
                              f"{src.name}); use --task raw to ship the outputs undecoded")
    if the_task == "text_recognition" and not names and meta.get("character"):
        names = list(meta["character"])  # the CTC dictionary the model carries (PP-OCR's 'character')
    if the_task == "raw" and not task and not meta.get("task") and pre is None:
        line = ("task raw: no preset or model metadata names what the outputs are, so the bundle ships them "
                "undecoded; --task classification|detection|segmentation|text_recognition decodes them")
        say(line)
        notes.append(line)
    if the_task == "raw" and len(outputs) == 1 and len(outputs[0][1]) == 2 and (outputs[0][1][-1] or 0) > 1:
        notes.append("the output looks like class scores; pass --task classification (and --labels FILE) to get "
                     "top-k names from predict")
    return decoder, names


def _check_stated(pre: Any, preprocess: Optional[PreprocessSpec], resolved: Any, calib: Any, assume: bool,
                  options: Optional[PreprocessOptions], say: Progress, notes: list[str]) -> None:
    """An image calibration source is preprocessed by the bundle's spec: refuse to guess it."""
    images = isinstance(calib, (str, Path)) and Path(calib).suffix.lower() != ".npy"
    if pre is not None or preprocess is not None or resolved.normalization_stated or not images:
        return
    assumed = resolved.assumed_text()
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


def _labels(labels: Union[str, Path, Sequence[str], None], meta: dict[str, Any], pre: Any, proto: Any,
            task: str) -> list[str]:
    """Labels from the argument (a list or a file, one name per line), the model metadata or the preset,
    checked against the class count."""
    origin = f"--labels {Path(labels).name}" if isinstance(labels, (str, Path)) else "--labels"
    if labels is not None:
        names = stated_labels(labels)
    elif meta.get("labels"):
        names, origin = list(meta["labels"]), "the model's metadata labels"
    elif meta.get("character") and (task == "detection" or
                                    (task == "classification" and len(meta["character"]) == _class_count(proto))):
        # PaddleClas and PaddleDetection exports carry their class names as 'character', one per line, like
        # a CTC dictionary (a detection decoder checks the count against its head)
        return list(meta["character"])
    else:
        return list(pre.labels) if pre is not None else []
    classes = _class_count(proto)
    if task == "classification" and classes and names and len(names) != classes:
        raise ConversionError(f"{origin} has {len(names)} names but the model's output has {classes} classes: "
                              "give one name per class, in class-index order")
    return names


def stated_labels(labels: Union[str, Path, Sequence[str]]) -> list[str]:
    """--labels as given (edgesdk.labels.read_labels), refused as a ConversionError."""
    return read_labels(labels, ConversionError)


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


def _torch_name(model: Any) -> str:
    import re

    cls = type(model).__name__
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls).lower() if cls and cls != "Module" else "model"


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
    freeze_inputs: Optional[Mapping[str, Sequence[float]]] = None,
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
    prune_max_flops: Optional[float] = None,
    prune_max_activations: Optional[float] = None,
    refit: Optional[bool] = None,
    lowrank: Optional[float] = None,
    distill: Any = False,
    distill_minutes: float = 10.0,
    resume: bool = False,
    qat: bool = False,
    qat_minutes: float = 4.0,
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
        freeze_inputs: {input name: values} baked into the graph as constants (converters.freeze_inputs),
            for a model whose inputs besides the image hold per-deployment values.
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
        refit: least-squares refit of the pruned convolutions on the calibration data (converters.pruning_refit);
            None (default) runs it whenever pruning has calibration data, False skips it, True requires `calib`.
        lowrank / distill / distill_minutes / resume: low-rank factorization energy (converters.lowrank);
            distillation of the compressed model (True) or of an nn.Module student from the original,
            label-free on the calibration data, for at most distill_minutes; resume continues from
            the checkpoint beside `output` (converters.distill).
        qat / qat_minutes: INT8 variants still over the budget after the guard are fine-tuned with
            fake quantization towards the fp32 model on the calibration data (label-free, at most
            qat_minutes each) and judged again (converters.qat).
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
    from .conversion import build, choose, compress, data, prepare, write
    from .conversion.context import decide_measuring, is_tflite, open_context, work_dir

    started = time.perf_counter()
    # one validated home for every setting; `options` replaces the keyword arguments
    opts = options or ConvertOptions(
        precision=precision, calib=calib, max_accuracy_drop=max_accuracy_drop, input_shape=input_shape,
        freeze_inputs=freeze_inputs, preset=preset, preprocess=preprocess, preprocess_options=preprocess_options,
        assume_preprocess=assume_preprocess, task=task, labels=labels, decoder=decoder, calib_size=calib_size,
        val=val, holdout=holdout, calib_method=calib_method, exclude=exclude, eval_fn=eval_fn, prune=prune,
        prune_criterion=prune_criterion, prune_max_flops=prune_max_flops,
        prune_max_activations=prune_max_activations, refit=refit, lowrank=lowrank, distill=distill, distill_minutes=distill_minutes,
        resume=resume, qat=qat, qat_minutes=qat_minutes, backends=backends, measure=measure, accuracy_control=accuracy_control,
        guard_steps=guard_steps, threads=threads, bench_seconds=bench_seconds, name=name, force=force,
        torch_example=torch_example, example_shape=example_shape, profiles_dirs=profiles_dirs, metric=metric,
        keep_best=keep_best)
    ctx = open_context(model, profile, output, opts, progress, started)
    decide_measuring(ctx)
    if is_tflite(model):
        from .convert_tflite import convert_tflite

        return convert_tflite(ctx, Path(model))
    with work_dir(ctx):
        prep = ctx.stage("prepare", prepare.prepare)
        dat = ctx.stage("data", data.split_data, prep)
        comp = ctx.stage("compress", compress.compress, prep, dat)
        built = ctx.stage("build", build.build, prep, dat)
        choice = ctx.stage("choose", choose.choose, built, dat)
        written = ctx.stage("write", write.write, prep, dat, comp, built, choice)
    written.report["stages"] = ctx.replay()  # the write stage's own time, now that it is over
    return ConvertResult(written.bundle, choice.chosen, built.rows, written.report)


class _CallableModule(sys.modules[__name__].__class__):  # type: ignore[misc]
    """`from edgesdk import convert` finds this module once it is imported (Python sets the
    submodule as the package attribute); calling it calls `convert()`, as users expect."""

    def __call__(self, *args: Any, **kwargs: Any) -> ConvertResult:
        return convert(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
