"""FPGA (Vitis AI on Kria KV260) and OpenCL GPU (Intel iGPU, Mali/Adreno) targets: the profiles,
the artifacts and recipes the converter emits for them (marked "recipe, not verified here"),
the fallback when their accelerator is absent, and the TensorRT recipe's clean stop."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convdata import cls_crops, write_images
from edgesdk.bundle import Bundle
from edgesdk.convert import convert
from edgesdk.errors import ConversionError, ProfileError
from edgesdk.profiles import load_profile
from runtime_fixtures import fresh_warnings  # noqa: F401  (fixture)

MARK = "recipe, not verified here"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cls_images(tmp_path_factory):
    return write_images(cls_crops("calibration") + cls_crops("heldout"), tmp_path_factory.mktemp("cls_images"))


def _show(name: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgesdk", "profiles", "show", name, *extra],
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


# ----------------------------------------------------------------- profiles
@pytest.mark.parametrize("name, backend, device", [("amd-kria-kv260", "vitis_ai", "NPU"),
                                                   ("arm-mali-adreno-gpu", "litert", "GPU"),
                                                   ("intel-iris-xe-igpu", "openvino", "GPU")])
def test_accelerator_paths_are_marked_recipe_not_verified(name, backend, device):
    prof = load_profile(name)
    best = prof.best
    assert (best.backend, best.device, best.verified) == (backend, device, False) and best.recipe_note
    assert all(b.verified for b in prof.backends[1:])  # the CPU fallbacks are ordinary paths
    shown = _show(name)
    assert shown.returncode == 0, shown.stderr
    assert f"{MARK}: " in shown.stdout
    as_json = json.loads(_show(name, "--json").stdout)
    assert as_json["backends"][0]["verified"] is False and "verified" not in as_json["backends"][1]


def test_kv260_profile_states_what_the_vitis_ai_toolchain_takes():
    prof = load_profile("amd-kria-kv260")
    assert prof.arch == "aarch64" and prof.precisions_for("vitis_ai") == ("int8",)
    opts = dict(prof.best.options)
    assert opts["quantizer"] == "vai_q_onnx" and opts["dpu"] == "DPUCZDX8G"
    assert opts["providers"][0] == "VitisAIExecutionProvider"
    assert "power-of-two" in prof.best.note and "vaip_config.json" in prof.best.note
    assert any("Vitis-AI-ExecutionProvider" in s for s in prof.sources)


def test_verified_must_be_a_boolean(tmp_path):
    text = (REPO / "device_profiles/arm-mali-adreno-gpu.yaml").read_text().replace("verified: false", "verified: \"no\"")
    bad = tmp_path / "mali-typo.yaml"
    bad.write_text(text.replace("name: arm-mali-adreno-gpu", "name: mali-typo"))
    with pytest.raises(ProfileError, match=r"backends\[0\]\.verified: expected true or false"):
        load_profile(bad)


def test_mali_and_adreno_device_nodes_are_detected(tmp_path):
    from edgesdk.hostinfo import closest_profile, detect_host

    root = tmp_path / "rk3588"
    shutil.copytree(REPO / "tests/data/hosts/raspberry-pi-5", root)  # an aarch64 board with asimd
    (root / "dev").mkdir()
    (root / "dev/mali0").write_text("")
    host = detect_host(root, engines=False)
    assert "/dev/mali0" in host.dev_nodes
    prof, reasons = closest_profile(host)
    assert prof.name == "arm-mali-adreno-gpu", reasons


# ----------------------------------------------------------------- Vitis AI (FPGA)
def test_kv260_int8_ships_the_vai_q_onnx_recipe_and_a_cpu_checked_qdq_model(cls_model, cls_images, tmp_path):
    out = tmp_path / "kv260.bundle"
    res = convert(cls_model, "amd-kria-kv260", out, precision="int8", calib=cls_images, progress=None)
    m = Bundle.load(out).manifest
    assert m.backend == "onnxruntime" and m.runtime["device"] == "NPU" and m.precision in ("int8", "mixed")
    assert m.model.startswith("model_int8") and (out / m.model).is_file()
    script = (out / "vitis_ai/quantize.py").read_text()
    for needle in ("vai_q_onnx.quantize_static", "PowerOfTwoMethod.MinMSE", "QuantFormat.QDQ", "enable_dpu=True",
                   f'"{m.inputs[0].name}"'):
        assert needle in script
    compile(script, "quantize.py", "exec")  # valid Python, ready to run where vai_q_onnx is
    compile((out / "vitis_ai/run_on_dpu.py").read_text(), "run_on_dpu.py", "exec")
    calib = np.load(out / "vitis_ai/calibration.npy")
    assert calib.shape[1:] == tuple(m.inputs[0].shape[1:]) and calib.dtype == np.float32 and len(calib) > 4
    import onnx
    onnx.checker.check_model(str(out / "vitis_ai/model_fp32.onnx"))
    chosen = res.report["chosen"]
    assert chosen["key"] == "vitis_ai-int8" and chosen["accuracy"] is not None  # the QDQ model ran here
    assert any(s.startswith(MARK) for s in chosen["not_verified"])
    assert MARK in (out / "report.md").read_text() and MARK in (out / "vitis_ai/README.md").read_text()


def test_kv260_without_calibration_data_says_what_to_pass(cls_model, tmp_path):
    with pytest.raises(ConversionError, match="INT8 needs calibration data: pass --calib"):
        convert(cls_model, "amd-kria-kv260", tmp_path / "x", precision="int8", progress=None)
    assert not (tmp_path / "x").exists()


def test_vitis_ai_calibration_is_capped_and_says_so():
    from converters import vitis_ai

    big = np.zeros((vitis_ai.MAX_CALIB_SAMPLES + 5, 3, 8, 8), np.float32)
    kept, note = vitis_ai.calibration_subset(big)
    assert len(kept) == vitis_ai.MAX_CALIB_SAMPLES and "holds 200 of 205" in note
    with pytest.raises(ConversionError, match="needs calibration data"):
        vitis_ai.calibration_subset(np.zeros((0, 3, 8, 8), np.float32))


# ----------------------------------------------------------------- OpenCL GPUs
def test_intel_igpu_bundle_runs_on_gpu_and_carries_the_gpu_check(cls_model, cls_images, tmp_path, fresh_warnings):
    out = tmp_path / "igpu.bundle"
    res = convert(cls_model, "intel-iris-xe-igpu", out, precision="fp32", calib=cls_images, measure=False,
                  progress=None)
    bundle = Bundle.load(out)
    assert bundle.manifest.backend == "openvino" and bundle.manifest.runtime["device"] == "GPU"
    script = (out / "gpu/check_gpu.sh").read_text()
    assert f'read_model("{bundle.manifest.model}")' in script and "-d GPU" in script
    assert any(s.startswith(MARK) and "GPU plugin" in s for s in res.report["chosen"]["not_verified"])
    with bundle.runtime() as rt:  # no Intel GPU here: the CPU, with one warning
        assert rt.device in ("CPU", "GPU")


def test_gpu_recipe_for_litert_names_the_delegate_and_its_build(tmp_path):
    from converters import gpu_recipes

    files = gpu_recipes.write_recipe(tmp_path / "gpu", "litert", "model_fp16.tflite")
    script = files["gpu/check_gpu.sh"].read_text()
    assert "load_delegate" in script and 'model_path="model_fp16.tflite"' in script
    assert "libtensorflowlite_gpu_delegate.so" in files["gpu/README.md"].read_text()
    assert gpu_recipes.write_recipe(tmp_path / "none", "onnxruntime", "m.onnx") == {}


def test_mali_profile_without_its_gpu_falls_back_once_or_raises_when_strict(blazeface_model, fresh_warnings,
                                                                           caplog, tmp_path):
    """A profile whose accelerator is absent: the health check runs on the CPU, warned once."""
    import runtimes
    from edgesdk.presets import make_bundle
    from edgesdk.provision.health import check, record, write_sample
    from runtimes.errors import BackendUnavailableError

    bundle = make_bundle(blazeface_model, tmp_path / "rel" / "bundle", profile="arm-mali-adreno-gpu")
    section = write_sample(record(bundle), tmp_path / "rel")
    with caplog.at_level(logging.WARNING, logger="runtimes"):
        reports = [check(tmp_path / "rel", "bundle", section, "arm-mali-adreno-gpu") for _ in range(2)]
    assert all(r.ok and r.backend == "litert" and r.device == "CPU" for r in reports), reports
    assert sum("no GPU delegate" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(BackendUnavailableError, match="litert found no GPU delegate"):
        runtimes.load(blazeface_model, device="GPU", strict=True).activate()


# ----------------------------------------------------------------- TensorRT (issue 16 item 2)
def test_tensorrt_recipe_stops_with_a_reason_where_tensorrt_is_absent(tmp_path):
    from converters import tensorrt

    rec = tensorrt.recipe("model.onnx", "fp16", input_name="x", input_shape=[1, 3, 32, 32])
    script = tensorrt.write_recipe(tmp_path, rec)[0]
    if shutil.which("trtexec"):
        pytest.skip("trtexec is installed here: the engine build itself is checked where a GPU is")
    proc = subprocess.run(["sh", str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 3 and "trtexec (TensorRT) is not on PATH" in proc.stderr


def test_tensorrt_engine_build_needs_a_gpu():
    """Issue 16 item 2 (build engines with the tensorrt wheel, compare with onnxruntime's CUDA/TRT
    providers) runs only on a machine with an NVIDIA GPU and TensorRT."""
    has_gpu = shutil.which("nvidia-smi") is not None
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pytest.skip("no tensorrt wheel here (pip install tensorrt on a machine with an NVIDIA GPU)")
    if not has_gpu:
        pytest.skip("the tensorrt wheel is installed but no NVIDIA GPU is visible (nvidia-smi missing)")
    pytest.skip("GPU and tensorrt present: run the TensorRT comparison of issue 16 item 2 by hand (not automated)")
