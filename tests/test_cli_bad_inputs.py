"""Exit codes scripts can trust: every CLI command over a table of bad inputs.

Each row runs `edgesdk ...` in-process through the real entry point (`edgesdk.cli.main`)
and must end with a non-zero exit code, one paragraph on stderr (no blank line inside),
and no traceback (an exception escaping `main` would be one). A few rows also run as a
real `python -m edgesdk` process, for the exit code the shell sees.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgesdk.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bad(tmp_path_factory, cls_model, photos, model_paths, blazeface_model):
    """Named files: good ones to pair with one bad thing at a time, and the bad ones."""
    from edgesdk.presets import make_bundle
    from tinymodels import TinyModels

    d = tmp_path_factory.mktemp("bad")
    good = cls_model.read_bytes()
    files = {"model": cls_model, "missing": d / "missing.onnx", "corrupt": d / "corrupt.onnx",
             "truncated": d / "truncated.onnx", "empty": d / "empty.onnx", "corrupt_tflite": d / "corrupt.tflite",
             "corrupt_xml": d / "corrupt.xml", "photo": d / "photo.png", "bad_image": d / "bad.png",
             "missing_image": d / "missing.png", "bundle": make_bundle(cls_model, d / "bundle").path,
             "labels3": d / "three-labels.txt",
             "not_bundle": d / "not_a_bundle", "corrupt_pkg": d / "corrupt.edgepkg", "empty_pkg": d / "empty.edgepkg",
             "missing_pkg": d / "missing.edgepkg", "root": d / "device-root", "out": d / "out",
             "bad_yaml": d / "bad.yaml", "empty_yaml": d / "empty.yaml", "missing_yaml": d / "missing.yaml",
             "missing_dir": d / "missing-dir",
             # a detector for --then rows, and a model that takes no image (it cannot run on crops)
             "det_bundle": make_bundle(model_paths["blazeface_short.tflite"], d / "bf").path,
             "vector_model": TinyModels(d).add_one(shape=(1, 10), name="vector"),
             "two_inputs": TinyModels(d).two_inputs(),
             "spec_no_sources": d / "no-sources.yaml", "dyn_model": d / "dynamic.onnx",
             "tflite": blazeface_model}
    files["spec_no_sources"].write_text(f"model: {files['bundle']}\nsources: []\n")
    files["labels3"].write_text("a\nb\nc\n")
    rng = np.random.default_rng(0)
    files["corrupt"].write_bytes(rng.bytes(4096))
    _without_preset(cls_model, files["dyn_model"])
    files["truncated"].write_bytes(good[: len(good) // 2])
    files["empty"].write_bytes(b"")
    files["corrupt_tflite"].write_bytes(rng.bytes(4096))
    files["corrupt_xml"].write_text("<net><layers><layer id=")
    files["corrupt_xml"].with_suffix(".bin").write_bytes(b"\0" * 16)
    cv2.imwrite(str(files["photo"]), photos["coffee"])
    files["bad_image"].write_text("this is not an image")
    files["not_bundle"].mkdir()
    (files["not_bundle"] / "readme.txt").write_text("no manifest here")
    files["corrupt_pkg"].write_bytes(rng.bytes(2048))
    files["empty_pkg"].write_bytes(b"")
    files["root"].mkdir()
    files["bad_yaml"].write_text("devices: [unclosed\n  - : :\n")
    files["empty_yaml"].write_text("")
    _run_bad_inputs(files, d, cls_model)
    files["provision_args"] = d / "provision-args.yaml"  # run.args the service's `run --spec` would refuse
    files["provision_args"].write_text("root: r\nallow_unsigned: true\npackages:\n  - name: a\n    path: a.edgepkg\n"
                                       "    run: {sources: [cam.mp4], args: [--loop]}\n")
    return files


def _run_bad_inputs(files: dict, d: Path, cls_model: Path) -> None:
    """`run` inputs checked at the start: a --then bundle without a task or with a 5-channel
    input, and stream specs with a weight <= 0, a gate threshold > 1, a misspelt key. Every
    sink they name is under out/sinks/, which a refused run must leave empty."""
    from edgesdk.presets import make_bundle
    from tinymodels import TinyModels

    files["raw_bundle"] = make_bundle(cls_model, d / "raw", task="raw").path
    files["five_channels"] = TinyModels(d).add_one(shape=(1, 5, 32, 32), name="five_channels")
    sink = d / "out" / "sinks"
    base = f"model: {files['bundle']}\nsinks: [{sink}/spec.jsonl]\n"
    for name, text in {"spec_weight0": f"sources: [{{id: p, uri: {files['photo']}, weight: 0}}]\n",
                       "spec_gate2": f"sources: [{files['photo']}]\ngate: change\ngate_threshold: 2\n",
                       "spec_typo": f"sources: [{files['photo']}]\nslo: 50\n"}.items():
        files[name] = d / f"{name}.yaml"
        files[name].write_text(base + text)


def _without_preset(model: Path, dest: Path) -> None:
    """The classifier ([?,3,?,?]) under another name and hash: no preset says its input size."""
    import onnx

    proto = onnx.load(str(model))
    proto.metadata_props.add(key="copied", value="no preset")
    onnx.save(proto, str(dest))


BAD_MODELS = ["{missing}", "{corrupt}", "{truncated}", "{empty}"]

# (command line with {name} placeholders, what the error must mention)
TABLE: list[tuple[str, str]] = [
    *[(f"info {m}", "") for m in BAD_MODELS + ["{corrupt_tflite}", "{corrupt_xml}", "{not_bundle}"]],
    *[(f"predict {m} {{photo}}", "") for m in BAD_MODELS + ["{corrupt_tflite}", "{not_bundle}"]],
    ("predict {model} {bad_image}", "bad.png"),
    ("predict {model} {missing_image}", "missing.png"),
    ("predict {model} {photo} --backend no-such-backend", "no-such-backend"),
    ("predict {model} {missing_image} --backend no-such-backend", "no-such-backend"),  # the name first
    ("predict {model} {photo} --device XPU", "XPU"),
    ("predict {model} {photo} --precision fp7", "fp7"),
    ("predict {model} {photo} --preset no-such-preset", "no-such-preset"),
    ("predict {model} {photo} --top-k 0", "top-k"),
    ("predict {model} {photo} --threads 0", "threads"),
    ("predict {model} {photo} --batch-size 0", "batch-size"),
    ("predict {model} {photo} --score-threshold 2", "score-threshold"),
    ("predict {bundle} {photo} --task raw", "--task/--labels"),
    ("predict {model} {photo} --labels {labels3}", "3 names"),
    ("predict {model} {photo} --labels {missing_image}", "no such file"),
    ("predict {model} {photo} --task segment", "segment"),
    ("predict {model}", "IMAGES"),
    ("predict {dyn_model} {photo}", "--input-shape"),  # dynamic dims, nothing says their size
    ("predict {model} {photo} --input-shape 1,3,x,5", "input-shape"),
    ("predict {bundle} {photo} --input-shape 1,3,48,192", "input-shape"),
    *[(f"bench {m} --iterations 1 --warmup 0", "") for m in BAD_MODELS],
    ("bench {model} --backend no-such-backend", "no-such-backend"),
    ("bench {model} --backend auto", "not auto"),
    ("bench {model} --batch 0", "batch"),
    ("bench {model} --batch two", "batch"),
    ("bench {model} --size 0x3", "--size"),
    ("bench {model} --size big", "--size"),
    ("bench {model} --device XPU", "XPU"),
    ("bench {model} --precision fp7", "fp7"),
    ("bench {model} --iterations 0", "iterations"),
    ("bench {dyn_model} --iterations 1 --warmup 0", "--input-shape"),  # no 640x640 default
    ("bench {model} --input-shape 1,3,48", "rank"),
    ("bench {model} --input-shape 1,3,x,5", "input-shape"),
    *[(f"convert {m} -o {{out}}/c -p generic-arm64", "") for m in BAD_MODELS],
    ("convert {model} -o {out}/c -p generic-arm64 --profile no-such-profile", "no-such-profile"),
    ("convert {model} -o {out}/c -p generic-arm64 --precision fp7", "fp7"),
    ("convert {model} -o {out}/c -p generic-arm64 --input-shape abc", "input-shape"),
    ("convert {model} -o {out}/c -p generic-arm64 --input-shape 1,3,x,5", "input-shape"),
    ("convert {model} -o {out}/c -p generic-arm64 --input-shape -1,3,48,192", "batch dim"),
    ("convert {model} -o {out}/c -p coral-edgetpu --input-shape 1,3,48,-1", "--input-shape"),  # static-only targets
    ("convert {model} -o {out}/c -p raspberry-pi-4 --backend litert --input-shape 1,3,48,-1", "--input-shape"),
    ("convert {model} -o {out}/c -p generic-arm64 --backend no-such-backend", "no-such-backend"),
    ("convert {model} -o {out}/c -p generic-arm64 --calib {missing_dir}", "missing-dir"),
    ("convert {model} -o {out}/c -p generic-arm64 --max-accuracy-drop -1", "accuracy"),
    ("convert {model} -o {out}/c -p generic-arm64 --prune 2", "prune"),
    ("convert {model} -o {out}/c -p generic-arm64 --refit", "--prune"),  # the refit is of pruned convolutions
    ("convert {model} -o {out}/c -p generic-arm64 --lowrank 0.9 --refit", "--prune"),
    ("convert {model} -o {out}/c -p generic-arm64 --prune 0.3 --refit", "--calib"),  # it fits on real inputs
    ("convert {model} -o {out}/c -p generic-arm64 --distill", "--prune"),  # nothing compressed to distill
    ("convert {model} -o {out}/c -p generic-arm64 --prune 0.3 --distill", "--calib"),
    ("convert {model} -o {out}/c -p generic-arm64 --guard-steps -1", "guard-steps"),
    ("convert {model} -o {out}/c -p generic-arm64 --precision fp32 --qat", "--precision int8"),  # QAT is for INT8
    ("convert {model} -o {out}/c -p generic-arm64 --qat-minutes 0", "qat-minutes"),
    ("convert {model} -o {out}/c -p generic-arm64 --precision int8 --qat", "--calib"),  # QAT trains on real inputs
    ("convert {model} -o {out}/c -p generic-arm64 --decoder-layout v9", "v9"),
    ("convert {model} -o {out}/c -p generic-arm64 --decoder no-such-decoder", "no-such-decoder"),
    ("convert {two_inputs} -o {out}/c -p generic-arm64", "runtimes.load"),  # what to do with a multi-input model
    # a .tflite input is built for litert (as given) or openvino (read from it): another --backend is refused
    ("convert {tflite} -o {out}/c -p generic-arm64 --backend tensorrt", "--backend tensorrt"),
    ("convert {model} -o {out}/c -p generic-arm64 --decoder blazeface --decoder-layout v8", "--decoder-layout"),
    ("convert {model} -o {out}/c -p generic-arm64 --task detection", "--decoder"),  # [N,2] is no YOLO output
    ("convert {model} -o {out}/c -p generic-arm64 --decoder yolo", "--task raw"),
    ("convert {model} -o {out}/c -p generic-arm64 --decoder-layout end2end", "--decoder-layout"),
    ("convert {model} -o {out}/c -p generic-arm64 --decoder-opt top_k", "KEY=VALUE"),
    ("convert {model} -o {out}/c -p generic-arm64 --decoder-opt topk=3", "unknown settings"),  # preset + opt
    ("convert {model} -o {out}/c -p generic-arm64 --decoder mediapipe_ssd", "box regressors"),  # [N,2] is no SSD
    ("convert {tflite} -o {out}/c -p amd-epyc-zen4 --decoder-opt strides=8,16", "anchors"),  # 896 of BlazeFace
    ("convert {model}", "missing option"),
    ("convert {tflite} -o {out}/c -p amd-epyc-zen4 --preset no-such-preset", "'none'"),
    ("convert {tflite} -o {out}/c -p amd-epyc-zen4 --labels {missing_image}", "missing.png"),
    ("convert {model} -o {out}/c -p amd-epyc-zen4 --labels {missing_image}", "no such file"),
    *[(f"run {m} --source {{photo}} --max-frames 1 --no-status", "") for m in BAD_MODELS + ["{not_bundle}"]],
    ("run {bundle} --source {missing_image} --max-frames 1 --no-status", "missing.png"),
    ("run {bundle} --source {bad_image} --max-frames 1 --no-status", "bad.png"),
    ("run {bundle} --source {photo} --backend no-such-backend --no-status", "no-such-backend"),
    ("run {bundle} --source {photo} --profile no-such-profile --no-status", "no-such-profile"),
    ("run {bundle} --source {photo} --batch 0 --no-status", "batch"),
    ("run {bundle} --source {photo} --sink nosuch://x --max-frames 1 --no-status", "nosuch"),
    ("run {det_bundle} --source {photo} --then {vector_model} --max-frames 1 --no-status", "does not take one image"),
    ("run {bundle} --source {photo} --then {bundle} --max-frames 1 --no-status", "detects"),
    ("run {bundle} --source {photo} --replicas 100000 --max-frames 1 --no-status", "replicas"),
    ("run {bundle} --source p={photo} --weight p=0 --max-frames 1 --no-status", "weight"),
    ("run {bundle} --source p={photo} --weight p=-2 --max-frames 1 --no-status", "weight"),
    ("run {bundle} --source p={photo} --weight q=1 --max-frames 1 --no-status", "unknown source"),
    ("run {bundle} --source {photo} --gate change --gate-threshold 1.5 --max-frames 1 --no-status", "gate-threshold"),
    ("run {bundle} --source {photo} --gate change --gate-threshold -0.1 --max-frames 1 --no-status",
     "gate-threshold"),
    ("run {bundle} --source {photo} --replicas 2 --replica-mode streams --backend onnxruntime --max-frames 1 "
     "--no-status", "replica"),
    ("run {bundle} --no-status", "--source"),
    # refused at the start, each with a sink that must not be left behind (half-written or empty)
    ("run {det_bundle} --source {photo} --then {raw_bundle} --sink {out}/sinks/a.jsonl --no-status", "states no task"),
    ("run {det_bundle} --source {photo} --then {five_channels} --sink {out}/sinks/b.jsonl --no-status",
     "five_channels.onnx: its input does not fit image crops"),
    ("run {bundle} --source a={photo} --source b={photo} --sink {out}/sinks/c.mp4 --no-status", "would interleave"),
    ("run {bundle} --source {photo} --replicas 100000 --sink {out}/sinks/d.jsonl --no-status", "replicas"),
    ("run {bundle} --source p={photo} --weight p=0 --sink {out}/sinks/e.jsonl --no-status", "weight"),
    ("run {bundle} --source {photo} --gate change --gate-threshold 2 --sink {out}/sinks/f.jsonl --no-status",
     "gate-threshold"),
    ("run {bundle} --source rtsp://127.0.0.1:9/live --sink {out}/sinks/g.jsonl --no-status", "cannot open stream"),
    ("run {bundle} --source {photo} --reconnect-attempts 0 --sink {out}/sinks/h.jsonl --no-status",
     "--reconnect-attempts"),
    ("run --spec {spec_weight0} --no-status", "weight of source 'p' must be a finite number > 0"),
    ("run --spec {spec_gate2} --no-status", "within [0, 1]"),
    ("run --spec {spec_typo} --no-status", "unknown key 'slo' (did you mean 'slo_ms'?)"),
    ("run --spec {missing_yaml} --no-status", "missing.yaml"),
    ("run --spec {bad_yaml} --no-status", "bad.yaml"),
    ("run --spec {spec_no_sources} --no-status", "sources"),
    ("run {bundle} --spec {spec_no_sources} --no-status", "BUNDLE"),
    ("profiles show no-such-profile", "no-such-profile"),
    ("profiles --profiles-dir {missing_dir} list", "missing-dir"),
    ("profiles list --bogus-option", "bogus"),
    ("detect --root {missing_dir}", "missing-dir"),
    ("detect --profiles-dir {missing_dir}", "missing-dir"),
    ("keygen -o {photo}", ""),
    ("pack {missing_dir} -o {out}/p.edgepkg --version 1.0.0 --unsigned", "missing-dir"),
    ("pack {not_bundle} -o {out}/p.edgepkg --version 1.0.0 --unsigned", ""),
    ("pack {bundle} -o {out}/p.edgepkg --version one --unsigned", "one"),
    ("pack {bundle} -o {out}/p.edgepkg --version 1.0.0 --key {missing}", "missing"),
    ("pack {bundle} -o {out}/p.edgepkg --version 1.0.0 --unsigned --sample {bad_image}", "bad.png"),
    *[(f"verify {p} --allow-unsigned", "") for p in ("{missing_pkg}", "{corrupt_pkg}", "{empty_pkg}")],
    *[(f"install {p} --root {{root}} --allow-unsigned", "") for p in ("{missing_pkg}", "{corrupt_pkg}",
                                                                       "{empty_pkg}")],
    ("install {corrupt_pkg} --root {root} --allow-unsigned --keep 0", "keep"),
    ("rollback --root {root}", ""),
    ("rollback --root {missing_dir}", "missing-dir"),
    ("status --root {missing_dir}", "missing-dir"),
    ("status --root {root} --profile no-such-profile --check-health", ""),
    ("uninstall --root {missing_dir} --yes", "missing-dir"),
    *[(f"provision {y}", "") for y in ("{missing_yaml}", "{bad_yaml}", "{empty_yaml}")],
    ("provision {provision_args} --dry-run", "run.args[0]: '--loop'"),
    ("push {missing_pkg} oci://127.0.0.1:9/r:t --plain-http", "missing"),
    ("push {corrupt_pkg} oci://127.0.0.1:9/r:t --plain-http", ""),
    ("push {corrupt_pkg} not-a-registry-url", "oci://"),
    ("pull oci://127.0.0.1:9/r:t --plain-http -o {out}", "127.0.0.1:9"),
    ("pull http://example.invalid/r:t -o {out}", "oci://"),
    ("canary {missing_pkg} --root {root} --source {photo}", "missing"),
    ("canary {corrupt_pkg} --root {root} --source {photo} --frames 0", "frames"),
    ("mender-artifact {missing_pkg} -t board -o {out}/x.mender", "missing"),
    ("mender-artifact {corrupt_pkg} -t board -o {out}/x.mender", ""),
    ("mender-setup --root {root} --modules-dir {photo} --config {out}/m.json", "modules-dir"),
    ("no-such-command", "no-such-command"),
]


def _argv(row: str, files: dict) -> list[str]:
    return [part.format(**{k: str(v) for k, v in files.items()}) for part in row.split()]


def test_the_table_covers_every_command():
    covered = {row.split()[0] for row, _ in TABLE}
    assert set(COMMANDS) <= covered, f"commands without a bad-input row: {sorted(set(COMMANDS) - covered)}"
    print(f"bad-input table: {len(TABLE)} rows over {len(COMMANDS)} commands")


@pytest.mark.parametrize("row, needle", TABLE, ids=[r for r, _ in TABLE])
def test_bad_input_exits_non_zero_with_one_paragraph(bad, capsys, row, needle):
    argv = _argv(row, bad)
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    # any other exception escapes main: in a real process that is a traceback, and fails here
    err = capsys.readouterr().err.strip()
    assert code != 0, f"exit 0 for {row!r}; stderr: {err[-300:]}"
    assert "Traceback" not in err
    message = _error_paragraph(err)
    assert "internal error" not in message, f"a bad input reached a bug instead of a check: {err!r}"
    if needle:
        assert needle.lower() in message.lower(), err
    sinks = bad["out"] / "sinks"
    assert not sinks.exists() or not list(sinks.iterdir()), f"{row!r} left {list(sinks.iterdir())}"


def _error_paragraph(err: str) -> str:
    """The error: from the last line starting with error:/Error: to the end, one paragraph."""
    lines = err.splitlines()
    starts = [i for i, line in enumerate(lines) if line.lower().startswith("error:")]
    assert starts, f"no 'error:' line on stderr: {err[-400:]!r}"
    block = lines[starts[-1]:]
    assert all(line.strip() for line in block), f"a blank line inside the error: {err!r}"
    assert len(block) <= 4, f"not one paragraph: {err!r}"
    return " ".join(block)


@pytest.mark.parametrize("row, code", [
    ("info {corrupt}", 3),
    ("info {truncated}", 3),
    ("predict {model} {missing_image} --backend no-such-backend", 4),
])
def test_real_process_exit_codes(bad, row, code):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "edgesdk", *_argv(row, bad)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unexpected_exception_is_still_one_paragraph_and_non_zero(capsys, monkeypatch):
    """A bug (ours or an engine's) must not print a traceback either; --debug shows it."""
    from edgesdk.cli import inspect

    def boom(*args, **kwargs):
        raise RuntimeError("engine exploded\n  at frame 1\n  at frame 2")

    monkeypatch.setattr(inspect, "describe_model", boom)
    with pytest.raises(SystemExit) as exit_info:
        main(["info", __file__])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert _error_paragraph(err.strip()).startswith("error: internal error (RuntimeError: engine exploded at frame 1")
    assert "--debug" in err and "Traceback" not in err
    with pytest.raises(RuntimeError, match="engine exploded"):
        main(["--debug", "info", __file__])


def test_runtime_options_are_typed_errors(cls_model):
    import runtimes
    for kwargs, needle in [({"device": "XPU"}, "device 'XPU'"), ({"precision": "fp7"}, "precision 'fp7'"),
                           ({"threads": 0}, "threads must be >= 1"), ({"performance_hint": "fast"}, "'fast'")]:
        with pytest.raises(runtimes.OptionError, match=needle) as err:
            runtimes.load(cls_model, **kwargs)
        assert err.value.exit_code == 2 and isinstance(err.value, ValueError)
