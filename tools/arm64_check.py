"""Run EdgeSDK's device path on an emulated arm64 Debian userland and compare with x86.

    python tools/arm64_check.py --rootfs .cache/arm64/rootfs [--work .cache/arm64/work]

On this (x86) host it builds what a device receives: the EdgeSDK wheel, the aarch64 wheels
of its device dependencies (pip download --platform, cached), a sample video made from real
photographs, three bundles (BlazeFace LiteRT, PP-OCR det onnxruntime fp32, and the same
det model converted here to INT8 for the generic-arm64 profile), a signed package and a
package whose profile is for another architecture. It runs each bundle on the video here,
then runs, inside the chroot (qemu-user-static through binfmt): pip install, `edgesdk detect`
on recorded Raspberry Pi device-tree data, `edgesdk install` with its health check, and
`edgesdk run` of the same video. Detections are compared frame by frame (same count and
class, boxes within --box-tol pixels, scores within --score-tol).

Timings inside the chroot are qemu emulation of arm64 on an x86 CPU, NOT device numbers;
this script prints none, only the comparison. Exit codes: 0 all matched, 1 a mismatch or
a failed step, 3 the userland or the emulation tools are missing (it says what to do).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tools")]

from arm64 import compare  # noqa: E402  (tools/arm64/compare.py)
from edgesdk.errors import EdgeSDKError  # noqa: E402

GUEST_DIR = "/opt/edgesdk-check"       # where the check's files go inside the userland
USERLAND_OK = ".edgesdk-userland-ok"    # written by tools/arm64/build_userland.sh when finished
#: the device's packages: pyproject's base dependencies plus the litert extra
DEVICE_REQUIREMENTS = ("numpy>=1.24", "onnxruntime>=1.17", "opencv-python-headless>=4.8", "click>=8.1",
                       "PyYAML>=6.0", "cryptography>=41", "ai-edge-litert>=1.0")
#: the check's video: faces for BlazeFace, text for PP-OCR det, a scene without either (real photos)
VIDEO_PATTERN = (("astronaut", 3), ("page", 3), ("coffee", 2), ("text", 3), ("camera", 3))
#: accuracy budget of the INT8 det conversion (1 - mean cosine on held-out images): det's probability
#: map loses ~5 % cosine at INT8 with the default guard steps; the check is about x86 == arm64, not INT8 quality
INT8_BUDGET = 0.08
#: manylinux tags a bookworm aarch64 userland (glibc 2.36) installs
AARCH64_PLATFORMS = ("manylinux2014_aarch64",) + tuple(
    f"manylinux_2_{v}_aarch64" for v in (17, 24, 26, 27, 28, 31, 34, 35, 36))


class CheckFailed(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def say(msg: str) -> None:
    print(f"[arm64-check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], *, cwd: Optional[Path] = None, env: Optional[dict] = None, timeout: float = 1800) -> str:
    """Run a command; on failure raise CheckFailed with its last lines."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise CheckFailed(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout + proc.stderr


def edgesdk(*args: str, timeout: float = 1800) -> str:
    return run([sys.executable, "-m", "edgesdk", *args], timeout=timeout)


# ----------------------------------------------------------------------------- host side

def check_userland(rootfs: Path) -> None:
    tools = subprocess.run(["bash", str(REPO / "tools/arm64/need_tools.sh")], capture_output=True, text=True)
    if tools.returncode != 0:
        raise CheckFailed(tools.stderr.strip(), 3)
    if not (rootfs / USERLAND_OK).is_file():
        raise CheckFailed(f"no finished arm64 userland at {rootfs}. Build it (about 10 minutes, once) with\n"
                          f"    bash tools/arm64/build_userland.sh {rootfs}\nor run `make arm64-check`, which does.", 3)
    if not (rootfs / "usr/bin/python3").exists():
        raise CheckFailed(f"{rootfs} has no usr/bin/python3; rebuild it: rm -rf {rootfs} && make arm64-check", 3)


def aarch64_wheelhouse(cache: Path) -> Path:
    """aarch64 wheels of the device packages, pinned like x86 by constraints.txt (cached)."""
    house = cache / "wheels"
    stamp = house / ".complete"
    if stamp.is_file() and stamp.read_text() == (REPO / "constraints.txt").read_text():
        return house
    say("downloading the aarch64 wheels of the device packages (pip download --platform)")
    house.mkdir(parents=True, exist_ok=True)
    plats = [a for p in AARCH64_PLATFORMS for a in ("--platform", p)]
    run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.11",
         "--implementation", "cp", *plats, "-c", str(REPO / "constraints.txt"), "-d", str(house),
         *DEVICE_REQUIREMENTS], env={"PIP_CONSTRAINT": "", "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": ""})
    stamp.write_text((REPO / "constraints.txt").read_text())
    return house


def edgesdk_wheel(out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
        cwd=out)
    shutil.rmtree(REPO / "build", ignore_errors=True)  # setuptools' scratch folder in the checkout
    return next(out.glob("edgesdk-*.whl"))


def make_inputs(host: Path, models: Path) -> dict[str, Path]:
    """Video, bundles, keys and packages, all made here on x86."""
    from edgesdk.convert import convert
    from edgesdk.presets import make_bundle
    from sampledata import calibration_images
    from samplevideo import make_video

    video = make_video(host / "video.mp4", pattern=VIDEO_PATTERN).path
    bundles = host / "bundles"
    out = {"video": video}
    out["blazeface_litert"] = make_bundle(models / "blazeface_short.tflite", bundles / "blazeface_litert").path
    calib = calibration_images(host / "calib")
    # a static 256x256 input (the video's size): the dynamic bundle resizes to 736x736, minutes a frame
    # under emulation
    say("converting PP-OCR det for generic-arm64 on x86: fp32, and INT8 (static QDQ, real calibration images)")
    out["det_ort_fp32"] = convert(models / "ppocrv4_det.onnx", "generic-arm64", bundles / "det_ort_fp32",
                                  precision="fp32", backends=["onnxruntime"], calib=calib,
                                  input_shape=[1, 3, 256, 256], progress=None).path
    out["det_ort_int8"] = convert(models / "ppocrv4_det.onnx", "generic-arm64", bundles / "det_ort_int8",
                                  precision="int8", backends=["onnxruntime"], calib=calib,
                                  input_shape=[1, 3, 256, 256], max_accuracy_drop=INT8_BUDGET, progress=None).path
    out["det_x86_profile"] = make_bundle(models / "ppocrv4_det.onnx", bundles / "det_x86_profile",
                                         profile="generic-x86-64").path
    return out


def make_packages(host: Path, bundles: dict[str, Path]) -> dict[str, Path]:
    keys = host / "keys"
    edgesdk("keygen", "-o", str(keys), "--force")
    pkgs = {"keys": keys}
    for name, version in (("det_ort_int8", "1.0.0"), ("det_x86_profile", "1.1.0"), ("det_ort_fp32", "1.0.0")):
        pkgs[name] = host / f"{name}.edgepkg"
        edgesdk("pack", str(bundles[name]), "-o", str(pkgs[name]), "--key", str(keys / "edgesdk.key"),
                "--version", version, "--force")
    return pkgs


def run_here(host: Path, bundles: dict[str, Path], names: list[str], max_frames: int) -> dict[str, Path]:
    results = {}
    for name in names:
        results[name] = host / f"{name}.x86.jsonl"
        results[name].unlink(missing_ok=True)
        edgesdk("run", str(bundles[name]), "--source", f"video={bundles['video']}", "--sink", str(results[name]),
                "--max-frames", str(max_frames), "--no-status")
    return results


# ----------------------------------------------------------------------------- guest side

def stage_guest(rootfs: Path, host: Path, wheel: Path, house: Path) -> Path:
    """Copy what the device receives into the userland (a fresh folder each run)."""
    guest = rootfs / GUEST_DIR.lstrip("/")
    shutil.rmtree(guest, ignore_errors=True)
    guest.mkdir(parents=True)
    shutil.copytree(house, guest / "wheels", ignore=shutil.ignore_patterns(".complete"))
    shutil.copy2(wheel, guest / "wheels" / wheel.name)
    for item in ("bundles", "video.mp4", "det_ort_int8.edgepkg", "det_x86_profile.edgepkg", "det_ort_fp32.edgepkg"):
        src = host / item
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, guest / item)
    (guest / "trusted").mkdir()
    shutil.copy2(host / "keys/edgesdk.pub", guest / "trusted/edgesdk.pub")  # the private key stays on x86
    shutil.copytree(REPO / "tests/data/hosts", guest / "hosts")
    shutil.copy2(REPO / "tools/arm64/guest_check.sh", guest / "guest_check.sh")
    return guest


class Mounts:
    """/proc and /dev bound into the userland for the chroot; always unmounted.

    Not /sys: under qemu-user it is the x86 host's, and onnxruntime's cpuinfo library
    segfaults reading an x86 CPU topology as an arm64 one (onnxruntime 1.32, seen here).
    Without it cpuinfo warns "cpuinfo_initialize failed" and the CPU EP still runs.
    """

    def __init__(self, rootfs: Path):
        self.rootfs = rootfs
        self.done: list[Path] = []

    def __enter__(self) -> "Mounts":
        for src, args in (("/proc", ["-t", "proc", "proc"]), ("/dev", ["--bind", "/dev"])):
            target = self.rootfs / src.lstrip("/")
            target.mkdir(exist_ok=True)
            if not os.path.ismount(target):
                subprocess.run(["mount", *args, str(target)], check=True)
                self.done.append(target)
        return self

    def __exit__(self, *exc: object) -> None:
        for target in reversed(self.done):
            subprocess.run(["umount", "-l", str(target)], check=False)


def run_guest(rootfs: Path, max_frames: int) -> str:
    say("inside the arm64 userland (qemu emulation: slow, and no timing here is a device number)")
    env = {"MAX_FRAMES": str(max_frames), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8"}
    with Mounts(rootfs):
        proc = subprocess.Popen(["chroot", str(rootfs), "/bin/bash", f"{GUEST_DIR}/guest_check.sh"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            log, _ = proc.communicate(timeout=3600)
        finally:
            if proc.poll() is None:  # interrupted or timed out: stop the guest before unmounting
                proc.kill()
                proc.wait()
    if proc.returncode != 0:
        raise CheckFailed("the device path failed inside the arm64 userland:\n"
                          + "\n".join(log.strip().splitlines()[-25:]))
    return log


# ----------------------------------------------------------------------------- main

def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rootfs", type=Path, default=REPO / ".cache/arm64/rootfs")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: ROOTFS/../work)")
    p.add_argument("--models", type=Path, default=REPO / ".cache/models")
    p.add_argument("--max-frames", type=int, default=14, help="frames of the sample video to run (14 = all)")
    p.add_argument("--box-tol", type=float, default=2.0, help="largest box corner difference, pixels")
    p.add_argument("--score-tol", type=float, default=0.02, help="largest score difference (float bundles)")
    p.add_argument("--score-tol-int8", type=float, default=0.1,
                   help="largest score difference of the INT8 bundle: the machines decode the video up to a few "
                        "grey levels apart, and INT8 steps amplify that (same tensor: identical outputs)")
    p.add_argument("--borderline", type=float, default=0.8,
                   help="unpaired detections scoring below this are listed as borderline, not mismatches "
                        "(0: every unpaired detection fails; see tools/arm64/compare.py)")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    a = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the guest is stopped and /proc, /dev are unmounted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rootfs = a.rootfs.resolve()
    work = (a.work or rootfs.parent / "work").resolve()
    try:
        check_userland(rootfs)
        host = work / "host"
        shutil.rmtree(host, ignore_errors=True)
        host.mkdir(parents=True)
        say(f"x86 side: wheel, inputs, packages under {host}")
        wheel, house = edgesdk_wheel(work / "dist"), aarch64_wheelhouse(rootfs.parent)
        bundles = make_inputs(host, a.models)
        make_packages(host, bundles)
        names = ["blazeface_litert", "det_ort_fp32", "det_ort_int8"]
        x86 = run_here(host, bundles, names, a.max_frames)
        stage_guest(rootfs, host, wheel, house)
        log = run_guest(rootfs, a.max_frames)
        (work / "guest.log").write_text(log)
        guest_out = rootfs / GUEST_DIR.lstrip("/") / "out"
        report = compare.report(x86, {n: guest_out / f"{n}.arm64.jsonl" for n in names}, log,
                                box_tol=a.box_tol, score_tol={"*": a.score_tol, "det_ort_int8": a.score_tol_int8},
                                borderline=a.borderline)
    except CheckFailed as exc:
        say(str(exc))
        return exc.code
    except EdgeSDKError as exc:  # a conversion or bundle step on the x86 side
        say(f"x86 side failed: {exc}")
        return 1
    (work / "arm64_report.json").write_text(json.dumps(report, indent=2))
    print(compare.markdown(report))
    say(f"report: {work / 'arm64_report.json'}; guest log: {work / 'guest.log'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
