"""Mender end to end on this machine: `edgesdk mender-artifact` (the real mender-artifact tool), the
edgesdk update module, and the real Mender client in standalone mode (install, commit, rollback).

The client (3.4) takes the module directory (/usr/share/mender/modules/v3) and the artifact_info
file (/etc/mender/artifact_info) from fixed paths, so these tests write there (and put back what
was there); the state data and the device type live in the test's folder (--data, DeviceTypeFile).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgesdk.errors import PackageError
from edgesdk.fleet import mender
from edgesdk.fleet.mender_module import main as module_main
from edgesdk.provision.install import install, status
from provisiondata import QUIET, ROOT, art, edgesdk  # noqa: F401 (fixture)

MODULES = Path("/usr/share/mender/modules/v3")
ARTIFACT_INFO = Path("/etc/mender/artifact_info")
DEVICE_TYPE = "edge-cam-x1"


def _why_not() -> str:
    for tool in ("mender", "mender-artifact"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (tools/install_system_deps.sh: mender-client, mender-artifact)"
    if not os.access(MODULES if MODULES.exists() else MODULES.parent.parent, os.W_OK) or \
            not os.access(ARTIFACT_INFO.parent if ARTIFACT_INFO.parent.exists() else "/etc", os.W_OK):
        return f"the Mender client needs its module in {MODULES} and {ARTIFACT_INFO}: run the tests as root"
    return ""


needs_mender = pytest.mark.skipif(bool(_why_not()), reason=_why_not() or "ok")


class Device:
    """A Mender client in standalone mode with its data in `folder` and the edgesdk module installed."""

    def __init__(self, folder: Path, trusted: Path, **conf) -> None:
        self.folder, self.root = folder, folder / "edgesdk"
        self.data = folder / "mender-data"
        self.data.mkdir(parents=True)
        (self.data / "device_type").write_text(f"device_type={DEVICE_TYPE}\n")
        self.conf = folder / "mender.conf"
        self.conf.write_text(json.dumps({"DeviceTypeFile": str(self.data / "device_type"), **conf}))
        self.module = mender.install_module(self.root, trusted, modules_dir=MODULES, config=folder / "edgesdk.json",
                                            pythonpath=str(ROOT))

    def mender(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run(["mender", "--config", str(self.conf), "--fallback-config", str(self.folder / "none"),
                               "--data", str(self.data), "--no-syslog", *map(str, args)],
                              capture_output=True, text=True, timeout=300)

    def current(self) -> str:
        return status(self.root, **QUIET)["current"]["version"]

    def releases(self) -> list[str]:
        return sorted(p.name for p in (self.root / "releases").iterdir())


@pytest.fixture
def device(tmp_path, art):
    saved_info = ARTIFACT_INFO.read_bytes() if ARTIFACT_INFO.exists() else None
    saved_module = (MODULES / mender.MODULE_NAME).read_bytes() if (MODULES / mender.MODULE_NAME).exists() else None
    ARTIFACT_INFO.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT_INFO.write_text("artifact_name=factory-image\n")
    try:
        yield lambda **conf: Device(tmp_path / "dev", art.trusted, **conf)
    finally:
        if saved_info is None:
            ARTIFACT_INFO.unlink(missing_ok=True)
        else:
            ARTIFACT_INFO.write_bytes(saved_info)
        if saved_module is None:
            (MODULES / mender.MODULE_NAME).unlink(missing_ok=True)
        else:
            (MODULES / mender.MODULE_NAME).write_bytes(saved_module)


def artifact(pkg: Path, out: Path, device_type: str = DEVICE_TYPE) -> Path:
    r = edgesdk("mender-artifact", pkg, "--device-type", device_type, "-o", out)
    assert r.returncode == 0, r.stderr
    return out


@needs_mender
def test_install_commit_then_rollback_with_the_real_client(device, art, tmp_path):
    device = device()
    a1 = artifact(art.pkgs["1.0.0"], tmp_path / "cls-1.0.0.mender")
    read = subprocess.run(["mender-artifact", "read", str(a1)], capture_output=True, text=True).stdout
    assert DEVICE_TYPE in read and "Type:   edgesdk" in read and "rootfs-image.ppocr_cls.version: 1.0.0" in read
    r = device.mender("install", a1)
    assert r.returncode == 0, r.stderr
    assert "health check passed" in r.stderr
    assert device.mender("commit").returncode == 0
    assert device.current() == "1.0.0" and device.mender("show-artifact").stdout.strip() == "ppocr_cls-1.0.0"
    # the next release, then Mender's rollback: ArtifactRollback -> edgesdk rollback
    assert device.mender("install", artifact(art.pkgs["1.1.0"], tmp_path / "cls-1.1.0.mender")).returncode == 0
    assert device.current() == "1.1.0"
    r = device.mender("rollback")
    assert r.returncode == 0, r.stderr
    assert device.current() == "1.0.0" and device.mender("show-artifact").stdout.strip() == "ppocr_cls-1.0.0"


@needs_mender
def test_failing_package_is_rolled_back_and_the_current_release_untouched(device, art, tmp_path):
    device = device()
    assert device.mender("install", artifact(art.pkgs["1.0.0"], tmp_path / "good.mender")).returncode == 0
    assert device.mender("commit").returncode == 0
    before = device.releases()
    r = device.mender("install", artifact(art.pkgs["wrong"], tmp_path / "wrong.mender"))
    assert r.returncode != 0
    assert "health check of release" in r.stderr and "rolled back to" in r.stderr
    assert device.current() == "1.0.0" and device.releases() == before
    assert device.mender("show-artifact").stdout.strip() == "ppocr_cls-1.0.0"
    assert device.mender("commit").returncode == 2  # nothing left in progress


@needs_mender
def test_artifact_for_another_device_type_is_refused(device, art, tmp_path):
    device = device()
    install(art.pkgs["1.0.0"], device.root, trusted_keys=art.trusted, **QUIET)
    before = device.releases()
    r = device.mender("install", artifact(art.pkgs["1.1.0"], tmp_path / "other.mender", device_type="other-board"))
    assert r.returncode != 0 and "other-board" in r.stderr
    assert device.current() == "1.0.0" and device.releases() == before


def test_module_answers_mender_queries_and_refuses_a_bad_config(tmp_path, capsys):
    cfg = tmp_path / "edgesdk.json"
    assert module_main(["--config", str(cfg), "SupportsRollback", str(tmp_path)]) == 0
    assert module_main(["--config", str(cfg), "NeedsArtifactReboot", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == ["Yes", "No"]
    assert module_main(["--config", str(cfg), "ArtifactInstall", str(tmp_path)]) == 1
    assert "unreadable" in capsys.readouterr().err
    cfg.write_text(json.dumps({"root": str(tmp_path / "root")}))
    (tmp_path / "files").mkdir()
    assert module_main(["--config", str(cfg), "ArtifactInstall", str(tmp_path)]) == 1
    assert "holds 0 .edgepkg files" in capsys.readouterr().err
    assert not (tmp_path / "root" / "current").exists()


@pytest.mark.skipif(shutil.which("mender-artifact") is None, reason="mender-artifact not installed")
def test_mender_artifact_refusals(art, tmp_path, monkeypatch):
    out = tmp_path / "x.mender"
    with pytest.raises(PackageError, match="device type"):
        mender.write_artifact(art.pkgs["1.0.0"], ["bad type!"], out)
    with pytest.raises(PackageError, match="at least one"):
        mender.write_artifact(art.pkgs["1.0.0"], [], out)
    out.write_bytes(b"keep")
    r = edgesdk("mender-artifact", art.pkgs["1.0.0"], "-t", DEVICE_TYPE, "-o", out)
    assert r.returncode == PackageError.exit_code and "--force" in r.stderr and out.read_bytes() == b"keep"
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PackageError, match="mender-artifact is not installed"):
        mender.write_artifact(art.pkgs["1.0.0"], [DEVICE_TYPE], tmp_path / "y.mender")
    assert not list(tmp_path.glob(".y.mender*"))


@needs_mender
def test_signed_artifacts_and_an_unsigned_one_refused(device, art, tmp_path):
    """mender-artifact -k signs; a client with ArtifactVerifyKey installs it and refuses an unsigned one."""
    key, pub = tmp_path / "mender.key", tmp_path / "mender.pub"
    subprocess.run(["openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", str(key)], check=True)
    subprocess.run(["openssl", "ec", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True)
    device = device(ArtifactVerifyKey=str(pub))
    signed = tmp_path / "signed.mender"
    r = edgesdk("mender-artifact", art.pkgs["1.0.0"], "-t", DEVICE_TYPE, "-o", signed, "-k", key)
    assert r.returncode == 0, r.stderr
    assert device.mender("install", signed).returncode == 0 and device.current() == "1.0.0"
    assert device.mender("commit").returncode == 0
    r = device.mender("install", artifact(art.pkgs["1.1.0"], tmp_path / "unsigned.mender"))
    assert r.returncode != 0 and "signature" in r.stderr.lower()
    assert device.current() == "1.0.0"
