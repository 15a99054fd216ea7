"""Packages through a real OCI registry (Debian's docker-registry on 127.0.0.1): push, pull, install
oci://, resume, digests, TLS with a generated CA, basic auth; every refusal leaves the device as it was."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from certs import CertAuthority, self_signed
from edgesdk.errors import PackageError
from edgesdk.fleet import oci
from edgesdk.fleet.ociref import parse_ref
from edgesdk.fleet.registry import Credentials, Registry, RegistryError
from edgesdk.provision.install import install, status
from mqttbroker import free_port
from ociregistry import DockerRegistry, find_htpasswd, find_registry
from provisiondata import QUIET, ROOT, art  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(find_registry() is None,
                                reason="docker-registry not installed (tools/install_system_deps.sh)")
needs_htpasswd = pytest.mark.skipif(find_htpasswd() is None,
                                    reason="htpasswd not installed (apache2-utils; tools/install_system_deps.sh)")


def edgesdk(*args, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgesdk", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, input=stdin, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with DockerRegistry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return CertAuthority(tmp_path_factory.mktemp("ca"))


def plain(reg: DockerRegistry) -> Registry:
    return Registry(reg.host, plain_http=True)


def installed(root) -> str:
    return status(root, **QUIET)["current"]["version"]


# ------------------------------------------------------------------ references
@pytest.mark.parametrize("text, problem", [
    ("http://h/r:t", "not an OCI reference"), ("oci://h", "expected oci://"), ("oci://h/Repo:t", "repository"),
    ("oci://h/r:t@sha256:abc", "64 lowercase hex"), ("oci://h/r:-bad", "tag"),
])
def test_bad_references_say_what_is_wrong(text, problem):
    with pytest.raises(PackageError, match=problem):
        parse_ref(text)


def test_reference_defaults_to_latest_and_keeps_a_pin():
    assert parse_ref("oci://127.0.0.1:5000/edge/cls").tag == "latest"
    d = "sha256:" + "a" * 64
    r = parse_ref(f"oci://127.0.0.1:5000/edge/cls:1.0@{d}")
    assert (r.host, r.repo, r.tag, r.digest, r.reference) == ("127.0.0.1:5000", "edge/cls", "1.0", d, d)


# ------------------------------------------------------------------ push / pull / install
def test_push_pull_round_trip_follows_oras_conventions(registry, art, tmp_path):
    pkg = art.pkgs["1.0.0"]
    r = edgesdk("push", pkg, f"oci://{registry.host}/edge/cls:1.0.0", "--plain-http")
    assert r.returncode == 0, r.stderr
    again = oci.push(pkg, f"oci://{registry.host}/edge/cls:1.0.0", plain(registry))
    assert again.reused and again.bytes_moved < 2000  # the blob is not uploaded twice
    req = urllib.request.Request(f"http://{registry.host}/v2/edge/cls/manifests/1.0.0",
                                 headers={"Accept": oci.MANIFEST_TYPE})
    manifest = json.loads(urllib.request.urlopen(req).read())
    assert manifest["artifactType"] == oci.ARTIFACT_TYPE and manifest["config"]["mediaType"] == oci.EMPTY_TYPE
    assert manifest["layers"][0]["annotations"][oci.TITLE] == pkg.name
    assert manifest["annotations"]["org.opencontainers.image.version"] == "1.0.0"
    r = edgesdk("pull", f"oci://{registry.host}/edge/cls:1.0.0", "--plain-http", "-o", tmp_path, "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert (tmp_path / pkg.name).read_bytes() == pkg.read_bytes()
    assert got["manifest_digest"] == again.manifest_digest and got["bytes_moved"] == pkg.stat().st_size


def test_install_from_oci_then_by_digest(registry, art, tmp_path):
    t = oci.push(art.pkgs["1.1.0"], f"oci://{registry.host}/edge/cls:1.1.0", plain(registry))
    root = tmp_path / "dev"
    r = edgesdk("install", f"oci://{registry.host}/edge/cls:1.1.0", "--plain-http", "--root", root,
                "--trusted-keys", art.trusted)
    assert r.returncode == 0, r.stderr
    assert installed(root) == "1.1.0" and not list((root / "downloads" / "oci").glob("*.edgepkg*"))  # only .pull.lock
    r = edgesdk("install", f"oci://{registry.host}/edge/cls@{t.manifest_digest}", "--plain-http", "--root", root,
                "--trusted-keys", art.trusted)
    assert r.returncode == 0 and "already installed" in r.stdout, r.stderr


def test_pull_resumes_a_partial_download(registry, art, tmp_path):
    pkg = art.pkgs["1.2.0"]
    t = oci.push(pkg, f"oci://{registry.host}/edge/cls:1.2.0", plain(registry))
    data, half = pkg.read_bytes(), pkg.stat().st_size // 2
    (tmp_path / (pkg.name + ".part")).write_bytes(data[:half])
    (tmp_path / (pkg.name + ".part.json")).write_text(json.dumps({"digest": t.blob_digest}))
    got = oci.pull(f"oci://{registry.host}/edge/cls:1.2.0", tmp_path, plain(registry))
    assert got.bytes_moved == len(data) - half and got.path.read_bytes() == data
    # a .part holding other bytes: detected by the digest, downloaded again from zero
    got.path.unlink()
    (tmp_path / (pkg.name + ".part")).write_bytes(b"x" * half)
    (tmp_path / (pkg.name + ".part.json")).write_text(json.dumps({"digest": t.blob_digest}))
    assert oci.pull(f"oci://{registry.host}/edge/cls:1.2.0", tmp_path, plain(registry)).path.read_bytes() == data


def test_push_resumes_an_interrupted_upload(registry, art, monkeypatch):
    """The second chunk's PATCH fails once: the upload asks the registry where it stands and goes on."""
    monkeypatch.setattr(oci, "CHUNK", 64 << 10)
    reg, real, calls = plain(registry), Registry.request, {"n": 0}

    def flaky(self, method, url, headers=None, data=None, ok=(200,), what=""):
        if method == "PATCH":
            calls["n"] += 1
            if calls["n"] == 2:
                raise RegistryError(f"cannot reach registry {self.host}: connection reset (injected)", transient=True)
        return real(self, method, url, headers, data, ok, what)

    monkeypatch.setattr(Registry, "request", flaky)
    said = []
    t = oci.push(art.pkgs["1.10.0"], f"oci://{registry.host}/edge/resume:1", reg, progress=said.append)
    assert any("resuming at byte 65536" in s for s in said), said
    monkeypatch.setattr(Registry, "request", real)
    got = oci.pull(f"oci://{registry.host}/edge/resume:1", registry.folder / "dl", plain(registry))
    assert got.blob_digest == t.blob_digest and got.path.read_bytes() == art.pkgs["1.10.0"].read_bytes()


# ------------------------------------------------------------------ refusals leave the device as it was
@pytest.fixture
def device(registry, art, tmp_path):
    root = tmp_path / "dev"
    install(art.pkgs["1.0.0"], root, trusted_keys=art.trusted, **QUIET)
    return root


def _refused(root, source, *extra, stdin: str = "", env: dict | None = None) -> str:
    before = sorted(p.name for p in (root / "releases").iterdir())
    r = edgesdk("install", source, "--root", root, *extra, stdin=stdin, env=env)
    assert r.returncode == PackageError.exit_code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.splitlines()[-1].startswith("error: ")
    assert installed(root) == "1.0.0" and sorted(p.name for p in (root / "releases").iterdir()) == before
    assert not [p for p in (root / "downloads").rglob("*") if p.is_file() and not p.name.endswith((".part.json", ".pull.lock"))]
    return r.stderr


def test_unreachable_registry(registry, device):
    err = _refused(device, f"oci://127.0.0.1:{free_port()}/edge/cls:1.1.0", "--plain-http")
    assert "cannot reach registry" in err
    # HTTPS to a registry without TLS: says which flag is missing
    assert "without TLS needs --plain-http" in _refused(device, f"oci://{registry.host}/edge/cls:1.1.0")


def test_wrong_digest_and_corrupt_blob(registry, art, device):
    wrong = "sha256:" + "0" * 64
    assert "not found" in _refused(device, f"oci://{registry.host}/edge/cls@{wrong}", "--plain-http")
    t = oci.push(art.pkgs["1.1.0"], f"oci://{registry.host}/edge/corrupt:1.1.0", plain(registry))
    blob = registry.blob_file(t.blob_digest)
    good = blob.read_bytes()
    try:
        blob.write_bytes(good[:-10] + b"X" * 10)  # same size, other bytes: storage corruption or tampering
        err = _refused(device, f"oci://{registry.host}/edge/corrupt:1.1.0", "--plain-http")
        assert "wrong digest" in err and t.blob_digest in err
    finally:
        blob.write_bytes(good)


def test_a_tag_that_moved(registry, art, device):
    old = oci.push(art.pkgs["1.1.0"], f"oci://{registry.host}/edge/moving:stable", plain(registry))
    oci.push(art.pkgs["1.2.0"], f"oci://{registry.host}/edge/moving:stable", plain(registry))
    err = _refused(device, f"oci://{registry.host}/edge/moving:stable@{old.manifest_digest}", "--plain-http")
    assert "moved" in err


def test_not_an_edgesdk_artifact(registry, device):
    reg, ref = plain(registry), parse_ref(f"oci://{registry.host}/edge/other:1")
    oci._upload_bytes(reg, ref, oci.EMPTY, oci._digest(oci.EMPTY))
    body = json.dumps({"schemaVersion": 2, "mediaType": oci.MANIFEST_TYPE, "config": {
        "mediaType": oci.EMPTY_TYPE, "digest": oci._digest(oci.EMPTY), "size": 2}, "layers": []}).encode()
    reg.request("PUT", reg.url(ref, "manifests", "1"), {"Content-Type": oci.MANIFEST_TYPE}, body, ok=(201,)).close()
    assert "not an EdgeSDK package" in _refused(device, str(ref), "--plain-http")


@pytest.fixture(scope="module")
def secure_registry(tmp_path_factory, tls, art):
    if find_htpasswd() is None:
        pytest.skip("htpasswd not installed (apache2-utils; tools/install_system_deps.sh)")
    with DockerRegistry(tmp_path_factory.mktemp("secure"), tls=tls.server(), users={"ci": "s3cret"}) as reg:
        oci.push(art.pkgs["1.1.0"], f"oci://{reg.host}/edge/cls:1.1.0",
                 Registry(reg.host, Credentials("ci", "s3cret"), ca=tls.cert))
        yield reg


@needs_htpasswd
def test_tls_and_basic_auth(secure_registry, tls, art, device, tmp_path):
    src = f"oci://{secure_registry.host}/edge/cls:1.1.0"
    err = _refused(device, src)  # TLS, but the private CA is not trusted here
    assert "not trusted" in err and "--ca" in err
    other = self_signed(tmp_path)
    assert "not trusted" in _refused(device, src, "--ca", other.cert, "--username", "ci", stdin="s3cret\n")
    assert "needs credentials" in _refused(device, src, "--ca", tls.cert)
    err = _refused(device, src, "--ca", tls.cert, "--username", "ci", "--password-stdin", stdin="wrong\n")
    assert "refused the credentials" in err and "s3cret" not in err
    r = edgesdk("pull", src, "--ca", tls.cert, "--username", "ci", "-o", tmp_path,
                env={"EDGESDK_REGISTRY_PASSWORD": "s3cret"})
    assert r.returncode == 0, r.stderr
    r = edgesdk("install", src, "--ca", tls.cert, "--username", "ci", "--password-stdin", "--root", device,
                "--trusted-keys", art.trusted, stdin="s3cret\n")
    assert r.returncode == 0 and "1.1.0" in r.stdout, r.stderr


def test_bearer_token_challenge_is_answered(tmp_path):
    """Registries such as ghcr.io or Harbor answer 401 `Bearer realm=...`: the token is fetched from the
    realm with the user's credentials and the request repeated with it (a stand-in HTTP server here)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization")))
            if self.path.startswith("/token"):
                ok = self.headers.get("Authorization") == Credentials("ci", "pw").basic()
                body = json.dumps({"token": "t0k"}).encode() if ok else b"{}"
                self.send_response(200 if ok else 401)
            elif self.headers.get("Authorization") == "Bearer t0k":
                body = b"{}"
                self.send_response(200)
            else:
                body = b""
                self.send_response(401)
                self.send_header("WWW-Authenticate", f'Bearer realm="http://127.0.0.1:{port}/token",'
                                 'service="reg",scope="repository:edge/cls:pull"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        reg = Registry(f"127.0.0.1:{port}", Credentials("ci", "pw"), plain_http=True)
        reg.request("GET", f"http://127.0.0.1:{port}/v2/edge/cls/manifests/1").close()
        assert any(p.startswith("/token?") and "scope=repository%3Aedge%2Fcls%3Apull" in p for p, _ in seen)
        bad = Registry(f"127.0.0.1:{port}", Credentials("ci", "nope"), plain_http=True)
        with pytest.raises(RegistryError, match="token service .* refused"):
            bad.request("GET", f"http://127.0.0.1:{port}/v2/edge/cls/manifests/1")
    finally:
        server.shutdown()


class CuttingProxy:
    """TCP proxy to the registry that drops the first connection after `cut` bytes sent back."""

    def __init__(self, upstream_port: int, cut: int) -> None:
        import socket
        import threading
        self.upstream, self.cut, self.cuts = upstream_port, cut, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            limit = self.cut if self.cuts == 0 else None
            threading.Thread(target=self._pipe, args=(client, up, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, client, limit), daemon=True).start()

    def _pipe(self, src, dst, limit) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) > limit and len(data) > 1000:
                    dst.sendall(data[: max(limit - sent, 0)])
                    self.cuts += 1
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        import socket
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the other direction's recv, sends FIN now
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def test_pull_survives_a_dropped_connection(registry, art, tmp_path):
    """The registry's answer is cut after 200 kB: the pull resumes with Range and the file is whole."""
    pkg = art.pkgs["1.0.0"]
    oci.push(pkg, f"oci://{registry.host}/edge/cut:1", plain(registry))
    reg = plain(registry)
    digest, manifest = oci.resolve(reg, parse_ref(f"oci://{registry.host}/edge/cut:1"))
    proxy = CuttingProxy(registry.port, 200_000)
    try:
        said = []
        # the manifest comes first (small); then the blob, whose first connection is cut
        got = oci.pull(f"oci://127.0.0.1:{proxy.port}/edge/cut@{digest}", tmp_path, plain_http=True,
                       progress=said.append)
    finally:
        proxy.close()
    assert proxy.cuts == 1 and any("resuming at byte" in s for s in said), said
    assert got.path.read_bytes() == pkg.read_bytes() and got.bytes_moved == pkg.stat().st_size


def test_two_pulls_into_one_folder_wait_for_each_other(registry, art, tmp_path):
    import threading
    oci.push(art.pkgs["1.0.0"], f"oci://{registry.host}/edge/twice:1", plain(registry))
    results, errors = [], []

    def one():
        try:
            results.append(oci.pull(f"oci://{registry.host}/edge/twice:1", tmp_path, plain(registry)))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 3
    assert sum(r.bytes_moved for r in results) == art.pkgs["1.0.0"].stat().st_size  # one downloaded, two reused
    assert (tmp_path / art.pkgs["1.0.0"].name).read_bytes() == art.pkgs["1.0.0"].read_bytes()
