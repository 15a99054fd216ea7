"""A .tflite model as convert input (the real BlazeFace): the LiteRT file and OpenVINO IR read from
it, both checked against the original; the bundle stays NHWC and finds the face."""
from __future__ import annotations

import json

import cv2
import pytest

from clitools import cli, convert_args


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):
        cv2.imwrite(str(d / f"{name}.png"), photos[name])
    return d


def test_blazeface_tflite_converts_to_a_checked_nhwc_bundle(blazeface_model, photo_dir, tmp_path, capsys):
    out = tmp_path / "faces.bundle"
    args = ["convert", str(blazeface_model), "-p", "amd-epyc-zen4", "--calib", str(photo_dir), "-o", str(out), "-q"]
    code, text, err = cli(args, capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    rows = {v["key"]: v for v in report["variants"]}
    assert {"litert-asis", "openvino-fp32"} <= set(rows)
    assert rows["openvino-fp32"]["accuracy"]["cosine"] > 0.999  # the same network, read by another engine
    m = json.loads((out / "manifest.json").read_text())
    assert m["name"] == "blazeface_short" and m["preprocess"]["layout"] == "NHWC" and m["task"] == "detection"
    code, text, _ = cli(["predict", str(out), str(photo_dir / "astronaut.png")], capsys)
    assert code == 0 and "1 face" in text


def test_a_broken_tflite_file_gets_one_line(photo_dir, tmp_path, capsys):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"not a flatbuffer" * 10)
    code, _, err = cli(convert_args(bad, tmp_path / "b", photo_dir, "--normalize", "unit"), capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "broken.tflite" in err
    assert not (tmp_path / "b").exists()


def test_an_explicit_precision_no_variant_reaches_is_refused(blazeface_model, photo_dir, tmp_path, capsys):
    # a float .tflite asked for INT8 came back as the fp32 file, exit 0, silently
    out = tmp_path / "int8.bundle"
    args = ["convert", str(blazeface_model), "-p", "amd-epyc-zen4", "--calib", str(photo_dir), "-o", str(out),
            "--precision", "int8", "--exclude", "conv1", "-q"]
    code, _, err = cli(args, capsys)
    assert code != 0 and "--precision int8: no int8 variant of" in err and "--precision auto" in err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0] and not out.exists()


def test_exclude_on_a_tflite_input_is_said_not_applied(blazeface_model, photo_dir, tmp_path, capsys):
    out = tmp_path / "fp32.bundle"
    args = ["convert", str(blazeface_model), "-p", "amd-epyc-zen4", "--calib", str(photo_dir), "-o", str(out),
            "--precision", "fp32", "--exclude", "conv1"]
    code, text, err = cli(args, capsys)
    assert code == 0, err
    assert "--exclude conv1: not applied" in text + err
    assert "--exclude conv1: not applied" in (out / "report.md").read_text()
    rows = json.loads((out / "report.json").read_text())["variants"]
    assert {r["precision"] for r in rows} == {"fp32"}


def test_a_tflite_input_gets_the_onnx_routes_split_verdicts_and_warnings(blazeface_model, cls_model, photo_dir,
                                                                         tmp_path, capsys):
    """The .tflite route said 'every 4th sample' (it split by source like the ONNX route), judged no
    variant (no Verdict, no 'not confidently within') and gave no data warnings."""
    from converters.guard import MIN_HELD_OUT

    out = tmp_path / "faces.bundle"
    code, text, err = cli(["convert", str(blazeface_model), "-p", "amd-epyc-zen4", "--calib", str(photo_dir),
                           "--precision", "fp32", "-o", str(out), "-q"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    onnx_out = tmp_path / "cls.bundle"
    code, _, err = cli(convert_args(cls_model, onnx_out, photo_dir, "--normalize", "unit"), capsys)
    assert code == 0, err
    onnx_report = json.loads((onnx_out / "report.json").read_text())
    split = report["calibration"]["held_out_source"]
    assert split == onnx_report["calibration"]["held_out_source"] and "held out whole" in split  # one split
    n = report["calibration"]["held_out"]
    for row in report["variants"]:
        v = row["verdict"]
        assert v["split"] == split and v["samples"] == n and v["verdict"] == "not confidently within"
    chosen = report["chosen"]["verdict"]
    assert report["decision"].endswith(f"drop {chosen['summary'].split('drop ')[1].split(':')[0]}: "
                                       "not confidently within the budget")
    line = next(w for w in report["warnings"] if w.startswith(f"only {n} held-out samples"))
    assert f"add at least {MIN_HELD_OUT - n} more images" in line and f"WARNING: {line}" in text
    assert any("the calibration set has" in w for w in report["warnings"]) == any(
        "the calibration set has" in w for w in onnx_report["warnings"])
    md = (out / "report.md").read_text()
    assert f"- litert-asis: {report['variants'][0]['verdict']['summary']}" in md and f"- {line}" in md


def test_val_is_the_held_out_set_of_a_tflite_input_too(blazeface_model, photo_dir, tmp_path, capsys):
    val = tmp_path / "val"
    val.mkdir()
    for p in sorted(photo_dir.iterdir())[:2]:
        (val / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "faces.bundle"
    code, _, err = cli(["convert", str(blazeface_model), "-p", "amd-epyc-zen4", "--calib", str(photo_dir),
                        "--val", str(val), "--precision", "fp32", "--backend", "litert", "-o", str(out), "-q"], capsys)
    assert code == 0, err
    cal = json.loads((out / "report.json").read_text())["calibration"]
    assert cal["held_out_source"].startswith("--val ") and cal["held_out"] == 2 and cal["calibration"] == 5


def test_a_tflite_input_builds_only_the_ir_precisions_the_profile_lists(blazeface_model, photo_dir, tmp_path,
                                                                        capsys):
    # generic-arm64 leaves fp16 out (Armv8.0 cores have no FP16 arithmetic); an fp16 IR was built anyway
    out = tmp_path / "arm.bundle"
    args = ["convert", str(blazeface_model), "-p", "generic-arm64", "--calib", str(photo_dir), "-o", str(out), "-q"]
    code, _, err = cli(args, capsys)
    assert code == 0, err
    rows = json.loads((out / "report.json").read_text())["variants"]
    assert {r["key"] for r in rows} == {"litert-asis", "openvino-fp32"}


def test_a_profile_without_openvino_gets_no_ir_from_a_tflite_and_is_told(blazeface_model, photo_dir, tmp_path,
                                                                         capsys):
    out = tmp_path / "jetson.bundle"
    args = ["convert", str(blazeface_model), "-p", "jetson-orin-nano", "--calib", str(photo_dir), "-o", str(out)]
    code, text, err = cli(args, capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert {r["key"] for r in report["variants"]} == {"litert-asis"}
    said = "lists no openvino fp32/fp16/bf16: no OpenVINO IR was built (--backend openvino builds one)"
    assert said in text + err and any(said in n for n in report["notes"])


def test_a_tflite_input_is_timed_and_gets_the_profiles_bf16_when_measuring(blazeface_model, photo_dir, tmp_path,
                                                                           capsys):
    """On its own host a .tflite was never timed (the route skipped the measuring decision) and the
    profile's first choice, OpenVINO bf16, was never built: the profile order picked fp32 untimed.
    --measure stands in for "this host is the profile's" so the test holds on any machine."""
    out = tmp_path / "timed.bundle"
    args = ["convert", str(blazeface_model), "-p", "amd-epyc-zen4", "--calib", str(photo_dir), "-o", str(out),
            "--measure", "--bench-seconds", "0.3", "-q"]
    code, _, err = cli(args, capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    rows = {v["key"]: v for v in report["variants"]}
    assert {"litert-asis", "openvino-bf16", "openvino-fp32"} <= set(rows)
    assert rows["openvino-bf16"]["runtime_precision"] == "bf16" and rows["openvino-fp32"]["runtime_precision"] == "fp32"
    assert all(r["latency"]["p50_ms"] > 0 for r in rows.values())
    assert report["mode"].startswith("measured here") and report["decision"].startswith("fastest within")
    assert rows["litert-asis"]["speedup"] == 1.0 and "speedup" in rows["openvino-fp32"]
    assert "Ratios are against litert (the .tflite as given), the original file" in (out / "report.md").read_text()
    chosen = report["chosen"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["runtime"]["precision"] == (chosen["runtime_precision"] or chosen["precision"])


def test_bf16_asked_of_a_tflite_input_is_the_fp32_ir_run_with_the_hint(blazeface_model, photo_dir, tmp_path,
                                                                        capsys):
    out = tmp_path / "bf16.bundle"
    args = ["convert", str(blazeface_model), "-p", "generic-x86-64", "--calib", str(photo_dir), "-o", str(out),
            "--precision", "bf16", "-q"]
    code, text, err = cli(args, capsys)
    assert code == 0, err
    notes = json.loads((out / "report.json").read_text())["notes"]
    assert "profile generic-x86-64 lists no openvino bf16; built it as asked (--precision)" in notes
    m = json.loads((out / "manifest.json").read_text())
    assert m["backend"] == "openvino" and m["runtime"]["precision"] == "bf16" and m["model"].endswith(".xml")
    code, text, _ = cli(["predict", str(out), str(photo_dir / "astronaut.png")], capsys)
    assert code == 0 and "1 face" in text
