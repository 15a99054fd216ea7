"""Downloading packages: a local HTTP server that drops the connection halfway; resume with Range."""
from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edgesdk.errors import PackageError
from edgesdk.provision.fetch import fetch
from edgesdk.provision.install import install, status
from provisiondata import QUIET, art  # noqa: F401 (art: fixture)

ETAG = '"pkg-v1"'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append({"path": self.path, "range": self.headers.get("Range"),
                             "if_range": self.headers.get("If-Range")})
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start, rng = 0, self.headers.get("Range")
        if rng and srv.ranges and self.headers.get("If-Range") in (None, ETAG):
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", ETAG)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if srv.drops > 0:  # send half, then cut the connection like a flaky network
            srv.drops -= 1
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def http_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.requests, srv.files, srv.drops, srv.ranges = [], {}, 0, True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()



def test_dropped_connection_resumes_with_range_and_sha256_holds(art, http_server, tmp_path):
    data = art.pkgs["1.0.0"].read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    http_server.files["/pkgs/cls-1.0.0.edgepkg"] = data
    http_server.drops = 1
    said = []
    path = fetch(f"{http_server.url}/pkgs/cls-1.0.0.edgepkg", tmp_path / "dl", sha256=sha, progress=said.append)
    assert path.read_bytes() == data and hashlib.sha256(path.read_bytes()).hexdigest() == sha
    half = len(data) // 2
    assert [r["range"] for r in http_server.requests] == [None, f"bytes={half}-"]
    assert http_server.requests[1]["if_range"] == ETAG  # a changed file would restart, not be spliced
    assert any(f"connection lost at {half} bytes" in m for m in said)
    assert any(f"resuming at byte {half}" in m for m in said)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["cls-1.0.0.edgepkg"]  # no .part left


def test_resume_across_processes_from_a_part_file(art, http_server, tmp_path):
    data = art.pkgs["1.0.0"].read_bytes()
    url = f"{http_server.url}/p.edgepkg"
    http_server.files["/p.edgepkg"] = data
    dl = tmp_path / "dl"
    dl.mkdir()
    # what a process killed mid-download leaves behind
    (dl / "p.edgepkg.part").write_bytes(data[:1000])
    (dl / "p.edgepkg.part.json").write_text(json.dumps({"url": url, "etag": ETAG}))
    path = fetch(url, dl, sha256=hashlib.sha256(data).hexdigest())
    assert path.read_bytes() == data and http_server.requests[0]["range"] == "bytes=1000-"


def test_server_without_range_support_restarts_and_still_checks(art, http_server, tmp_path):
    data = art.pkgs["1.0.0"].read_bytes()
    http_server.files["/p.edgepkg"] = data
    http_server.drops, http_server.ranges = 1, False
    path = fetch(f"{http_server.url}/p.edgepkg", tmp_path, sha256=hashlib.sha256(data).hexdigest())
    assert path.read_bytes() == data and len(http_server.requests) == 2


def test_sha256_mismatch_keeps_nothing(art, http_server, tmp_path):
    http_server.files["/p.edgepkg"] = art.pkgs["1.0.0"].read_bytes()
    with pytest.raises(PackageError, match="differs from the expected"):
        fetch(f"{http_server.url}/p.edgepkg", tmp_path / "dl", sha256="0" * 64)
    assert list((tmp_path / "dl").iterdir()) == []


def test_http_errors_and_unreachable_servers(http_server, tmp_path):
    with pytest.raises(PackageError, match="HTTP 404"):
        fetch(f"{http_server.url}/missing.edgepkg", tmp_path)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PackageError, match="after 2 attempts"):
        fetch(f"http://127.0.0.1:{port}/p.edgepkg", tmp_path, retries=1)
    with pytest.raises(PackageError, match="not an http"):
        fetch("ftp://example.com/p", tmp_path)


def test_install_from_url_with_a_drop(art, http_server, tmp_path):
    data = art.pkgs["1.1.0"].read_bytes()
    http_server.files["/cls-1.1.0.edgepkg"] = data
    http_server.drops = 1
    root = tmp_path / "root"
    r = install(f"{http_server.url}/cls-1.1.0.edgepkg", root, art.trusted,
                sha256=hashlib.sha256(data).hexdigest(), **QUIET)
    assert r.changed and r.version == "1.1.0"
    st = status(root, **QUIET)
    assert st["ok"] and st["current"]["version"] == "1.1.0"
    assert list((root / "downloads").iterdir()) == []  # the download is not kept after install
    assert [q["range"] for q in http_server.requests] == [None, f"bytes={len(data) // 2}-"]


@pytest.mark.parametrize("path", ["/.", "/..", "/", "/dir/."])
def test_url_paths_that_name_no_file_still_download_to_a_file(art, http_server, tmp_path, path):
    data = art.pkgs["1.0.0"].read_bytes()
    http_server.files[path] = data
    got = fetch(http_server.url + path, tmp_path / "dl", sha256=hashlib.sha256(data).hexdigest())
    assert got == tmp_path / "dl" / "package.edgepkg" and got.read_bytes() == data


def test_redirects_leave_http_only_for_http(tmp_path):
    from http.server import BaseHTTPRequestHandler

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/evil.edgepkg")
            self.send_header("Content-Length", "0")
            self.end_headers()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(PackageError, match="redirects to 'ftp://127.0.0.1/evil.edgepkg', which is not http"):
            fetch(f"http://127.0.0.1:{srv.server_address[1]}/pkg.edgepkg", tmp_path / "dl", retries=0)
    finally:
        srv.shutdown()
        srv.server_close()
    assert [p for p in (tmp_path / "dl").iterdir()] == []
