"""Bounded work before the signature is checked: hostile tar headers, signature and manifest.

Each archive here is written byte by byte (tarfile will not write most of them). The reader
must refuse each with one short line, quickly, whatever the interpreter's own tarfile does
(Python before 3.11.10 parses PAX records in quadratic time, CVE-2024-6232).
"""
from __future__ import annotations

import time

import pytest

from edgesdk.errors import PackageError
from edgesdk.provision.extract import scan
from edgesdk.provision.verify import verify_package
from provisiondata import (QUIET, art, edgesdk, pax_record, raw_header, raw_member, read_members,  # noqa: F401
                           repack, write_raw)

FILE = raw_member(b"bundle/f", b"x")
CASES = {
    # the attack of issue 10: 160,000 digits in one PAX header cost 30-38 s in tarfile's parser
    "pax header of 160,000 digits": ([raw_member(b"././@PaxHeader", b"1" * 160_000, b"x"), FILE],
                                     "extended header unpacks to more than 65536 bytes"),
    "pax length of 60,000 digits under the cap": ([raw_member(b"././@PaxHeader", b"1" * 60_000, b"x"),
                                                   FILE], "PAX extended header record is malformed"),
    "pax record longer than its header": ([raw_member(b"././@PaxHeader", b"99 path=a\n", b"x"), FILE],
                                          "record is malformed"),
    "gnu long name of 256 MB": ([raw_member(b"././@LongLink", b"a" * (1 << 20), b"L", declared=256 << 20)],
                                r"unpacks to more than 4097 bytes \(268435456 declared\)"),
    "gnu long link of 256 MB": ([raw_member(b"././@LongLink", b"a" * 4096, b"K", declared=256 << 20)],
                                "unpacks to more than 4097 bytes"),
    "pax path of 256 MB": ([raw_member(b"././@PaxHeader", b"", b"x", declared=256 << 20)],
                           "unpacks to more than 65536 bytes"),
    "many extended headers in a row": ([raw_member(b"././@PaxHeader", pax_record("comment", "x"), b"x")] * 5 + [FILE],
                                       "more than 4 tar extended headers in a row"),
    "global pax header": ([raw_member(b"././@GlobalHead", pax_record("comment", "x"), b"g"), FILE],
                          "global PAX header"),
    "pax 1.0 sparse member": ([raw_member(b"././@PaxHeader", pax_record("GNU.sparse.major", "1")
                                          + pax_record("GNU.sparse.minor", "0")
                                          + pax_record("GNU.sparse.name", "bundle/f"), b"x"), FILE],
                              "PAX sparse file"),
    "pax 0.1 sparse member": ([raw_member(b"././@PaxHeader", pax_record("GNU.sparse.numblocks", "1")
                                          + pax_record("GNU.sparse.offset", "0")
                                          + pax_record("GNU.sparse.numbytes", "1"), b"x"), FILE],
                              "PAX sparse file"),
    "gnu sparse member": ([raw_member(b"bundle/f", b"x", b"S")], "GNU sparse file"),
    "bad header checksum": ([raw_header(b"bundle/f", 1, checksum=False) + b"x" + b"\0" * 511],
                            "fails its checksum"),
    "non-numeric size": ([raw_header(b"bundle/f", 0)[:124] + b"zzzzzzzzzzz\0" + raw_header(b"bundle/f", 0)[136:]],
                         "fails its checksum|number field"),
    "name that is not utf-8": ([raw_member(b"bundle/\xff\xfe", b"x")], "not valid UTF-8"),
    "truncated member data": ([raw_header(b"bundle/f", 5000) + b"x" * 512], "ends inside a member"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_headers_refused_quickly_in_one_line(case, tmp_path):
    blocks, message = CASES[case]
    pkg = write_raw(tmp_path / "evil.edgepkg", *blocks, end=case != "truncated member data")
    t0 = time.perf_counter()
    with pytest.raises(PackageError, match=message) as err:
        scan(pkg)
    assert time.perf_counter() - t0 < 5.0  # unbounded parsing took 30 s; bounded takes milliseconds
    assert len(str(err.value)) < 600 and "\n" not in str(err.value)


def test_verify_cli_refuses_the_pax_digits_attack_in_one_line(tmp_path):
    pkg = write_raw(tmp_path / "evil.edgepkg", raw_member(b"././@PaxHeader", b"1" * 160_000, b"x"), FILE)
    assert pkg.stat().st_size < 2048  # the 1 KB package of the issue
    t0 = time.perf_counter()
    r = edgesdk("verify", pkg, "--allow-unsigned")
    assert time.perf_counter() - t0 < 20.0
    assert r.returncode == 11 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "extended header" in r.stderr


def _with_signature(art, tmp_path, sig: bytes, name: str = "sig.edgepkg"):
    def edit(member_name, info, data):
        return (info, sig) if member_name == "edgepkg.sig" else (info, data)
    return repack(art.pkgs["1.0.0"], tmp_path / name, edit)


@pytest.mark.parametrize("sig, message", [
    (b"[" * 200_000, "edgepkg.sig is larger than 4096 bytes"),
    (b"[" * 3000, "nests deeper than 1 levels"),
    (b'{"algorithm": {"a": [1]}}', "nests deeper"),
    (b"\xff\xfe not utf-8", "not valid JSON"),
    (b'["ed25519"]', "malformed"),
])
def test_hostile_signature_documents_refused(art, tmp_path, sig, message):
    pkg = _with_signature(art, tmp_path, sig)
    with pytest.raises(PackageError, match=message):
        verify_package(pkg, art.trusted)


def test_deeply_nested_signature_through_the_cli(art, tmp_path):
    pkg = _with_signature(art, tmp_path, b"[" * 200_000)
    r = edgesdk("verify", pkg, "--trusted-keys", art.trusted)
    assert r.returncode == 11 and "Traceback" not in r.stderr and "RecursionError" not in r.stderr
    assert "larger than 4096 bytes" in r.stderr


def test_deeply_nested_unsigned_manifest_refused(art, tmp_path):
    def edit(member_name, info, data):
        if member_name == "edgepkg.sig":
            return None
        return (info, b"[" * 500_000) if member_name == "edgepkg.json" else (info, data)
    pkg = repack(art.pkgs["1.0.0"], tmp_path / "deep.edgepkg", edit)
    with pytest.raises(PackageError, match="nests deeper than 8 levels"):
        verify_package(pkg, None, allow_unsigned=True)


def test_real_packages_still_read(art):
    names = [m.name for m in scan(art.pkgs["1.0.0"])]
    assert names[:2] == ["edgepkg.json", "edgepkg.sig"] and "bundle/ppocr_cls.onnx" in names


@pytest.mark.parametrize("fmt", ["PAX_FORMAT", "GNU_FORMAT", "USTAR_FORMAT"])
def test_genuine_long_and_unicode_names_in_every_tar_format(tmp_path, fmt):
    import gzip
    import io
    import tarfile
    names = ["bundle/" + "d" * 60 + "/" + "f" * 80 + ".onnx", "bundle/modèle-ü.bin", "bundle/x"]
    if fmt == "USTAR_FORMAT":
        names = names[:1] + names[2:]  # ustar: ASCII; a 150-character path goes into the prefix field
    pkg = tmp_path / "ok.edgepkg"
    with open(pkg, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as gz, \
            tarfile.open(fileobj=gz, mode="w", format=getattr(tarfile, fmt)) as tf:
        for i, name in enumerate(names):
            info = tarfile.TarInfo(name)
            data = bytes([i]) * (700 * i + 1)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("bundle/" + "l" * 90)
        link.type, link.linkname = tarfile.SYMTYPE, "x"
        tf.addfile(link)
    members = scan(pkg)
    assert [m.name for m in members] == names + ["bundle/" + "l" * 90]
    assert [m.size for m in members[:-1]] == [700 * i + 1 for i in range(len(names))]
    assert members[-1].kind == "symlink" and members[-1].target == "x"
