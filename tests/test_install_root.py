"""An install root that cannot be redirected, self-contained releases, a race on a new root, and
same-version reinstalls: each from a real planted file-system state or a crafted signed package."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgesdk.errors import PackageError
from edgesdk.provision.install import install, rollback, status, uninstall
from edgesdk.provision.package import pack
from provisiondata import QUIET, ROOT, art, edgesdk, read_members, resign, text_crop  # noqa: F401 (art: fixture)


@pytest.fixture
def root(art, tmp_path):
    r = tmp_path / "root"
    install(art.pkgs["1.0.0"], r, art.trusted, **QUIET)
    return r


def _victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim.txt"
    v.write_text("precious\n")
    return v


# ----------------------------------------------------------------------------- planted links
def test_symlinked_lock_is_refused_and_its_target_untouched(root, tmp_path):
    victim = _victim(tmp_path)
    (root / ".lock").unlink()
    (root / ".lock").symlink_to(victim)
    r = edgesdk("status", "--root", root)
    assert r.returncode == 11 and "Traceback" not in r.stderr and ".lock is a symlink" in r.stderr
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("entry", ["staging", "downloads", "releases"])
def test_symlinked_directories_are_refused_and_not_emptied(art, root, tmp_path, entry):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    os.rename(root / entry, tmp_path / f"moved-{entry}")
    (root / entry).symlink_to(elsewhere)
    for args in (("status", "--root", root), ("uninstall", "--root", root, "--yes"),
                 ("install", art.pkgs["1.1.0"], "--root", root, "--trusted-keys", art.trusted)):
        r = edgesdk(*args)
        assert r.returncode == 11 and f"{entry} is a symlink, not the directory EdgeSDK keeps there" in r.stderr
    assert sorted(os.listdir(elsewhere)) == ["keep.txt"]


def test_symlinked_history_is_not_appended_through(art, root, tmp_path):
    victim = _victim(tmp_path)
    (root / "history.jsonl").unlink()
    (root / "history.jsonl").symlink_to(victim)
    with pytest.raises(PackageError, match="history.jsonl is a symlink"):
        install(art.pkgs["1.1.0"], root, art.trusted, **QUIET)
    assert victim.read_text() == "precious\n"


def test_a_symlinked_root_is_refused(art, root, tmp_path):
    link = tmp_path / "link-root"
    link.symlink_to(root)
    with pytest.raises(PackageError, match="is a symlink"):
        status(link, **QUIET)
    with pytest.raises(PackageError, match="is a symlink"):
        install(art.pkgs["1.1.0"], link, art.trusted, **QUIET)


def test_current_pointing_outside_releases_is_not_healthy(root, tmp_path):
    """`current` -> an outside copy named like a release: its basename must not be trusted."""
    name = os.readlink(root / "current").split("/")[1]
    fake = tmp_path / "outside" / name
    subprocess.run(["cp", "-a", str(root / "releases" / name), str(fake.parent)], check=False) \
        if fake.parent.mkdir() is None else None
    os.replace(root / "current", root / "old-current")
    (root / "current").symlink_to(fake)
    r = edgesdk("status", "--root", root)
    assert r.returncode == 11 and "not to a release under releases/" in r.stderr and "healthy" not in r.stdout
    (root / "current").unlink()
    (root / "current").symlink_to(f"releases/../../outside/{name}")
    with pytest.raises(PackageError, match="not to a release under releases/"):
        status(root, **QUIET)


# ----------------------------------------------------------------------------- owners and modes
def test_root_or_entries_writable_by_others_are_refused(art, root):
    os.chmod(root, 0o777)
    with pytest.raises(PackageError, match=r"writable by group or others \(mode 0777\)"):
        install(art.pkgs["1.1.0"], root, art.trusted, **QUIET)
    os.chmod(root, 0o755)
    os.chmod(root / "staging", 0o775)
    with pytest.raises(PackageError, match="staging is writable by group or others"):
        status(root, **QUIET)
    os.chmod(root / "staging", 0o755)
    assert status(root, **QUIET)["ok"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files to another user")
def test_entries_owned_by_the_service_user_are_refused(art, root):
    release = next((root / "releases").iterdir())
    os.chown(release, 4321, 4321)  # e.g. the service user, who could then plant links inside
    with pytest.raises(PackageError, match="owned by uid 4321"):
        install(art.pkgs["1.1.0"], root, art.trusted, **QUIET)
    os.chown(release, 0, 0)
    os.chown(root / "pending.json" if (root / "pending.json").exists() else root, 4321, -1)
    with pytest.raises(PackageError, match="owned by uid 4321"):
        rollback(root, **QUIET)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as another user")
def test_status_as_an_unprivileged_user_reads_a_root_owned_root(root):
    """The service user reads status (read-only: it cannot write the root, so it cannot plant)."""
    for folder in (root.parent, root.parent.parent, root.parent.parent.parent):
        os.chmod(folder, 0o755)  # pytest's folders are 0700; the root itself stays as installed
    r = subprocess.run(["setpriv", "--reuid=4321", "--regid=4321", "--clear-groups", sys.executable, "-m", "edgesdk",
                        "status", "--root", str(root)], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "HOME": "/tmp"})
    if r.returncode != 0 and "Permission denied" in r.stderr and "edgesdk" not in r.stderr:
        pytest.skip("the repository is not readable by another user here")
    assert r.returncode == 0, r.stderr
    assert "read-only" in r.stdout and "healthy" in r.stdout


# ----------------------------------------------------------------------------- replaced entries
@pytest.mark.parametrize("entry, make, message", [
    ("current", lambda p: p.mkdir(), "current is a directory, not the symlink"),
    ("releases", lambda p: p.write_text("x"), "releases is a regular file, not the directory"),
    ("pending.json", lambda p: p.mkdir(), "pending.json is a directory, not the regular file"),
    ("staging", lambda p: os.mkfifo(p), "staging is a special file"),
])
def test_replaced_entries_give_one_paragraph(art, root, tmp_path, entry, make, message):
    target = root / entry
    if target.is_symlink() or target.is_file():
        os.replace(target, tmp_path / "aside")
    elif target.exists():
        os.rename(target, tmp_path / "aside")
    make(target)
    for args in (("status", "--root", root), ("install", art.pkgs["1.1.0"], "--root", root, "--trusted-keys",
                                               art.trusted), ("rollback", "--root", root)):
        r = edgesdk(*args)
        assert r.returncode == 11 and "Traceback" not in r.stderr and message in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1


@pytest.mark.parametrize("content", ['[1, 2]', '"text"', '{"release": "../../etc"}', '{"release": 7}', "[" * 50_000])
def test_pending_marker_valid_json_but_not_a_record_does_not_wedge(art, root, content):
    (root / "pending.json").write_text(content)
    st = status(root, **QUIET)
    assert st["ok"] and "removed an unreadable pending marker" in st["recovered"]
    assert install(art.pkgs["1.1.0"], root, art.trusted, **QUIET).changed


# ----------------------------------------------------------------------------- a new root, four installers
def test_four_simultaneous_first_installs_into_a_new_root(art, tmp_path):
    for trial in range(2):
        root = tmp_path / f"new-{trial}"
        procs = [subprocess.Popen([sys.executable, "-m", "edgesdk", "install", str(art.pkgs["1.0.0"]), "--root",
                                   str(root), "--trusted-keys", str(art.trusted)], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
        assert all(code == 0 for code, _, _ in results), [err for _, _, err in results]
        assert sum("installed ppocr_cls 1.0.0" in out for _, out, _ in results) == 1
        assert status(root, **QUIET)["ok"]


# ----------------------------------------------------------------------------- self-contained releases
def _bundle_manifest(pkg: Path) -> dict:
    return json.loads(next(d for i, d in read_members(pkg) if i.name == "bundle/manifest.json"))


def test_signed_bundle_naming_an_outside_model_is_refused(art, tmp_path):
    outside = art.bundle / "ppocr_cls.onnx"  # a real, matching model outside the release
    manifest = _bundle_manifest(art.pkgs["1.0.0"])
    digest = manifest["files"].pop("ppocr_cls.onnx")
    manifest["model"], manifest["files"][str(outside)] = str(outside), digest
    evil = resign(art, art.pkgs["1.0.0"], tmp_path / "abs.edgepkg",
                  {"bundle/manifest.json": (json.dumps(manifest, indent=2) + "\n").encode()})
    root = tmp_path / "root"
    with pytest.raises(PackageError, match="not self-contained.*not a relative path inside the bundle"):
        install(evil, root, art.trusted, **QUIET)
    assert status(root, **QUIET)["current"] is None and os.listdir(root / "releases") == []
    assert os.listdir(root / "staging") == []


def test_status_flags_a_release_whose_bundle_leaves_it(root, tmp_path):
    """A planted link inside the release (the model's folder moved elsewhere) is not healthy."""
    name = os.readlink(root / "current").split("/")[1]
    bundle = root / "releases" / name / "bundle"
    os.rename(bundle, tmp_path / "bundle-elsewhere")
    bundle.symlink_to(tmp_path / "bundle-elsewhere")
    st = status(root, **QUIET)
    assert not st["ok"] and any("resolves outside the release" in p for p in st["current"]["problems"])


def test_pack_refuses_a_bundle_listing_host_files(art, tmp_path):
    import hashlib
    import shutil
    bundle = tmp_path / "bundle"
    shutil.copytree(art.bundle, bundle)
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"]["../../../etc/hostname"] = hashlib.sha256(Path("/etc/hostname").read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(m))
    out = tmp_path / "x.edgepkg"
    with pytest.raises(PackageError, match="not self-contained.*etc/hostname"):
        pack(bundle, out, "1.0.0", key=art.signer.private_path, sample=art.sample)
    assert not out.exists()
    m["files"].pop("../../../etc/hostname")
    m["model"] = "/etc/hostname"
    (bundle / "manifest.json").write_text(json.dumps(m))
    r = edgesdk("pack", bundle, "-o", out, "--version", "1.0.0", "--key", art.signer.private_path)
    assert r.returncode == 11 and "not self-contained" in r.stderr and not out.exists()


# ----------------------------------------------------------------------------- same version, other content
@pytest.mark.parametrize("version", ["1.0.0", "1.0.0+build.7"])
def test_same_version_with_other_content_needs_allow_reinstall(art, root, tmp_path, version):
    other = pack(art.bundle, tmp_path / "other.edgepkg", version, key=art.signer.private_path,
                 sample=text_crop(rotated=True)).path
    r = edgesdk("install", other, "--root", root, "--trusted-keys", art.trusted)
    assert r.returncode == 11 and "already current" in r.stderr and "--allow-reinstall" in r.stderr
    r = edgesdk("install", other, "--root", root, "--trusted-keys", art.trusted, "--allow-reinstall")
    assert r.returncode == 0, r.stderr
    assert status(root, **QUIET)["current"]["version"] == version


def test_a_group_writable_umask_still_makes_a_valid_root(art, tmp_path):
    old = os.umask(0o002)
    try:
        root = tmp_path / "shared-umask"
        install(art.pkgs["1.0.0"], root, art.trusted, **QUIET)
    finally:
        os.umask(old)
    assert os.stat(root).st_mode & 0o022 == 0 and os.stat(root / "staging").st_mode & 0o022 == 0
    assert status(root, **QUIET)["ok"]


def test_a_folder_above_the_root_writable_by_others_is_refused(art, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # anyone could rename the root away and put a symlink in its place
    with pytest.raises(PackageError, match="a folder above the install root .* mode 0777"):
        install(art.pkgs["1.0.0"], shared / "root", art.trusted, **QUIET)
    os.chmod(shared, 0o1777)  # sticky, like /tmp: others cannot rename what is not theirs
    assert install(art.pkgs["1.0.0"], shared / "root", art.trusted, **QUIET).changed


def test_a_hard_linked_history_is_refused(art, root, tmp_path):
    victim = _victim(tmp_path)
    (root / "history.jsonl").unlink()
    os.link(victim, root / "history.jsonl")
    with pytest.raises(PackageError, match="history.jsonl has 2 hard links"):
        install(art.pkgs["1.1.0"], root, art.trusted, **QUIET)
    assert victim.read_text() == "precious\n"
