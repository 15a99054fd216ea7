"""No EdgeSDK call hangs because of what ran before it in the same process.

The real sequence that hung `make test` on a fresh machine: OpenVINO conversion of a real model,
then low-rank factorization (np.linalg.svd), then quantization, in one process. It runs in a
child process with a clean environment: no CI variable (OpenVINO's telemetry declines itself
under CI=true, which hid the bug from CI) and a HOME without a telemetry consent file (a fresh
user's machine). The child counts forks: the telemetry forked a child per event, and each fork
tore down OpenBLAS's thread pool (see converters/engine_telemetry.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")

ROOT = Path(__file__).resolve().parent.parent

SEQUENCE = textwrap.dedent("""
    import json, os, sys
    forks = []
    os.register_at_fork(before=lambda: forks.append(1))
    sys.path[:0] = [{root!r}, {tests!r}, {tools!r}]
    import numpy as np
    import onnx
    from converters import openvino_ir
    from converters.lowrank import factorize
    from converters.onnx_quant import StaticQuantizer
    import prunemodels
    from sampledata import photos

    model = openvino_ir.read_onnx({cls!r})                       # 1. OpenVINO conversion
    imgs = [cv for cv in photos().values()]
    import cv2
    calib = np.stack([cv2.resize(i, (192, 48)).transpose(2, 0, 1) for i in imgs]).astype(np.float32) / 255.0
    after_convert = len(forks)
    small = onnx.load(str(prunemodels.low_rank({tmp!r}, rank=3)))
    _, report = factorize(small, energy=1.0)                      # 2. factorization (SVD)
    for _ in range(20):                                           # the call that spun forever
        np.linalg.svd(np.random.rand(64, 3) @ np.random.rand(3, 64))
    q = openvino_ir.quantize(model, calib)                       # 3. NNCF INT8
    StaticQuantizer({cls!r}, "x", calib, work_dir={tmp!r}).quantize({tmp!r} + "/cls_int8.onnx")  # 4. ORT INT8
    print(json.dumps({{"forks_after_convert": after_convert, "forks": len(forks),
                      "factorized": sum(l.factorized for l in report.layers)}}))
""")


@pytest.mark.slow
def test_convert_then_factorize_then_quantize_finishes_without_forking(cls_model, tmp_path):
    script = SEQUENCE.format(root=str(ROOT), tests=str(ROOT / "tests"), tools=str(ROOT / "tools"),
                             cls=str(cls_model), tmp=str(tmp_path))
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "TF_BUILD", "JENKINS_URL", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                        "EDGESDK_ENGINE_TELEMETRY")}
    env["HOME"] = str(tmp_path)  # a fresh user: no openvino_telemetry consent file
    try:
        done = subprocess.run([sys.executable, "-X", "faulthandler", "-c", script], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the sequence hung (no result in 240 s); stderr tail: {(exc.stderr or b'')[-2000:]!r}")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["factorized"] == 3
    assert result["forks_after_convert"] == 0, "OpenVINO conversion forked (telemetry is on)"
    assert result["forks"] == 0, "conversion or quantization forked a child process"


def test_engine_telemetry_can_be_kept_on_request(monkeypatch):
    from converters import engine_telemetry

    monkeypatch.setattr(engine_telemetry, "_disabled", False)
    monkeypatch.setenv(engine_telemetry.ENV_KEEP, "1")
    assert engine_telemetry.disable() is False



@pytest.mark.parametrize("setting, threads", [(None, 1), ("2", 2)])
def test_conversion_processes_keep_numpy_blas_on_one_thread(setting, threads):
    """OpenBLAS's threaded path is what spun forever in `np.linalg.norm` of the accuracy check (a
    .tflite conversion after host detection had probed OpenVINO in the same process): importing
    `converters` limits it, EDGESDK_BLAS_THREADS sets another count."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                               "EDGESDK_BLAS_THREADS")}
    if setting:
        env["EDGESDK_BLAS_THREADS"] = setting
    code = ("import json, converters, threadpoolctl; "
            "print(json.dumps([p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts and all(c == min(threads, os.cpu_count() or 1) for c in counts), counts
