"""Install, health check, automatic rollback, rollback, status, prune, lock, uninstall on the real classifier."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from edgesdk.errors import PackageError
from edgesdk.provision.health import HealthCheckFailed
from edgesdk.provision.install import install, rollback, status, uninstall
from edgesdk.provision.store import Store
from provisiondata import QUIET, ROOT, art, classify, edgesdk, text_crop  # noqa: F401 (art: fixture)





def assert_runs(root):
    """The current release's model really classifies real text: upright '0', rotated '180'."""
    bundle = root / "current" / "bundle"
    up, p_up = classify(bundle, text_crop())
    down, p_down = classify(bundle, text_crop(rotated=True))
    assert (up, down) == ("0", "180") and p_up > 0.9 and p_down > 0.9


def test_install_happy_path_cli_and_status(art, tmp_path):
    root = tmp_path / "root"
    r = edgesdk("install", art.pkgs["1.0.0"], "--root", root, "--trusted-keys", art.trusted)
    assert r.returncode == 0, r.stderr
    assert "installed ppocr_cls 1.0.0" in r.stdout and "health check passed" in r.stdout
    assert f"signed by key {art.signer.key_id}" in r.stderr
    st = edgesdk("status", "--root", root, "--json")
    assert st.returncode == 0, st.stderr
    s = json.loads(st.stdout)
    cur = s["current"]
    assert cur["version"] == "1.0.0" and cur["complete"] and cur["healthy"] and cur["key_id"] == art.signer.key_id
    assert cur["health"]["max_abs_error"] < 1e-5 and s["previous"] is None
    assert os.path.islink(root / "current") and os.readlink(root / "current") == f"releases/{cur['release']}"
    assert_runs(root)
    text = edgesdk("status", "--root", root)
    assert "current: ppocr_cls 1.0.0" in text.stdout and "healthy" in text.stdout


def test_upgrade_rollback_prune_downgrade(art, tmp_path):
    root = tmp_path / "root"
    r1 = install(art.pkgs["1.0.0"], root, art.trusted, **QUIET)
    r2 = install(art.pkgs["1.1.0"], root, art.trusted, keep=2, **QUIET)
    assert r2.changed and r2.previous == r1.release
    st = status(root, **QUIET)
    assert (st["current"]["version"], st["previous"]["version"]) == ("1.1.0", "1.0.0")

    # 1.10.0 > 1.2.0 > 1.1.0 semantically (as strings "1.10.0" < "1.2.0")
    r3 = install(art.pkgs["1.10.0"], root, art.trusted, keep=2, **QUIET)
    with pytest.raises(PackageError, match="refusing to downgrade from 1.10.0 to 1.2.0"):
        install(art.pkgs["1.2.0"], root, art.trusted, **QUIET)
    assert status(root, **QUIET)["current"]["version"] == "1.10.0"
    # keep=2: current + previous stay, the oldest went
    assert sorted(Store(root).release_names()) == sorted([r2.release, r3.release])

    same = install(art.pkgs["1.10.0"], root, art.trusted, **QUIET)
    assert not same.changed and "already installed" in same.message

    rb = rollback(root, **QUIET)
    assert rb.release == r2.release
    st = status(root, **QUIET)
    assert (st["current"]["version"], st["previous"]["version"]) == ("1.1.0", "1.10.0") and st["ok"]
    assert_runs(root)
    rollback(root, **QUIET)  # and forward again
    assert status(root, **QUIET)["current"]["version"] == "1.10.0"

    down = install(art.pkgs["1.2.0"], root, art.trusted, allow_downgrade=True, keep=2, **QUIET)
    assert down.changed and status(root, **QUIET)["current"]["version"] == "1.2.0"
    events = [e["event"] for e in Store(root).history(20)]
    assert events.count("install") == 4 and events.count("rollback") == 2


def test_health_failure_rolls_back_by_itself(art, tmp_path):
    root = tmp_path / "root"
    good = install(art.pkgs["1.1.0"], root, art.trusted, **QUIET)
    r = edgesdk("install", art.pkgs["wrong"], "--root", root, "--trusted-keys", art.trusted)
    assert r.returncode == 11
    assert "health check of release 2.0.0-" in r.stderr and f"rolled back to {good.release}" in r.stderr
    assert "differs from the output recorded at pack time" in r.stderr
    st = status(root, **QUIET)
    assert st["current"]["release"] == good.release and st["ok"] and st["previous"] is None
    assert Store(root).release_names() == [good.release]  # the failed release is gone
    last = Store(root).history(1)[0]
    assert last["event"] == "rollback" and last["automatic"] and "max abs error" in last["reason"]
    assert_runs(root)


def test_health_failure_on_first_install_leaves_nothing(art, tmp_path):
    root = tmp_path / "root"
    with pytest.raises(HealthCheckFailed, match="no release is installed now"):
        install(art.pkgs["wrong"], root, art.trusted, **QUIET)
    assert not os.path.lexists(root / "current") and Store(root).release_names() == []


def test_health_check_uses_the_profiles_preferred_backend(art, tmp_path):
    import runtimes
    from edgesdk.profiles import load_profile
    prof = load_profile("intel-xeon-amx")
    want = prof.runnable_backends(runtimes.available_backends())[0].backend
    root = tmp_path / "root"
    r = install(art.pkgs["1.0.0"], root, art.trusted, profile="intel-xeon-amx", **QUIET)
    assert r.health.backend == want and r.health.ok
    # and a profile whose first runnable backend cannot take .onnx falls back to the bundle's backend
    st = edgesdk("status", "--root", root, "--check-health", "--profile", "generic-x86-64", "--json")
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["current"]["health"]["ok"]


def test_unsigned_install_needs_the_flag_and_says_so(art, tmp_path):
    root = tmp_path / "root"
    r = edgesdk("install", art.pkgs["unsigned"], "--root", root, "--trusted-keys", art.trusted)
    assert r.returncode == 11 and "not signed" in r.stderr
    r = edgesdk("install", art.pkgs["unsigned"], "--root", root, "--trusted-keys", art.trusted, "--allow-unsigned")
    assert r.returncode == 0 and "WARNING" in r.stderr and "WITHOUT a trusted signature" in r.stderr
    st = json.loads(edgesdk("status", "--root", root, "--json").stdout)
    assert st["current"]["signed"] is False and st["current"]["key_id"] is None
    assert "UNSIGNED" in edgesdk("status", "--root", root).stdout


def test_concurrent_installs_are_serialized_by_the_lock(art, tmp_path):
    root = tmp_path / "root"
    store = Store(root)
    store.init()
    proc = None
    with store.lock():
        proc = subprocess.Popen([sys.executable, "-m", "edgesdk", "install", str(art.pkgs["1.0.0"]), "--root",
                                 str(root), "--trusted-keys", str(art.trusted)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proc.stderr.readline()  # the installer says it waits, and for whom
        assert f"waiting for another EdgeSDK command (pid {os.getpid()})" in line
        time.sleep(0.3)
        assert proc.poll() is None and store.link("current") is None  # it really waits
        busy = status(root, **QUIET)
        assert busy["busy"] and busy["recovered"] == []
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert store.link("current") is not None
    with store.lock():
        r = edgesdk("install", art.pkgs["1.1.0"], "--root", root, "--trusted-keys", art.trusted,
                    "--lock-timeout", "0.2")
    assert r.returncode == 11 and "gave up after 0.2 s" in r.stderr


def test_stale_staging_is_cleaned_and_damage_is_reported_then_repaired(art, tmp_path):
    root = tmp_path / "root"
    r1 = install(art.pkgs["1.0.0"], root, art.trusted, **QUIET)
    junk = root / "staging" / "1.1.0-abc.123.dead"
    (junk / "bundle").mkdir(parents=True)
    (junk / "bundle" / "half.onnx").write_bytes(b"partial")
    st = status(root, **QUIET)
    assert not junk.exists() and any("1.1.0-abc.123.dead" in a for a in st["recovered"])

    model = root / "current" / "bundle" / "ppocr_cls.onnx"
    with open(model, "r+b") as f:  # bit rot in the running release
        f.seek(5000)
        b = f.read(1)
        f.seek(5000)
        f.write(bytes([b[0] ^ 1]))
    r = edgesdk("status", "--root", root)
    assert r.returncode == 1 and "INCOMPLETE" in r.stdout and "sha256 mismatch" in r.stdout
    fixed = install(art.pkgs["1.0.0"], root, art.trusted, **QUIET)  # same package: repaired beside it
    assert fixed.changed and fixed.release == f"{r1.release}~2"
    st = status(root, **QUIET)
    assert st["ok"] and st["current"]["release"] == fixed.release
    assert_runs(root)


def test_rollback_without_previous_and_status_of_a_non_root(tmp_path):
    (tmp_path / "root").mkdir()
    with pytest.raises(PackageError, match="not an EdgeSDK install root"):
        status(tmp_path / "root", **QUIET)
    r = edgesdk("rollback", "--root", tmp_path / "root")
    assert r.returncode == 11 and "not an EdgeSDK install root" in r.stderr


def test_keep_must_be_positive_and_root_must_be_ours(art, tmp_path):
    with pytest.raises(PackageError, match="--keep must be >= 1"):
        install(art.pkgs["1.0.0"], tmp_path / "r", art.trusted, keep=0, **QUIET)
    other = tmp_path / "home"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(PackageError, match="not empty and is not an EdgeSDK install root"):
        install(art.pkgs["1.0.0"], other, art.trusted, **QUIET)
    with pytest.raises(PackageError, match="not an EdgeSDK install root"):
        uninstall(other, **QUIET)
    assert (other / "notes.txt").read_text() == "mine"


def test_uninstall_removes_only_what_it_installed(art, tmp_path):
    root = tmp_path / "root"
    install(art.pkgs["1.0.0"], root, art.trusted, **QUIET)
    install(art.pkgs["1.1.0"], root, art.trusted, **QUIET)
    with pytest.raises(PackageError, match="no previous release"):
        Store(root).set_link("previous", None) or rollback(root, **QUIET)
    r = edgesdk("uninstall", "--root", root, "--yes")
    assert r.returncode == 0 and "releases/1.1.0-" in r.stdout
    assert not root.exists()
    root.mkdir()
    install(art.pkgs["1.0.0"], root, art.trusted, **QUIET)
    (root / "my-notes.txt").write_text("keep me")
    uninstall(root, **QUIET)
    assert os.listdir(root) == ["my-notes.txt"]


def test_a_model_that_does_not_load_fails_health_and_rolls_back(art, tmp_path):
    from edgesdk.bundle import Bundle, write_bundle
    from edgesdk.provision import health
    from edgesdk.provision.package import pack
    good = Bundle.load(art.bundle)
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07" + os.urandom(4000))  # hashes fine, not a model
    m = good.manifest
    m2 = type(m).from_dict(m.to_dict())
    broken = write_bundle(tmp_path / "broken", {m.model: tmp_path / "garbage.onnx"}, m2)
    pkg = pack(broken.path, tmp_path / "broken.edgepkg", "3.0.0", key=art.signer.private_path,
               health_sample=health.record(good, text_crop())).path
    root = tmp_path / "root"
    first = install(art.pkgs["1.0.0"], root, art.trusted, **QUIET)
    with pytest.raises(HealthCheckFailed, match="failed to load or run.*rolled back to " + first.release):
        install(pkg, root, art.trusted, **QUIET)
    assert status(root, **QUIET)["current"]["release"] == first.release


def test_compare_explains_each_kind_of_mismatch():
    import numpy as np

    from edgesdk.provision.health import HealthSample, compare
    sample = HealthSample({}, {"y": np.array([[0.9, 0.1]], np.float32)}, rtol=1e-3, atol=1e-3, backend="x")
    assert compare({"y": np.array([[0.9004, 0.1]], np.float32)}, sample)[0]
    cases = [({}, "output 'y' is missing"), ({"y": np.zeros((2, 2), np.float32)}, "has shape"),
             ({"y": np.array([[np.nan, 0.1]], np.float32)}, "NaN or inf"),
             ({"y": np.array([[0.1, 0.9]], np.float32)}, "max abs error 0.8")]
    for outputs, message in cases:
        ok, reason, _ = compare(outputs, sample)
        assert not ok and message in reason
