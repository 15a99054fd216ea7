"""Keys, packing and verification: every refusal, and the happy path on the real PP-OCR classifier."""
from __future__ import annotations

import json
import os
import stat
import tarfile

import numpy as np
import pytest

from edgesdk.errors import PackageError
from edgesdk.provision.keys import generate_keypair, load_private_key, load_trusted_keys
from edgesdk.provision.package import MANIFEST_NAME, SIGNATURE_NAME, PackageManifest, pack
from edgesdk.provision.verify import verify_package
from edgesdk.provision.version import Version
from provisiondata import art, edgesdk, read_members, repack  # noqa: F401 (art: fixture)




# ----------------------------------------------------------------------------- keys
def test_keygen_cli_private_key_0600_and_key_id(tmp_path):
    r = edgesdk("keygen", "-o", tmp_path / "k")
    assert r.returncode == 0, r.stderr
    priv, pub = tmp_path / "k" / "edgesdk.key", tmp_path / "k" / "edgesdk.pub"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert priv.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    kid = next(iter(load_trusted_keys(tmp_path / "k")))
    assert len(kid) == 16 and f"key id {kid}" in r.stdout
    again = edgesdk("keygen", "-o", tmp_path / "k")  # never silently replaces a key
    assert again.returncode == 11 and "already exists" in again.stderr


def test_private_key_readable_by_others_is_refused(tmp_path):
    kp = generate_keypair(tmp_path)
    os.chmod(kp.private_path, 0o644)
    with pytest.raises(PackageError, match="chmod 600"):
        load_private_key(kp.private_path)


def test_trusted_keys_dir_must_hold_keys(tmp_path):
    with pytest.raises(PackageError, match="does not exist"):
        load_trusted_keys(tmp_path / "nope")
    with pytest.raises(PackageError, match="no \\*.pub"):
        load_trusted_keys(tmp_path)


# ----------------------------------------------------------------------------- versions
def test_versions_compare_semantically_not_as_strings():
    order = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
             "1.0.0-rc.1", "1.0.0", "1.2.0", "1.9.0", "1.10.0", "2.0.0"]
    parsed = [Version.parse(v) for v in order]
    assert parsed == sorted(reversed(parsed))
    assert Version.parse("1.10.0") > Version.parse("1.9.0")  # "1.10.0" < "1.9.0" as strings
    assert Version.parse("1.0.0+build.5") == Version.parse("1.0.0")
    for bad in ("1.2", "v1.2.0", "01.2.0", "1.2.0-", "latest"):
        with pytest.raises(PackageError, match="semantic version"):
            Version.parse(bad)


# ----------------------------------------------------------------------------- happy path
def test_pack_real_bundle_and_verify(art):
    pkg = verify_package(art.pkgs["1.0.0"], art.trusted)
    assert pkg.signed and pkg.key_id == art.signer.key_id
    m = pkg.manifest
    assert (m.name, m.version) == ("ppocr_cls", "1.0.0")
    assert set(m.files) == {"bundle/manifest.json", "bundle/ppocr_cls.onnx", "health/input.npz",
                            "health/expected.npz"}
    names = [i.name for i, _ in read_members(art.pkgs["1.0.0"])]
    assert names[:2] == [MANIFEST_NAME, SIGNATURE_NAME]  # read before any payload
    # the health sample is the real text line through the bundle's preprocessing, and the
    # expected output is the model's real answer on it: label "0" (upright) with high confidence
    with tarfile.open(art.pkgs["1.0.0"]) as tf:
        import io
        expected = np.load(io.BytesIO(tf.extractfile("health/expected.npz").read()))
        x = np.load(io.BytesIO(tf.extractfile("health/input.npz").read()))["x"]
    probs = next(iter(expected.values()))
    assert x.shape == (1, 3, 48, 192) and probs.shape == (1, 2) and probs[0, 0] > 0.9


def test_verify_cli_ok(art):
    r = edgesdk("verify", art.pkgs["1.0.0"], "--trusted-keys", art.trusted, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and out["signed"] and out["key_id"] == art.signer.key_id and out["files"] == 4


def test_pack_cli_needs_key_or_unsigned_and_semver(art, tmp_path):
    r = edgesdk("pack", art.bundle, "-o", tmp_path / "x.edgepkg", "--version", "1.0.0")
    assert r.returncode == 11 and "--key" in r.stderr
    r = edgesdk("pack", art.bundle, "-o", tmp_path / "x.edgepkg", "--version", "1.0",
                "--key", art.signer.private_path)
    assert r.returncode == 11 and "semantic version" in r.stderr and not (tmp_path / "x.edgepkg").exists()
    r = edgesdk("pack", art.bundle, "-o", tmp_path / "u.edgepkg", "--version", "1.0.0", "--unsigned")
    assert r.returncode == 0 and "UNSIGNED" in r.stderr


def test_pack_refuses_a_tampered_bundle(art, tmp_path):
    import shutil
    b = tmp_path / "b"
    shutil.copytree(art.bundle, b)
    with open(b / "ppocr_cls.onnx", "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(Exception, match="sha256"):
        pack(b, tmp_path / "x.edgepkg", "1.0.0", key=art.signer.private_path)
    assert not (tmp_path / "x.edgepkg").exists()


# ----------------------------------------------------------------------------- refusals
def test_unsigned_refused_and_allow_unsigned_warns_loudly(art):
    with pytest.raises(PackageError, match="is not signed"):
        verify_package(art.pkgs["unsigned"], art.trusted)
    pkg = verify_package(art.pkgs["unsigned"], art.trusted, allow_unsigned=True)
    assert not pkg.signed and "WITHOUT a trusted signature" in pkg.warnings[0]
    r = edgesdk("verify", art.pkgs["unsigned"], "--trusted-keys", art.trusted)
    assert r.returncode == 11 and "not signed" in r.stderr
    r = edgesdk("verify", art.pkgs["unsigned"], "--trusted-keys", art.trusted, "--allow-unsigned")
    assert r.returncode == 0 and "WARNING" in r.stderr and "development only" in r.stderr
    assert "NOT signed by a trusted key" in r.stdout


def test_signed_by_unknown_key_refused(art):
    with pytest.raises(PackageError, match=f"unknown key {art.stranger.key_id}"):
        verify_package(art.pkgs["stranger"], art.trusted)


def test_no_trusted_keys_refused(art):
    with pytest.raises(PackageError, match="--trusted-keys"):
        verify_package(art.pkgs["1.0.0"], None)


def test_tampered_manifest_fails_the_signature(art, tmp_path):
    def edit(name, info, data):
        if name == MANIFEST_NAME:
            d = json.loads(data)
            d["version"] = "9.9.9"  # e.g. to dodge downgrade protection
            return info, json.dumps(d, indent=2, sort_keys=True).encode() + b"\n"
        return info, data
    bad = repack(art.pkgs["1.0.0"], tmp_path / "bad.edgepkg", edit)
    with pytest.raises(PackageError, match="does not match edgepkg.json.*tampered"):
        verify_package(bad, art.trusted)


def test_tampered_model_byte_fails_its_hash(art, tmp_path):
    def edit(name, info, data):
        if name == "bundle/ppocr_cls.onnx":
            data = bytearray(data)
            data[len(data) // 2] ^= 0x01  # one bit of one weight
            return info, bytes(data)
        return info, data
    bad = repack(art.pkgs["1.0.0"], tmp_path / "bad.edgepkg", edit)
    with pytest.raises(PackageError, match="'bundle/ppocr_cls.onnx' fails its sha256 check"):
        verify_package(bad, art.trusted)


def test_flipped_byte_anywhere_in_the_file_never_gets_changed_content_through(art, tmp_path):
    import gzip
    data = art.pkgs["1.0.0"].read_bytes()
    content = gzip.decompress(data)
    rng = np.random.default_rng(0)
    # past the gzip header's mtime/OS fields (outside every checksum, and harmless)
    positions = sorted(set(rng.integers(10, len(data), 40).tolist()) | {10, len(data) // 2, len(data) - 1})
    refused = 0
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 0x20
        path = tmp_path / f"flip{pos}.edgepkg"
        path.write_bytes(bytes(bad))
        try:
            verify_package(path, art.trusted)
        except PackageError:
            refused += 1
            continue
        # accepted only if the flip changed nothing that unpacks (deflate has a few such bits,
        # e.g. code lengths of symbols a block never uses): the content is byte-identical
        assert gzip.decompress(bytes(bad)) == content, f"flip at {pos} changed the content and was accepted"
    assert refused >= len(positions) - 2


def test_member_not_in_manifest_refused(art, tmp_path):
    from provisiondata import member
    extra = member("bundle/extra.py", b"import os; os.system('id')\n")
    members = read_members(art.pkgs["1.0.0"]) + [extra]
    from provisiondata import write_archive
    bad = write_archive(tmp_path / "extra.edgepkg", members)
    with pytest.raises(PackageError, match="'bundle/extra.py' is not listed in the signed package manifest"):
        verify_package(bad, art.trusted)


def test_missing_member_refused(art, tmp_path):
    bad = repack(art.pkgs["1.0.0"], tmp_path / "bad.edgepkg",
                 lambda n, i, d: None if n == "health/input.npz" else (i, d))
    with pytest.raises(PackageError, match="missing from the archive.*health/input.npz"):
        verify_package(bad, art.trusted)


def test_not_a_package(art, tmp_path):
    from provisiondata import member, write_archive
    other = write_archive(tmp_path / "o.edgepkg", [member("README", b"hi")])
    with pytest.raises(PackageError, match="first member is 'README'"):
        verify_package(other, art.trusted)
    (tmp_path / "junk.edgepkg").write_bytes(b"not an archive at all" * 40)
    with pytest.raises(PackageError, match="not a valid package archive"):
        verify_package(tmp_path / "junk.edgepkg", art.trusted)


def test_manifest_validation_names_the_key():
    good = {"format": "edgepkg/1", "name": "x", "version": "1.0.0", "bundle": "bundle",
            "files": {"bundle/manifest.json": {"sha256": "0" * 64, "size": 1},
                      "health/input.npz": {"sha256": "0" * 64, "size": 1},
                      "health/expected.npz": {"sha256": "0" * 64, "size": 1}},
            "health": {"input": "health/input.npz", "expected": "health/expected.npz", "rtol": 0, "atol": 0}}
    PackageManifest.from_bytes(json.dumps(good).encode())
    cases = [({"format": "edgepkg/9"}, "format"), ({"version": "one"}, "semantic version"),
             ({"files": {"../x": {"sha256": "0" * 64, "size": 1}}}, "'..'"),
             ({"files": {**good["files"], "etc/passwd": {"sha256": "0" * 64, "size": 1}}}, "clean path under"),
             ({"health": {"input": "health/input.npz"}}, "health.expected is missing")]
    for change, message in cases:
        with pytest.raises(PackageError, match=message):
            PackageManifest.from_bytes(json.dumps({**good, **change}).encode())


def test_pack_without_a_sample_records_a_synthetic_one(art, tiny_models, tmp_path):
    import io

    import runtimes
    from edgesdk.bundle import Manifest, write_bundle
    from edgesdk.provision.install import install
    from provisiondata import QUIET

    def arrays(pkg, name):
        with tarfile.open(pkg) as tf:
            return dict(np.load(io.BytesIO(tf.extractfile(name).read())))

    # an image model: a seeded synthetic image through the bundle's own preprocessing
    p = pack(art.bundle, tmp_path / "synthetic.edgepkg", "1.0.0", key=art.signer.private_path).path
    assert arrays(p, "health/input.npz")["x"].shape == (1, 3, 48, 192)
    # a raw model without preprocessing: seeded arrays from the input specs (dynamic batch -> 1)
    model = tiny_models.add_one(shape=(None, 3, 4, 4))
    with runtimes.load(model) as rt:
        manifest = Manifest(name="add_one", model=model.name, backend="onnxruntime", precision="fp32",
                            inputs=rt.inputs, outputs=rt.outputs)
    bundle = write_bundle(tmp_path / "b", {model.name: model}, manifest)
    raw = pack(bundle.path, tmp_path / "raw.edgepkg", "0.1.0", key=art.signer.private_path).path
    x, y = arrays(raw, "health/input.npz")["x"], arrays(raw, "health/expected.npz")["y"]
    assert x.shape == (1, 3, 4, 4) and np.array_equal(y, x + 1)
    r = install(raw, tmp_path / "root", art.trusted, **QUIET)
    assert r.health.ok and r.health.max_abs_error == 0.0
