"""`edgesdk info`, `edgesdk predict`, `edgesdk bench`: look at, run and time a model or bundle."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import click
import numpy as np

from ..errors import BundleError, ConfigError, EdgeSDKError, ModelLoadError
from .decoder_flags import decoder_flags, pop_decoder
from .preprocess_flags import pop_preprocess, preprocess_flags

# --------------------------------------------------------------------------- info


def describe_bundle(path: Path) -> dict[str, Any]:
    """Everything `info` shows about a bundle, with each file's hash checked."""
    from ..bundle import MANIFEST, Bundle, sha256_file

    bundle = Bundle.load(path, verify=False)
    m = bundle.manifest
    files = []
    for rel, digest in m.files.items():
        p = bundle.path / rel
        if not p.is_file():
            status = "missing"
        elif sha256_file(p) != digest:
            status = "MODIFIED (sha256 mismatch)"
        else:
            status = "ok"
        files.append({"path": rel, "sha256": digest, "size": p.stat().st_size if p.is_file() else None,
                      "status": status})
    unlisted = sorted(str(p.relative_to(bundle.path)) for p in bundle.path.rglob("*")
                      if p.is_file() and p.name != MANIFEST and str(p.relative_to(bundle.path)) not in m.files)
    d = {"kind": "bundle", "path": str(bundle.path), **m.to_dict(), "files": files, "unlisted_files": unlisted}
    d["model_listed"] = m.model in m.files
    d["ok"] = all(f["status"] == "ok" for f in files) and d["model_listed"]
    return d


def describe_model(path: Path) -> dict[str, Any]:
    """A bare model file: size, hash, preset, and its tensors as each backend that opens it sees them."""
    import runtimes
    from runtimes.registry import BACKENDS, is_available

    from ..bundle import sha256_file
    from ..presets import preset_for

    preset = preset_for(path)
    d: dict[str, Any] = {"kind": "model", "path": str(path), "size": path.stat().st_size,
                         "sha256": sha256_file(path), "preset": preset.name if preset else None,
                         "backends": {}}
    if preset is not None:
        d["preset_description"] = preset.description
        d["preprocess"] = preset.preprocess.to_dict()
        d["task"], d["decoder"], d["labels"] = preset.task, preset.decoder, list(preset.labels)
    suffix = path.suffix.lower()
    for name in BACKENDS:
        if not is_available(name):
            continue
        cls = runtimes.backend_class(name)
        if suffix not in cls.suffixes:
            continue
        try:
            with runtimes.load(path, backend=name) as rt:
                d["backends"][name] = {"inputs": [s.to_dict() for s in rt.inputs],
                                       "outputs": [s.to_dict() for s in rt.outputs],
                                       "precision": rt.precision, "device": rt.device}
        except EdgeSDKError as exc:
            d["backends"][name] = {"error": str(exc)}
    if suffix == ".onnx":
        d["onnx"] = _onnx_facts(path)
    return d


def _onnx_facts(path: Path) -> dict[str, Any]:
    try:
        import onnx
    except ImportError:
        return {"note": "install onnx for opset and graph facts"}
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends for corrupt files
        return {"error": f"onnx could not parse the file: {str(exc)[:200]}"}
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    # some exporters (PaddlePaddle) store weights as Constant nodes instead of initializers
    params += sum(int(np.prod(a.t.dims)) for n in model.graph.node if n.op_type == "Constant"
                  for a in n.attribute if a.name == "value")
    return {"ir_version": model.ir_version,
            "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "nodes": len(model.graph.node), "parameters": params,
            "top_ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])[:8])}


def _spec_line(s: dict) -> str:
    from runtimes.dims import show_dims

    dims = show_dims(s["shape"])
    return f"{s['name']}: {s['dtype']}[{dims}] {s.get('layout') or ''}".rstrip()


def _print_info(d: dict[str, Any]) -> None:
    echo = click.echo
    if d["kind"] == "bundle":
        echo(f"bundle    {d['path']}")
        echo(f"name      {d['name']} {d['version']}   task {d['task']}   schema {d['schema_version']}")
        echo(f"model     {d['model']}   backend {d['backend']}   precision {d['precision']}"
             + (f"   profile {d['profile']}" if d.get("profile") else ""))
        if d.get("runtime"):
            echo(f"runtime   {json.dumps(d['runtime'])}")
        echo("files")
        for f in d["files"]:
            size = f"{f['size']:,} B" if f["size"] is not None else "-"
            echo(f"  {f['status']:<28} {f['path']}  ({size}, sha256 {f['sha256'][:12]}...)")
        if not d["model_listed"]:
            echo(f"  the model file {d['model']!r} is not listed in the manifest's files")
        for rel in d["unlisted_files"]:
            echo(f"  unlisted                     {rel}")
        echo("inputs")
        for s in d["inputs"]:
            echo(f"  {_spec_line(s)}")
        echo("outputs")
        for s in d["outputs"]:
            echo(f"  {_spec_line(s)}")
        _print_pre_dec(d.get("preprocess"), d.get("decoder"), d.get("labels"))
        if d.get("provenance"):
            echo("provenance")
            for k, v in d["provenance"].items():
                echo(f"  {k}: {v}")
        if d.get("metrics"):
            echo("metrics")
            for k, v in d["metrics"].items():
                echo(f"  {k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}")
        return
    echo(f"model     {d['path']}")
    echo(f"size      {d['size']:,} bytes   sha256 {d['sha256']}")
    echo(f"preset    {d['preset'] or '(none known: predict will guess preprocessing and print raw outputs)'}"
         + (f" - {d['preset_description']}" if d.get("preset_description") else ""))
    onnx_facts = d.get("onnx")
    if onnx_facts:
        if "opsets" in onnx_facts:
            opsets = ", ".join(f"{k} {v}" for k, v in onnx_facts["opsets"].items())
            echo(f"onnx      ir {onnx_facts['ir_version']}, opset {opsets}, {onnx_facts['nodes']} nodes, "
                 f"{onnx_facts['parameters']:,} parameters, producer {onnx_facts['producer'] or '-'}")
            echo("          ops: " + ", ".join(f"{k} {v}" for k, v in onnx_facts["top_ops"].items()))
        else:
            echo(f"onnx      {onnx_facts.get('error') or onnx_facts.get('note')}")
    if not d["backends"]:
        echo("backends  none installed opens this file type")
    for name, b in d["backends"].items():
        if "error" in b:
            echo(f"{name}: cannot open: {b['error']}")
            continue
        echo(f"{name} ({b['device']}, runs {b['precision']})")
        for s in b["inputs"]:
            echo(f"  in   {_spec_line(s)}")
        for s in b["outputs"]:
            echo(f"  out  {_spec_line(s)}")
    if d.get("preset"):
        _print_pre_dec(d.get("preprocess"), d.get("decoder"), d.get("labels"))


def _print_pre_dec(pre: Optional[dict], dec: Optional[dict], labels: Optional[list]) -> None:
    if pre:
        size = "x".join(str(v) for v in pre["size"]) if pre.get("size") else "image size"
        if pre.get("size") and pre.get("dynamic_width"):
            size = f"{pre['size'][0]}x(each image's width, at least {pre['size'][1]})"
        extra = ""
        if not pre.get("size") and pre.get("limit_side_len"):
            extra = f" (limit {pre['limit_type']} side {pre['limit_side_len']})"
        click.echo(f"preprocess {size}{extra} {pre['resize']}, {pre['color']}, x*{pre['scale']:.6g} "
                   f"mean {pre['mean']} std {pre['std']}, {pre['layout']} {pre['dtype']}"
                   + (f", multiple of {pre['size_multiple']}" if pre.get("size_multiple", 1) > 1 else ""))
    else:
        click.echo("preprocess none (feed arrays)")
    if dec:
        settings = ", ".join(f"{k}={v}" for k, v in dec.items() if k not in ("type", "keypoint_names"))
        click.echo(f"decoder   {dec.get('type', '?')}: {settings}")
    if labels:
        shown = ", ".join(labels[:10]) + (f", ... ({len(labels)} labels)" if len(labels) > 10 else "")
        click.echo(f"labels    {shown}")


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(path: Path, as_json: bool) -> None:
    """Show a bundle (manifest, files and their hash status, tensors, preprocessing) or a bare
    model (tensors per backend that opens it, opset and size for ONNX)."""
    if path.is_dir():
        d = describe_bundle(path)
    elif path.is_file():
        d = describe_model(path)
    else:
        raise BundleError(f"{path} does not exist (expected a model file or a bundle directory)")
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
    else:
        _print_info(d)
    if d["kind"] == "model":
        _raise_if_it_loads_nowhere(path, d["backends"])
    if d["kind"] == "bundle" and not d["ok"]:
        bad = [f"{f['path']} {f['status']}" for f in d["files"] if f["status"] != "ok"]
        if not d["model_listed"]:
            bad.append(f"model {d['model']} not listed")
        raise BundleError(f"{path} fails verification: {'; '.join(bad)}; rebuild or re-install the bundle")


def _raise_if_it_loads_nowhere(path: Path, backends: dict[str, Any]) -> None:
    """`info` could not do what was asked when no backend opens the model: exit 3, not 0."""
    if not backends:
        raise ModelLoadError(f"no installed backend opens {path.suffix or 'suffix-less'} files like {path.name}; "
                             "install the backend for this format (see edgesdk info on a .onnx/.xml/.tflite file)")
    if all("error" in b for b in backends.values()):
        raise ModelLoadError(f"{path.name} loads on none of the installed backends ({', '.join(backends)}; "
                             "each one's reason is printed above); re-export or re-download the model")


def check_runtime_options(backends: Optional[str], device: str, precision: Optional[str],
                          threads: Optional[int] = None, allow_auto: bool = True) -> None:
    """Refuse an unknown backend name, device or precision before any heavy work.
    `backends` is a name, "auto", "all" or a comma list of names."""
    from runtimes.base import check_runtime_options as check_values
    from runtimes.registry import AUTO, check_backend_name

    if backends and backends.lower() != "all":
        for name in backends.split(","):
            if check_backend_name(name.strip()) == AUTO and not allow_auto:
                raise ConfigError("bench times named backends: pass 'all' or names such as onnxruntime,openvino, "
                                  f"not {AUTO}")
    check_values(device, precision, threads)


# --------------------------------------------------------------------------- predict


def _result_lines(task: str, result: Any, top_k: int) -> list[str]:
    from ..decoders.raw import summarize

    if "text" in result.meta:
        return [f"  {result.meta['text']!r}  (score {result.meta.get('score', 0):.3f})"]
    if "class_share" in result.meta:
        return [f"  {name:<16} {share:.1%} of the pixels" for name, share in result.meta["class_share"].items()]
    if task == "classification" or (result.topk and not len(result)):
        return [f"  {lbl:<16} {score:.4f}" for cid, lbl, score in result.topk[:top_k]]
    if "outputs" in result.meta and not len(result):
        return [f"  {name}: {summarize(arr)}" for name, arr in result.meta["outputs"].items()]
    lines = []
    for i in range(len(result)):
        label = result.labels[i] if result.labels else str(int(result.class_ids[i]))
        box = ", ".join(f"{v:.0f}" for v in result.boxes[i])
        lines.append(f"  {label:<8} {result.scores[i]:.3f}  box [{box}]")
    return lines


def _json_result(image: str, result: Any, full: bool = False) -> dict[str, Any]:
    from ..decoders.raw import summarize

    d = {"image": image, **result.to_dict()}
    if "text" in result.meta:
        d["text"], d["text_score"] = result.meta["text"], result.meta.get("score")
    if "mask" in result.meta:
        d["class_share"] = result.meta.get("class_share")
    if "outputs" in result.meta:
        d["outputs"] = {name: {"shape": list(np.shape(a)), "summary": summarize(a),
                               **({"values": np.asarray(a).tolist()} if full or np.size(a) <= 64 else {})}
                        for name, a in result.meta["outputs"].items()}
    return d


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--backend", default=None,
              help="onnxruntime, openvino, litert or auto (the first that loads it; default: bundle's / by suffix).")
@click.option("--device", default="CPU", show_default=True, help="CPU, GPU, NPU or AUTO.")
@click.option("--precision", default=None, help="Ask the runtime for fp32/fp16/bf16/int8 (default: pinned).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Engine threads.")
@click.option("--preset", default=None,
              help="Preset for a bare model (default: looked up by hash/name; 'none': no preset).")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Classes to show.")
@click.option("--score-threshold", type=click.FloatRange(0, 1), default=None,
              help="Detection: override the minimum score.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per engine call.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image (JSON lines).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="Refuse images with more pixels, checked from the header before decoding "
                   "(default: EDGESDK_MAX_PIXELS or 100,000,000).")
@click.option("--raw-outputs", is_flag=True, help="With --json: every output value, not only a summary.")
@click.option("--save-masks", type=click.Path(path_type=Path), default=None,
              help="Segmentation: write each image's class-id mask as DIR/<image>.mask.png.")
@click.option("--input-shape", "input_shape", default=None,
              help="Bare model with dynamic dims: the shape to feed, e.g. 1,3,224,224; -1 keeps a dim dynamic "
                   "(1,3,48,-1 with --resize fit-height: each image's own width).")
@click.option("--task", type=click.Choice(["classification", "detection", "segmentation", "raw"]), default=None,
              help="Bare model: what its outputs are (default: the preset's or the model metadata's, else raw).")
@click.option("--labels", "labels_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Bare model: class names, one per line in class-index order.")
@decoder_flags
@preprocess_flags
def predict(model: Path, images: tuple[Path, ...], backend: Optional[str], device: str, precision: Optional[str],
            threads: Optional[int], preset: Optional[str], top_k: int, score_threshold: Optional[float],
            batch_size: Optional[int], as_json: bool, max_pixels: Optional[int], raw_outputs: bool,
            save_masks: Optional[Path], input_shape: Optional[str] = None, task: Optional[str] = None,
            labels_file: Optional[Path] = None, **flags: Any) -> None:
    """Run MODEL (a bundle directory or a model file) on IMAGE files and print the results:
    top-k classes, detections (boxes in image pixels), or a summary of raw outputs."""
    from ..predictor import Predictor
    from ..imageio import read_image, set_max_pixels
    from ..shapes import parse_input_shape

    check_runtime_options(backend, device, precision, threads)
    shape = parse_input_shape(input_shape)  # a typo fails before the images are read
    set_max_pixels(max_pixels)
    # read every image first: a bad path fails before the model loads
    loaded = [read_image(p) for p in images]
    kw: dict[str, Any] = {"device": device}
    if precision:
        kw["precision"] = precision
    if threads:
        kw["threads"] = threads
    stated, decoder = pop_preprocess(flags), pop_decoder(flags)
    if stated and model.is_dir():
        raise ConfigError(f"{stated.describe()}: a bundle records its own preprocessing; these flags are for bare "
                          "model files (re-convert the bundle to change it)")
    if (task or labels_file) and model.is_dir():
        raise ConfigError("--task/--labels: a bundle records its own task and labels; these options are for bare "
                          "model files (re-convert the bundle with edgesdk convert --task/--labels to change them)")
    with Predictor(model, backend=backend, preset=preset, batch_size=batch_size, preprocess_options=stated,
                   input_shape=shape, task=task, labels=labels_file, decoder=decoder, **kw) as p:
        dec = p.decoder
        if hasattr(dec, "top_k"):
            dec.top_k = max(dec.top_k, top_k)
        if score_threshold is not None:
            for attr in ("score_threshold", "box_thresh"):
                if hasattr(dec, attr):
                    setattr(dec, attr, score_threshold)
        results = p.predict(loaded)
        if not as_json:
            pre = p.manifest.provenance.get("preset")
            click.echo(f"{p.manifest.name} ({p.task}) on {p.runtime.backend}/{p.runtime.device}, "
                       f"precision {p.runtime.precision}" + (f", preset {pre}" if pre and p.bundle is None else ""),
                       err=True)
            choice = p.manifest.provenance.get("decoder_choice") if p.bundle is None else None
            if hasattr(p.decoder, "describe"):  # a decoder whose settings were chosen, not known: say so
                click.echo(p.decoder.describe(), err=True)
            elif choice:
                click.echo(choice, err=True)
    if save_masks is None and not as_json and any("mask" in r.meta for r in results):
        click.echo("(pass --save-masks DIR to write each mask as a PNG of class ids)", err=True)
    for path, result in zip(images, results):
        mask_path = None
        if save_masks is not None and "mask" in result.meta:
            mask_path = save_masks / f"{Path(path).stem}.mask.png"
            _write_mask(mask_path, result.meta["mask"])
        if as_json:
            row = _json_result(str(path), result, raw_outputs)
            click.echo(json.dumps({**row, **({"mask_path": str(mask_path)} if mask_path else {})}))
            continue
        n = len(result)
        if p.task in ("detection", "text_detection"):
            noun = p.decoder.label(0) if len(p.decoder.labels) == 1 else "object"
            noun = {"text": "text region"}.get(noun, noun)
            head = f"{path}: {n} {noun}{'' if n == 1 else 's'}"
        else:
            head = f"{path}:"
        click.echo(f"{head}  ({result.meta.get('infer_ms', 0):.1f} ms batch of {result.meta.get('batch_size', 1)})")
        for line in _result_lines(p.task, result, top_k):
            click.echo(line)
        if mask_path is not None:
            click.echo(f"  mask: {mask_path}")


def _write_mask(dest: Path, mask: np.ndarray) -> None:
    import os

    import cv2

    dest.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", mask)
    if not ok:
        raise ConfigError(f"cannot encode the mask for {dest.name}")
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(data.tobytes())
    os.replace(part, dest)  # never a half-written mask


# --------------------------------------------------------------------------- bench


def _parse_size(text: Optional[str]) -> Optional[tuple[int, int]]:
    if not text:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        if h < 1 or w < 1:
            raise ValueError
    except ValueError:
        raise ConfigError(f"--size takes HEIGHTxWIDTH such as 640x640, got {text!r}") from None
    return h, w


class _Progress:
    """One status line on stderr, redrawn in place on a terminal, one line per config otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last_label: Optional[str] = None

    def __call__(self, label: str, done: int, total: Optional[int]) -> None:
        of = f"/{total}" if total else ""
        if self.tty:
            click.echo(f"\r\033[K  {label}: {done}{of} calls", nl=False, err=True)
        elif label != self.last_label:
            click.echo(f"  {label} ...", err=True)
        self.last_label = label

    def close(self) -> None:
        if self.tty and self.last_label is not None:
            click.echo("\r\033[K", nl=False, err=True)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--backend", "backends", default="all", show_default=True,
              help="'all' (every installed backend that opens the file) or a comma list: onnxruntime,openvino.")
@click.option("--batch", "batches", default=None, help="Batch sizes, comma separated: 1,4,8 (default: the batch of "
              "--input-shape, else 1).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Engine threads (default: engine's).")
@click.option("--precision", default=None,
              help="Ask for fp32/fp16/bf16/int8 (default: the model's own, pinned; OpenVINO stays f32).")
@click.option("--device", default="CPU", show_default=True)
@click.option("--iterations", type=click.IntRange(min=1), default=50, show_default=True, help="Timed calls per row.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Time each row for at least this long (and at least --iterations calls).")
@click.option("--size", default=None, help="HEIGHTxWIDTH for dynamic image inputs (default: the bundle's or preset's).")
@click.option("--input-shape", "input_shape", default=None,
              help="Shape to feed, e.g. 1,3,48,320 (default: the bundle's, the preset's, else the model's static dims; "
                   "a dynamic dim nothing fills is refused).")
@click.option("--hint", type=click.Choice(["latency", "throughput"]), default="latency", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="Write a Markdown (.md) or HTML (.html) report and a PNG latency plot beside it.")
def bench(model: Path, backends: str, batches: Optional[str], threads: Optional[int], precision: Optional[str],
          device: str, iterations: int, warmup: int, seconds: Optional[float], size: Optional[str],
          input_shape: Optional[str], hint: str, as_json: bool, report: Optional[Path]) -> None:
    """Latency (p50/p90/p99) and throughput of MODEL per backend x batch size."""
    from ..benchmark import HEADERS, benchmark, table_rows, write_report
    from ..report import text_table
    from ..shapes import parse_input_shape, show

    check_runtime_options(backends, device, precision, threads, allow_auto=False)
    parsed_size = _parse_size(size)
    shape = parse_input_shape(input_shape)
    progress = _Progress()
    click.echo(f"benchmarking {model} ...", err=True)
    try:
        result = benchmark(model, backends=backends, batches=batches or (str(shape[0]) if shape else "1"),
                           threads=threads, precision=precision, device=device, iterations=iterations, warmup=warmup,
                           seconds=seconds, size=parsed_size, performance_hint=hint, progress=progress,
                           input_shape=shape)
    finally:
        progress.close()
    fed = next((r.input_shape for r in result.rows if r.input_shape), None)
    if fed:  # what was timed, and which fact chose it
        click.echo(f"input shape {show(fed)} (from {result.settings.get('input_shape_source', 'the model')})", err=True)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        click.echo(text_table(HEADERS, table_rows(result)))
        for r in result.rows:
            if r.error:
                click.echo(f"{r.backend} batch {r.batch}: {r.error}", err=True)
    if report is not None:
        for written in write_report(result, report):
            click.echo(f"wrote {written}", err=True)
    if not any(r.ok for r in result.rows):
        raise EdgeSDKError("every benchmark configuration failed (see the errors above)")
