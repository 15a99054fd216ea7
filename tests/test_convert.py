"""`edgesdk convert` end to end on the real PP-OCR models and real images, and every error path:
a clear message, the right exit code, and nothing left behind (no bundle, no temp folders)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convdata import cls_crops, cls_samples, det_samples, text_scenes, write_images
from edgesdk.bundle import Bundle
from edgesdk.cli import main
from edgesdk.convert import convert
from edgesdk.errors import ConversionError


@pytest.fixture(scope="module")
def cls_images(tmp_path_factory):
    return write_images(cls_crops("calibration") + cls_crops("heldout"), tmp_path_factory.mktemp("cls_images"))


@pytest.fixture(scope="module")
def det_images(tmp_path_factory):
    return write_images(text_scenes("calibration", 16, (320, 320)), tmp_path_factory.mktemp("det_images"))


@pytest.fixture(scope="module")
def host_profile():
    from edgesdk.hostinfo import closest_profile

    return closest_profile()[0].name


def _leftovers(folder: Path, keep=()) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def _run(args, capsys):
    """The CLI's main(): returns (exit code, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_classifier_on_this_host_picks_the_fastest_within_budget(cls_model, cls_images, host_profile, tmp_path, capsys):
    out = tmp_path / "cls.bundle"
    code, err = _run(["convert", str(cls_model), "-p", host_profile, "--calib", str(cls_images), "-o", str(out),
                      "--backend", "openvino", "--backend", "onnxruntime", "--guard-steps", "2",
                      "--bench-seconds", "0.3", "-q"], capsys)
    assert code == 0, err
    bundle = Bundle.load(out)  # hashes verified
    m = bundle.manifest
    assert m.profile == host_profile and m.task == "classification" and m.labels == ["0", "180"]
    assert m.preprocess.size == (48, 192) and m.inputs[0].shape == (1, 3, 48, 192)
    assert "precision" in m.runtime and m.provenance["source_sha256"]
    for name in ("report.md", "report.json", "accuracy_latency.png"):
        assert (out / name).stat().st_size > 200
    report = json.loads((out / "report.json").read_text())
    assert report["profile"]["is_this_host"] and report["mode"].startswith("measured here")
    rows = {v["key"]: v for v in report["variants"]}
    # bf16 is a named, measured candidate: the fp32 IR with a bf16 runtime hint
    assert rows["openvino-bf16"]["runtime_precision"] == "bf16" and rows["openvino-bf16"]["latency"]
    assert {"onnxruntime-fp32", "openvino-fp32"} <= set(rows) and any(k.startswith("openvino-int8") for k in rows)
    within = [v for v in rows.values() if v.get("within_budget") and v.get("latency")]
    chosen = report["chosen"]
    assert chosen["latency"]["p50_ms"] == min(v["latency"]["p50_ms"] for v in within)
    assert m.provenance["variant"] == chosen["key"]
    # the bundle runs through its manifest and agrees with the original on held-out crops
    x = cls_samples("heldout")
    import onnxruntime as ort

    ref = ort.InferenceSession(str(cls_model)).run(None, {"x": x})[0]
    with bundle.runtime() as rt:
        got = np.concatenate([next(iter(rt.infer(x[i:i + 1]).values())) for i in range(len(x))])
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.96
    assert "Chosen:" in (out / "report.md").read_text()
    assert _leftovers(tmp_path) == ["cls.bundle"]


def test_profile_order_decides_when_the_profile_is_not_this_host(cls_model, cls_images, tmp_path):
    from edgesdk.hostinfo import is_this_host

    target = next(p for p in ("intel-xeon-amx", "amd-epyc-zen4") if not is_this_host(p))
    res = convert(cls_model, target, tmp_path / "b", calib=cls_images, progress=None)
    assert res.report["mode"] == "profile preference order"
    assert res.chosen.key == "openvino-bf16"  # first preference of both x86 profiles, within budget
    assert res.chosen.latency is None  # not measured: this machine is not the target
    m = res.bundle.manifest
    assert m.backend == "openvino" and m.precision == "fp32" and m.runtime["precision"] == "bf16"
    assert res.chosen.comparison.top1_agreement == 1.0


def test_jetson_int8_ships_onnx_with_a_tensorrt_recipe_and_calibration_cache(det_model, det_images, tmp_path):
    from converters.tensorrt import read_calibration_cache

    out = tmp_path / "det.bundle"
    res = convert(det_model, "jetson-orin-nano", out, precision="int8", calib=det_images,
                  input_shape=[1, 3, 320, 320], progress=None)
    m = res.bundle.manifest
    assert m.backend == "tensorrt" and m.runtime == {"device": "GPU", "precision": "int8", "threads": 6}
    assert m.task == "text_detection" and m.preprocess.size == (320, 320)
    script = (out / "tensorrt" / "build_engine.sh").read_text()
    assert "trtexec --onnx=model.onnx" in script and "--int8" in script and "--calib=tensorrt/calibration.cache" in script
    cache = read_calibration_cache(out / "tensorrt" / "calibration.cache")
    assert (out / "tensorrt" / "calibration.cache").read_text().startswith("TRT-100300-EntropyCalibration2")
    assert len(cache) > 100  # the input and every float tensor of the network
    calib = det_samples("calibration", 16, 320)
    assert cache["x"] == pytest.approx(np.abs(calib).max() / 127, rel=0.05)  # ~12 of 16 images calibrate
    chosen = res.report["chosen"]
    assert any("TensorRT" in s for s in chosen["not_verified"])
    assert any("held-out" in s for s in chosen["verified"])  # the shipped ONNX was checked here
    assert "NOT verified" in (out / "report.md").read_text()


def test_explicit_bf16_records_the_runtime_precision(cls_model, cls_images, host_profile, tmp_path):
    res = convert(cls_model, host_profile, tmp_path / "b", precision="bf16", calib=cls_images, progress=None)
    m = res.bundle.manifest
    assert (m.backend, m.precision, m.runtime["precision"]) == ("openvino", "fp32", "bf16")
    with res.bundle.runtime() as rt:
        assert rt.precision in ("bf16", "fp32")  # bf16 where the CPU has it


def test_int8_guard_inside_the_variant_builder(cls_model, tmp_path):
    """A strict cosine budget makes the onnxruntime INT8 variant go through the guard; the
    report records each step and the kept-float layers, and the final file holds them float."""
    import onnx

    from converters.compare import Comparator
    from converters.onnx_quant import quantized_layers
    from converters.passes import PassContext, default_passes, load_onnx, run_passes
    from converters.variants import BuildSettings, VariantBuilder

    model, _ = run_passes(load_onnx(cls_model), default_passes(), PassContext(input_shapes={"x": [1, 3, 48, 192]}))
    prepared = tmp_path / "p.onnx"
    onnx.save(model, str(prepared))
    cmp = Comparator(cls_model, cls_samples("heldout")[:10])
    b = VariantBuilder(BuildSettings(prepared=prepared, work=tmp_path / "w", input_name="x", input_shape=[1, 3, 48, 192],
                                     calib=cls_samples("calibration"), comparator=cmp, budget=0.0002, guard_steps=3))
    try:
        v = b.build("onnxruntime", "int8")
    finally:
        b.close()
    assert v.ok and v.guard is not None and v.guard.steps
    assert v.guard.initial_drop > 0.0002
    if v.guard.excluded:
        assert v.precision == "mixed" and v.comparison.drop < v.guard.initial_drop
        left = quantized_layers(onnx.load(str(v.files[v.model])))
        assert not set(v.guard.excluded) & set(left)
    assert not list((tmp_path / "w").glob("*trial*")) and not list((tmp_path / "w").glob("ranking*"))


def test_pytorch_module_is_exported_then_converted(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 4))
    x = det_samples("heldout", 8, 32)
    res = convert(net, "amd-epyc-zen4", tmp_path / "t", precision="fp32", calib=x, backends=["onnxruntime"],
                  torch_example=torch.from_numpy(x[:1]), progress=None)
    with torch.no_grad():
        ref = net(torch.from_numpy(x[:2])).numpy()
    with res.bundle.runtime() as rt:
        got = np.concatenate([next(iter(rt.infer(x[i:i + 1]).values())) for i in range(2)])
    assert np.abs(got - ref).max() <= 1e-4


# ------------------------------------------------------------------ errors: clear, and nothing left behind

def _det_op_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Det", ["x"], ["y"], name="det")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("case, code, match", [
    ("corrupt", 8, "not a readable ONNX model|not a valid ONNX"),
    ("truncated", 8, "corrupt or truncated|not a valid ONNX"),
    ("unsupported_op", 8, "no conversion rule for operator.*Det"),
    ("empty_calib", 8, "is empty"),
    ("wrong_size_calib", 8, "input takes"),
    ("unknown_profile", 6, "unknown|no profile"),
    ("int8_without_calib", 8, "calibration data"),
    ("dynamic_without_shape", 8, "--input-shape"),
    ("not_onnx", 8, "takes ONNX, PyTorch"),
])
def test_bad_inputs_are_clear_errors_and_leave_nothing(case, code, match, cls_model, det_model, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    model, extra = cls_model, ["-p", "amd-epyc-zen4"]
    if case == "corrupt":
        model = work / "m.onnx"
        model.write_bytes(b"\x08\x07garbage" * 50)
    elif case == "truncated":
        model = work / "m.onnx"
        model.write_bytes(cls_model.read_bytes()[:200_000])
    elif case == "unsupported_op":
        model = _det_op_model(work / "det_op.onnx")
        extra += ["--backend", "openvino", "--precision", "fp32"]
    elif case == "empty_calib":
        (work / "empty").mkdir()
        extra += ["--calib", str(work / "empty")]
    elif case == "wrong_size_calib":
        np.save(work / "c.npy", np.zeros((8, 3, 32, 32), np.float32))
        extra += ["--calib", str(work / "c.npy")]
    elif case == "unknown_profile":
        extra = ["-p", "no-such-device"]
    elif case == "int8_without_calib":
        extra += ["--precision", "int8", "--backend", "openvino"]
    elif case == "dynamic_without_shape":
        model = det_model
    elif case == "not_onnx":
        model = work / "m.engine"  # .tflite became an input (issue 11); a TensorRT engine is not one
        model.write_bytes(b"TRT")
    before = _leftovers(work)
    code_got, err = _run(["convert", str(model), *extra, "-o", str(work / "out.bundle"), "-q"], capsys)
    assert code_got == code, err
    assert err.startswith("error: ") and len(err.splitlines()) <= 3
    import re

    assert re.search(match, err), err
    assert _leftovers(work) == before  # no bundle, no staging or temp folders


def test_existing_output_is_refused_and_untouched(cls_model, tmp_path, capsys):
    out = tmp_path / "out.bundle"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, err = _run(["convert", str(cls_model), "-p", "amd-epyc-zen4", "-o", str(out), "-q"], capsys)
    assert code == 7 and "already exists" in err and "--force" in err
    assert _leftovers(out) == ["mine.txt"] and _leftovers(tmp_path) == ["out.bundle"]


def test_ctrl_c_during_conversion_leaves_nothing(cls_model, cls_images, tmp_path, monkeypatch):
    from converters import variants

    calls = []

    def interrupted(self, backend, precision):
        calls.append(backend)
        raise KeyboardInterrupt

    monkeypatch.setattr(variants.VariantBuilder, "build", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(cls_model, "amd-epyc-zen4", tmp_path / "out.bundle", calib=cls_images, progress=None)
    assert calls and _leftovers(tmp_path) == []


def test_no_variant_within_budget_is_an_error(cls_model, cls_images, tmp_path):
    from converters import variants

    real = variants.VariantBuilder.check

    def pessimist(self, v):  # every variant measured as far off
        real(self, v)
        if v.comparison is not None:
            v.comparison.top1_agreement = 0.5

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(variants.VariantBuilder, "check", pessimist)
        with pytest.raises(ConversionError, match="no variant could be built within the accuracy budget"):
            convert(cls_model, "amd-epyc-zen4", tmp_path / "out.bundle", precision="fp32", calib=cls_images,
                    backends=["onnxruntime"], progress=None)
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------ TFLite targets (onnx2tf, ~1 min each)

needs_onnx2tf = pytest.mark.skipif("not __import__('converters.tflite', fromlist=['x']).is_available()",
                                   reason="onnx2tf is not installed (optional extra): run `make tflite`")


@pytest.mark.slow
@pytest.mark.tflite_convert
@needs_onnx2tf
def test_raspberry_pi_gets_an_nhwc_tflite_bundle(cls_model, cls_images, tmp_path):
    res = convert(cls_model, "raspberry-pi-5", tmp_path / "pi", precision="fp32", calib=cls_images, progress=None)
    m = res.bundle.manifest
    assert m.backend == "litert" and m.model.endswith(".tflite") and m.preprocess.layout == "NHWC"
    assert m.inputs[0].shape == (1, 48, 192, 3)
    assert res.chosen.comparison.max_abs <= 1e-3 and res.chosen.comparison.top1_agreement == 1.0


@pytest.mark.slow
@pytest.mark.tflite_convert
@needs_onnx2tf
def test_coral_gets_a_full_integer_model_and_the_compile_step(cls_model, cls_images, tmp_path):
    # the Edge TPU runs int8 only: accept what 8-bit costs on 16 held-out crops (one flip = 0.0625)
    res = convert(cls_model, "coral-edgetpu", tmp_path / "coral", calib=cls_images, max_accuracy_drop=0.15,
                  progress=None)
    m = res.bundle.manifest
    assert m.backend == "edgetpu" and m.model == "model_full_integer_quant.tflite" and m.preprocess.layout == "NHWC"
    assert m.inputs[0].dtype.kind == "i" or m.inputs[0].dtype.kind == "u"  # integer input for the TPU
    assert res.chosen.comparison.top1_agreement >= 0.85
    assert (res.path / "edgetpu" / "compile.sh").read_text().count("edgetpu_compiler") == 1
    assert any("edgetpu_compiler" in s for s in res.report["chosen"]["not_verified"] + res.report["chosen"]["verified"])


def test_user_metric_on_labelled_data_from_the_cli(cls_model, cls_images, tmp_path, capsys):
    metric = tmp_path / "mymetric.py"
    metric.write_text(
        "import numpy as np\n"
        "from convdata import cls_samples\n\n"
        "def accuracy(runtime):\n"
        "    '''Top-1 accuracy on real crops: upright = label 0, rotated = label 1 (180).'''\n"
        "    x = cls_samples('heldout')\n"
        "    y = np.arange(len(x)) % 2\n"
        "    name = runtime.outputs[0].name\n"
        "    pred = np.concatenate([runtime.infer(x[i:i + 1])[name] for i in range(len(x))])\n"
        "    return float((pred.argmax(1) == y).mean())\n")
    out = tmp_path / "b"
    code, err = _run(["convert", str(cls_model), "-p", "intel-xeon-amx", "--calib", str(cls_images), "-o", str(out),
                      "--eval", f"{metric}:accuracy", "--max-accuracy-drop", "0.05", "-q"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy_measure"] == "the eval function's metric" and report["budget"] == 0.05
    acc = report["chosen"]["accuracy"]
    assert acc["kind"] == "metric" and acc["metric_name"] == "accuracy"
    assert 0.6 <= acc["reference_metric"] <= 1.0 and acc["drop"] <= 0.05


def test_pruning_goes_through_the_same_accuracy_guard(det_model, det_images, tmp_path):
    """10% structured pruning of the detector, no fine-tuning: fewer FLOPs, and the guard measures
    (and by default refuses) what it costs; a user who accepts the drop gets the bundle."""
    kw = dict(precision="fp32", calib=det_images, input_shape=[1, 3, 320, 320], prune=0.1,
              backends=["onnxruntime"], progress=None)
    with pytest.raises(ConversionError, match="accuracy budget"):
        convert(det_model, "intel-xeon-amx", tmp_path / "refused", **kw)
    assert _leftovers(tmp_path) == []
    # judged by box F1 against the original's boxes, an un-tuned pruned detector finds none of them
    # (drop 1.0): a user who accepts that asks for the closest variant, marked over budget
    res = convert(det_model, "intel-xeon-amx", tmp_path / "pruned", max_accuracy_drop=0.99, keep_best=True, **kw)
    assert res.report["over_budget"] is True
    pr = res.report["pruning"]["report"]
    assert pr["flops_ratio"] < 0.95 and pr["params_ratio"] < 0.95
    assert res.chosen.comparison.drop > 0.02  # reported, not hidden
    assert "## Pruning" in (res.path / "report.md").read_text()


@pytest.mark.slow
def test_nncf_accuracy_control_path(cls_model, tmp_path):
    """--accuracy-control nncf: OpenVINO INT8 through nncf.quantize_with_accuracy_control (~40 s)."""
    import onnx

    from converters.compare import Comparator
    from converters.passes import PassContext, default_passes, load_onnx, run_passes
    from converters.variants import BuildSettings, VariantBuilder

    model, _ = run_passes(load_onnx(cls_model), default_passes(), PassContext(input_shapes={"x": [1, 3, 48, 192]}))
    prepared = tmp_path / "p.onnx"
    onnx.save(model, str(prepared))
    cmp = Comparator(cls_model, cls_samples("heldout")[:8])  # cosine-based: NNCF validates mean cosine
    b = VariantBuilder(BuildSettings(prepared=prepared, work=tmp_path / "w", input_name="x", input_shape=[1, 3, 48, 192],
                                     calib=cls_samples("calibration"), comparator=cmp, budget=0.001,
                                     accuracy_control="nncf", guard_steps=2, ranking_samples=4))
    v = b.build("openvino", "int8")
    assert v.ok and v.key == "openvino-int8-mixed" and "NNCF accuracy control" in v.name
    from converters import openvino_ir

    plain = openvino_ir.save_ir(openvino_ir.quantize(openvino_ir.read_onnx(prepared), cls_samples("calibration"),
                                                     scope="all"), tmp_path / "plain.xml")
    plain_drop = cmp.compare(plain, backend="openvino", precision="int8").drop
    assert plain_drop > 0.001 and v.comparison.drop < plain_drop, (plain_drop, v.comparison.drop)
