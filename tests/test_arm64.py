"""The arm64 device path: the emulated-userland check (slow; runs only where the userland was
built by `make arm64-check`), its result comparison, the refusal to run without a userland, the
warning for a package made for another architecture's profile, and onnxruntime's fallback when
its own thread pool cannot run asynchronously (what the emulated arm64 run found)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

from arm64 import compare  # noqa: E402

ROOTFS = Path(os.environ.get("EDGESDK_ARM64_ROOTFS", REPO / ".cache/arm64/rootfs"))


def _jsonl(path: Path, frames: list[list[dict]]) -> Path:
    path.write_text("".join(json.dumps({"frame_index": i, "detections": d}) + "\n" for i, d in enumerate(frames)))
    return path


def _det(x: float, score: float = 0.9, cls: int = 0) -> dict:
    return {"box": [x, 10.0, x + 20, 30.0], "score": score, "class_id": cls}


# ----------------------------------------------------------------- the check itself
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_device_path_on_emulated_arm64_matches_x86(tmp_path):
    if not (ROOTFS / ".edgesdk-userland-ok").is_file():
        pytest.skip(f"no arm64 userland at {ROOTFS}: `make arm64-check` builds it (root, apt qemu-user-static "
                    "binfmt-support debootstrap; ~30 min once); set EDGESDK_ARM64_ROOTFS to use another")
    if os.geteuid() != 0:
        pytest.skip("the arm64 check needs root (chroot and mounts)")
    proc = subprocess.run([sys.executable, str(REPO / "tools/arm64_check.py"), "--rootfs", str(ROOTFS),
                           "--work", str(tmp_path)], capture_output=True, text=True, timeout=3500)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    report = json.loads((tmp_path / "arm64_report.json").read_text())
    assert report["device"]["machine"].startswith("machine: aarch64")
    assert report["device"]["detect_rpi4"] == "raspberry-pi-4"
    assert report["device"]["foreign_profile_warning"]
    assert all(r["ok"] and r["frames"] > 0 for r in report["runs"].values())


def test_check_without_a_userland_says_what_to_do(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "tools/arm64_check.py"), "--rootfs", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    # either the apt packages are missing, or the userland: both say the command that fixes it
    assert ("apt-get install -y qemu-user-static binfmt-support debootstrap" in proc.stderr
            or "binfmt_misc" in proc.stderr or "need root" in proc.stderr
            or "build_userland.sh" in proc.stderr and "make arm64-check" in proc.stderr)
    assert "Traceback" not in proc.stderr


def test_need_tools_names_the_missing_apt_packages(tmp_path):
    env = {"PATH": str(tmp_path)}  # nothing on PATH: every tool is missing
    (tmp_path / "bash").symlink_to("/bin/bash")
    proc = subprocess.run(["/bin/bash", str(REPO / "tools/arm64/need_tools.sh")], capture_output=True, text=True,
                          env=env)
    if Path("/usr/sbin/debootstrap").exists():
        assert "qemu-user-static" in proc.stderr or proc.returncode == 0 or "binfmt" in proc.stderr
    else:
        assert proc.returncode == 3 and "debootstrap" in proc.stderr and "apt-get install" in proc.stderr


# ----------------------------------------------------------------- comparing results
def test_same_detections_in_another_order_match(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [[_det(5), _det(50, 0.7)], []])
    b = _jsonl(tmp_path / "b.jsonl", [[_det(50.5, 0.705), _det(5.2)], []])
    r = compare.compare_runs(a, b, box_tol=1.0, score_tol=0.01)
    assert r["ok"] and r["worst_box_px"] == pytest.approx(0.5) and r["detections_x86"] == 2


@pytest.mark.parametrize("other, why", [([[_det(9)]], "box differs by 4.00 px"),
                                        ([[_det(5, 0.5)]], "score by 0.4000"),
                                        ([[_det(5), _det(80)]], "1 detections on x86, 2 on arm64"),
                                        ([[_det(5, cls=1)]], "1 detections on x86, 1 on arm64"),
                                        ([[_det(5)], [_det(5)]], "frame 1: only in arm64")])
def test_differences_are_named(tmp_path, other, why):
    a = _jsonl(tmp_path / "a.jsonl", [[_det(5)]])
    b = _jsonl(tmp_path / "b.jsonl", other)
    r = compare.compare_runs(a, b, box_tol=2.0, score_tol=0.02)
    assert not r["ok"] and any(why in m for m in r["mismatches"]), r["mismatches"]


def test_no_frames_is_not_a_match(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [])
    assert not compare.compare_runs(a, a, 2.0, 0.02)["ok"]


# ----------------------------------------------------------------- another architecture's package
def test_bundle_for_another_architecture_is_named_at_install(cls_model, tmp_path):
    from edgesdk.presets import make_bundle
    from edgesdk.provision.archcheck import arch_mismatch, this_arch
    from edgesdk.provision.install import install
    from edgesdk.provision.keys import generate_keypair
    from edgesdk.provision.package import pack

    other = "jetson-orin-nano" if this_arch() == "x86_64" else "generic-x86-64"
    bundle = make_bundle(cls_model, tmp_path / "b", preset="ppocr_cls", profile=other)
    warning = arch_mismatch(bundle.path)
    assert warning.startswith("WARNING") and other in warning and this_arch() in warning
    assert arch_mismatch(bundle.path, machine="aarch64" if other == "jetson-orin-nano" else "x86_64") is None
    keys = generate_keypair(tmp_path / "keys", "k")
    pkg = pack(bundle.path, tmp_path / "p.edgepkg", "1.0.0", key=keys.private_path).path
    said: list[str] = []
    result = install(pkg, tmp_path / "root", trusted_keys=tmp_path / "keys", progress=said.append)
    assert result.changed and result.health.ok  # portable files: warned, not refused
    assert sum(m.startswith("WARNING") and other in m for m in said) == 1


def test_bundle_without_a_known_profile_gives_no_arch_warning(cls_model, tmp_path):
    from edgesdk.presets import make_bundle
    from edgesdk.provision.archcheck import arch_mismatch

    assert arch_mismatch(make_bundle(cls_model, tmp_path / "b", preset="ppocr_cls").path) is None
    assert arch_mismatch(tmp_path / "not-a-bundle") is None


# ----------------------------------------------------------------- onnxruntime without a worker pool
class _NoPoolSession:
    """Wraps a real session; run_async refuses like ORT does when its intra-op pool has no thread."""

    def __init__(self, real):
        self.real = real
        self.async_calls = 0

    def run_async(self, *args, **kwargs):
        self.async_calls += 1
        raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : intra op thread pool must have at least "
                           "one thread for RunAsync")

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_submit_runs_in_our_thread_when_ort_has_no_async_pool(cls_model):
    import runtimes

    with runtimes.load(cls_model, backend="onnxruntime") as rt:
        x = np.random.default_rng(0).random((1, 3, 48, 192), dtype=np.float32)
        want = rt.infer(x)
        rt._session = fake = _NoPoolSession(rt._session)
        for _ in range(2):
            got = rt.submit(x).result(timeout=60)
            assert np.allclose(got[rt.outputs[0].name], want[rt.outputs[0].name])
        assert fake.async_calls == 1  # the first refusal switched it to our own thread for good


def test_weak_unpaired_detections_are_borderline_not_mismatches(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [[_det(5), _det(80, 0.6)]])
    b = _jsonl(tmp_path / "b.jsonl", [[_det(5)]])
    loose = compare.compare_runs(a, b, 2.0, 0.02, borderline=0.8)
    assert loose["ok"] and loose["borderline"] == ["frame 0: 2 vs 1 (unpaired scores 0.60)"]
    assert not compare.compare_runs(a, b, 2.0, 0.02, borderline=0.5)["ok"]
    strong = _jsonl(tmp_path / "c.jsonl", [[_det(5), _det(80, 0.9)]])
    assert not compare.compare_runs(strong, b, 2.0, 0.02, borderline=0.8)["ok"]


class _LaterSession:
    """Wraps a real session; run_async keeps only the callback (as onnxruntime < 1.24 did with the inputs)."""

    def __init__(self, real):
        self.real = real
        self.pending = []

    def run_async(self, names, feeds, callback, user_data):
        values = self.real.run(names, feeds)
        self.pending.append(lambda: callback(values, user_data, ""))

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_submit_keeps_the_inputs_alive_until_onnxruntime_is_done(cls_model):
    """Python 3.10 gets onnxruntime 1.23, whose run_async holds no reference to the inputs: a freed
    input batch gave garbage results (PP-OCR det found no text on the page frames)."""
    import gc
    import weakref

    import runtimes

    with runtimes.load(cls_model, backend="onnxruntime", threads=2) as rt:
        rt._session = fake = _LaterSession(rt._session)
        x = np.random.default_rng(0).random((1, 3, 48, 192), dtype=np.float32)
        alive = weakref.ref(x)
        future = rt.submit(x)
        del x
        gc.collect()
        assert alive() is not None  # held by the pending callback, not by the caller
        fake.pending.pop()()
        assert future.result(timeout=10)
