"""Safe extraction: every unsafe archive is refused before anything is written."""
from __future__ import annotations

import io
import lzma
import os
import tarfile

import pytest

from edgesdk.errors import PackageError
from edgesdk.provision.extract import Limits, extract, scan
from edgesdk.provision.install import install
from provisiondata import QUIET, art, member, read_members, write_archive  # noqa: F401 (art: fixture)

EVIL = "/tmp/edgesdk-test-evil-file"

UNSAFE = {
    "absolute path": ([member(EVIL, b"pwned")], "absolute path"),
    "dot-dot traversal": ([member("bundle/../../edgesdk-evil", b"pwned")], "contains '..'"),
    "leading dot-dot": ([member("../edgesdk-evil", b"pwned")], "contains '..'"),
    "backslash": ([member("bundle\\..\\evil", b"x")], "backslash"),
    "symlink to absolute path": ([member("bundle/passwd", kind="symlink", target="/etc/passwd")],
                                 "absolute path outside"),
    "symlink escaping with ..": ([member("bundle/etc", kind="symlink", target="../../etc")], "points outside"),
    "write through a symlink": ([member("bundle/d", kind="symlink", target="."), member("bundle/d/x", b"x")],
                                "lies below 'bundle/d', which is a symlink"),
    # lexically bundle/c/../../x is just x, but c -> . makes the real path leave the root
    "symlink chain escape": ([member("bundle/c", kind="symlink", target="."),
                              member("bundle/a", kind="symlink", target="c/../../x")],
                             "goes through another symlink"),
    "symlink to nothing": ([member("bundle/a", kind="symlink", target="missing")], "points to nothing"),
    "hardlink escaping with ..": ([member("bundle/h", kind="hardlink", target="../../etc/passwd")], "link escape"),
    "hardlink to absolute path": ([member("bundle/h", kind="hardlink", target="/etc/passwd")], "link escape"),
    "hardlink to a later member": ([member("bundle/h", kind="hardlink", target="bundle/f"),
                                    member("bundle/f", b"x")], "link escape"),
    "character device": ([member("bundle/null", kind="chr")], "character device"),
    "block device": ([member("bundle/sda", kind="blk")], "block device"),
    "fifo": ([member("bundle/pipe", kind="fifo")], "a fifo"),
    "duplicate member": ([member("bundle/f", b"good"), member("bundle/f", b"evil")], "appears twice"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_member_refused_before_writing(case, tmp_path):
    members, message = UNSAFE[case]
    # a harmless file first: proves the refusal comes before the first write, not after
    archive = write_archive(tmp_path / "a.tar.gz", [member("bundle/first", b"ok")] + members)
    dest = tmp_path / "out"
    with pytest.raises(PackageError, match=message):
        extract(archive, dest)
    assert not dest.exists()
    assert sorted(os.listdir(tmp_path)) == ["a.tar.gz"]
    assert not os.path.exists(EVIL) and not (tmp_path.parent / "edgesdk-evil").exists()


def test_limits_member_count_member_size_total(tmp_path):
    many = write_archive(tmp_path / "many.tgz", [member(f"bundle/f{i}", b"x") for i in range(6)])
    with pytest.raises(PackageError, match="more than 5 members"):
        scan(many, Limits(max_members=5))
    big = write_archive(tmp_path / "big.tgz", [member("bundle/big", b"x" * 2000)])
    with pytest.raises(PackageError, match="declares 2000 bytes.*oversized"):
        extract(big, tmp_path / "o1", limits=Limits(max_member_bytes=1000))
    total = write_archive(tmp_path / "total.tgz", [member("bundle/a", b"x" * 1000), member("bundle/b", b"y" * 1000)])
    with pytest.raises(PackageError, match="more than 1500 bytes in all"):
        extract(total, tmp_path / "o2", limits=Limits(max_total_bytes=1500))
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_decompression_bomb_by_ratio_with_default_limits(tmp_path):
    zeros = b"\0" * (16 << 20)  # 16 MiB that gzip turns into ~16 KB
    bomb = write_archive(tmp_path / "bomb.tgz", [member("bundle/zeros", zeros)])
    assert bomb.stat().st_size < 100_000
    with pytest.raises(PackageError, match="ratio .* decompression bomb"):
        extract(bomb, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tar_extended_header_bomb_is_capped(tmp_path):
    # a 2 MiB pax record: tarfile itself would read it into memory; the stream cap stops it
    info = tarfile.TarInfo("bundle/f")
    info.size = 1
    info.pax_headers = {"comment": "A" * (2 << 20)}
    bomb = write_archive(tmp_path / "pax.tgz", [(info, b"x")])
    with pytest.raises(PackageError, match="unpacks to more than"):
        scan(bomb, Limits(max_members=10, max_total_bytes=1000))


def test_other_compressions_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("bundle/f")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "x.tar.xz").write_bytes(lzma.compress(buf.getvalue()))
    with pytest.raises(PackageError, match="xz-compressed"):
        scan(tmp_path / "x.tar.xz")


def test_links_inside_the_package_are_extracted(tmp_path):
    archive = write_archive(tmp_path / "ok.tgz", [
        member("bundle/models/model.onnx", b"weights", mode=0o755),
        member("bundle/model-latest.onnx", kind="symlink", target="models/model.onnx"),
        member("bundle/models-dir", kind="symlink", target="models"),
        member("bundle/copy.onnx", kind="hardlink", target="bundle/models/model.onnx"),
    ], compress=False)
    out = tmp_path / "out"
    members = extract(archive, out)
    assert [m.kind for m in members] == ["file", "symlink", "symlink", "hardlink"]
    assert (out / "bundle/model-latest.onnx").read_bytes() == b"weights"
    assert os.readlink(out / "bundle/model-latest.onnx") == "models/model.onnx"
    assert (out / "bundle/models-dir/model.onnx").read_bytes() == b"weights"
    # a hardlink becomes an independent copy: no inode shared with anything
    assert (out / "bundle/copy.onnx").read_bytes() == b"weights" and (out / "bundle/copy.onnx").stat().st_nlink == 1
    assert os.stat(out / "bundle/models/model.onnx").st_mode & 0o777 == 0o755



@pytest.mark.parametrize("case", ["absolute path", "dot-dot traversal", "symlink escaping with ..",
                                  "hardlink escaping with ..", "character device"])
def test_install_refuses_unsafe_signed_package_and_writes_nothing(case, art, tmp_path):
    # the real signed manifest and signature first, then an unsafe member: refused by the scan
    good = read_members(art.pkgs["1.0.0"])
    archive = write_archive(tmp_path / "evil.edgepkg", good[:2] + UNSAFE[case][0] + good[2:])
    root = tmp_path / "root"
    with pytest.raises(PackageError, match=UNSAFE[case][1]):
        install(archive, root, trusted_keys=art.trusted, **QUIET)
    assert os.listdir(root / "releases") == [] and os.listdir(root / "staging") == []
    assert not (root / "current").exists() and not os.path.exists(EVIL)


def test_corruption_met_while_writing_removes_the_partial_extraction(art, tmp_path):
    # as if the file changed between verification and extraction (install extracts with scan_first=False)
    data = bytearray(art.pkgs["1.0.0"].read_bytes())
    data[len(data) * 3 // 4] ^= 0xFF
    (tmp_path / "bad.edgepkg").write_bytes(bytes(data))
    with pytest.raises(PackageError, match="corrupt or truncated|fails its sha256"):
        extract(tmp_path / "bad.edgepkg", tmp_path / "out", scan_first=False)
    assert not (tmp_path / "out").exists()
