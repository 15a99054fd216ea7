"""File-system faults on real mounts: a full disk (a small tmpfs), a read-only remount, and
downloads that never end. Each gives one paragraph and a non-zero exit, never a traceback,
and leaves no partial files. Needs root to mount; skipped cleanly where mounting is impossible."""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edgesdk.errors import PackageError
from edgesdk.provision.fetch import fetch
from edgesdk.provision.install import install, status
from provisiondata import QUIET, art, edgesdk  # noqa: F401 (art: fixture)


@pytest.fixture
def tmpfs(tmp_path):
    mounts = []

    def make(size: str):
        d = tmp_path / f"mnt{len(mounts)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(d)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounts.append(d)
        return d
    yield make
    for d in mounts:
        subprocess.run(["umount", "-l", str(d)], check=False)


def _remount(mnt, mode: str) -> None:
    r = subprocess.run(["mount", "-o", f"remount,{mode}", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot remount {mode}: {r.stderr.strip()}")


def _one_paragraph(r, *needles):
    assert r.returncode == 11, (r.stdout, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in r.stderr and len(errors) == 1 and r.stderr.splitlines()[-1] == errors[0], r.stderr
    for n in needles:
        assert n in errors[0], r.stderr


def _fill(mnt, leave: int) -> None:
    free = shutil.disk_usage(mnt).free
    with open(mnt / "filler", "wb") as f:
        f.write(b"\0" * max(free - leave, 0))


def test_full_disk_on_first_install_leaves_nothing_behind(art, tmpfs):
    mnt = tmpfs("300k")  # the package unpacks to ~600 KB
    root = mnt / "root"
    r = edgesdk("install", art.pkgs["1.0.0"], "--root", root, "--trusted-keys", art.trusted)
    _one_paragraph(r, "No space left on device (ENOSPC)", "free space")
    assert os.listdir(root / "staging") == [] and os.listdir(root / "releases") == []


def test_full_disk_during_an_upgrade_keeps_the_running_release(art, tmpfs):
    mnt = tmpfs("8m")
    root = mnt / "root"
    first = install(art.pkgs["1.0.0"], root, art.trusted, **QUIET)
    _fill(mnt, 200_000)
    r = edgesdk("install", art.pkgs["1.1.0"], "--root", root, "--trusted-keys", art.trusted)
    _one_paragraph(r, "ENOSPC")
    st = status(root, **QUIET)
    assert st["ok"] and st["current"]["release"] == first.release and os.listdir(root / "staging") == []
    (mnt / "filler").unlink()
    assert install(art.pkgs["1.1.0"], root, art.trusted, **QUIET).changed


def test_read_only_root_status_works_and_changes_are_refused(art, tmpfs):
    mnt = tmpfs("8m")
    root = mnt / "root"
    install(art.pkgs["1.0.0"], root, art.trusted, **QUIET)
    _remount(mnt, "ro")
    r = edgesdk("status", "--root", root)
    assert r.returncode == 0, r.stderr
    assert "read-only" in r.stdout and "healthy" in r.stdout
    _one_paragraph(edgesdk("install", art.pkgs["1.1.0"], "--root", root, "--trusted-keys", art.trusted),
                   "read-only")
    _one_paragraph(edgesdk("rollback", "--root", root), "read-only")
    _one_paragraph(edgesdk("uninstall", "--root", root, "--yes"), "read-only")
    _one_paragraph(edgesdk("install", art.pkgs["1.1.0"], "--root", mnt / "new", "--trusted-keys", art.trusted),
                   "Read-only file system (EROFS)")


def test_read_only_root_with_an_interrupted_switch_reports_it(art, tmpfs):
    mnt = tmpfs("8m")
    root = mnt / "root"
    r1 = install(art.pkgs["1.0.0"], root, art.trusted, **QUIET)
    (root / "pending.json").write_text('{"release": "%s", "restore_current": null, "reason": "install"}' % r1.release)
    _remount(mnt, "ro")
    r = edgesdk("status", "--root", root)
    assert r.returncode == 1 and "awaits recovery" in r.stdout, (r.stdout, r.stderr)
    _remount(mnt, "rw")
    st = status(root, **QUIET)  # writable again: the trial is finished
    assert st["ok"] and st["pending"] is None


# ----------------------------------------------------------------------------- downloads
class _Endless(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path == "/announced.edgepkg":
            self.send_header("Content-Length", str(1 << 40))
        self.end_headers()
        try:
            for _ in range(1 << 16):  # 4 GiB at most, if nothing stops it
                self.wfile.write(b"\0" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def endless():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_an_endless_body_stops_at_the_cap_and_leaves_no_part(endless, tmp_path):
    with pytest.raises(PackageError, match="larger than the 3000000-byte cap"):
        fetch(f"{endless}/pkg.edgepkg", tmp_path / "dl", sha256="0" * 64, max_bytes=3_000_000, retries=0)
    assert os.listdir(tmp_path / "dl") == []


def test_an_announced_size_over_the_cap_is_refused_before_downloading(endless, tmp_path):
    with pytest.raises(PackageError, match="announces 1099511627776 bytes"):
        fetch(f"{endless}/announced.edgepkg", tmp_path / "dl", max_bytes=10 << 20, retries=0)
    assert os.listdir(tmp_path / "dl") == []


def test_an_endless_body_stops_before_the_disk_is_full(endless, art, tmpfs):
    mnt = tmpfs("16m")
    root = mnt / "root"
    r = edgesdk("install", f"{endless}/pkg.edgepkg", "--root", root, "--trusted-keys", art.trusted,
                "--sha256", "0" * 64)
    _one_paragraph(r, "would leave less than")
    assert os.listdir(root / "downloads") == [] and shutil.disk_usage(mnt).free > 10 << 20


def test_install_cli_max_download_bytes(endless, art, tmp_path):
    r = edgesdk("install", f"{endless}/pkg.edgepkg", "--root", tmp_path / "root", "--trusted-keys", art.trusted,
                "--sha256", "0" * 64, "--max-download-bytes", "1000000")
    _one_paragraph(r, "larger than the 1000000-byte cap")
    assert os.listdir(tmp_path / "root" / "downloads") == []


class _PackageThenGarbage(BaseHTTPRequestHandler):
    """A real signed package followed by an endless tail: only the signed manifest can tell the cap."""
    protocol_version = "HTTP/1.1"
    package = b""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        try:
            self.wfile.write(self.package)
            for _ in range(1 << 15):  # 2 GiB at most
                self.wfile.write(os.urandom(1024) * 64)
        except (BrokenPipeError, ConnectionResetError):
            pass


def test_the_signed_manifest_caps_a_download_that_does_not_end(art, tmp_path):
    handler = type("H", (_PackageThenGarbage,), {"package": art.pkgs["1.0.0"].read_bytes()})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        root = tmp_path / "root"
        r = edgesdk("install", f"http://127.0.0.1:{srv.server_address[1]}/pkg.edgepkg", "--root", root,
                    "--trusted-keys", art.trusted, "--sha256", "0" * 64)
    finally:
        srv.shutdown()
        srv.server_close()
    _one_paragraph(r, "-byte cap")
    cap = int(r.stderr.split("larger than the ")[1].split("-byte")[0])
    assert art.pkgs["1.0.0"].stat().st_size < cap < 2 * art.pkgs["1.0.0"].stat().st_size
    assert os.listdir(root / "downloads") == []


def test_pack_and_keygen_on_a_full_or_read_only_disk(art, tmpfs):
    mnt = tmpfs("200k")
    r = edgesdk("pack", art.bundle, "-o", mnt / "x.edgepkg", "--version", "1.0.0", "--key", art.signer.private_path)
    _one_paragraph(r, "packing failed", "ENOSPC")
    assert [p for p in os.listdir(mnt) if not p.startswith(".edgepkg-")] == []
    _remount(mnt, "ro")
    _one_paragraph(edgesdk("keygen", "-o", mnt / "keys"), "EROFS")


def test_an_oversized_gzip_file_name_is_refused_before_reading(tmp_path):
    import gzip
    import time
    from edgesdk.provision.extract import scan
    pkg = tmp_path / "name.edgepkg"
    with open(pkg, "wb") as raw:
        raw.write(b"\x1f\x8b\x08\x08" + b"\0" * 6 + b"n" * (8 << 20))  # FNAME without its NUL
    t0 = time.perf_counter()
    with pytest.raises(PackageError, match="gzip header's file name or comment is longer"):
        scan(pkg)
    assert time.perf_counter() - t0 < 2.0
    with open(pkg, "wb") as raw, gzip.GzipFile(filename="ok-name.tar", fileobj=raw, mode="wb") as gz:
        gz.write(b"\0" * 1024)
    assert scan(pkg) == []
