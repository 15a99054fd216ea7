"""Fixtures and tools for the provisioning tests.

- real bundles around the PP-OCR text-direction classifier (and a "wrong" variant with its two
  classes swapped: a valid model that answers differently);
- a real text-line crop from scikit-image's `page` photo (upright -> label "0", rotated -> "180");
- hand-made tar archives for the extraction refusals;
- a fork server that runs real installs in child processes and kills them with SIGKILL at a
  given moment (`python tests/provisiondata.py fault-server`), so the fault test pays Python's
  start-up once instead of once per run.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def text_crop(rotated: bool = False) -> np.ndarray:
    """A real line of printed text (BGR uint8), upright or turned 180 degrees."""
    import cv2

    from realdata import photos
    crop = np.ascontiguousarray(photos()["page"][0:40, 0:240])
    return cv2.rotate(crop, cv2.ROTATE_180) if rotated else crop


def make_cls_bundle(model: Path, dest: Path, name: str = "ppocr_cls"):
    from edgesdk.presets import make_bundle
    return make_bundle(model, dest, preset="ppocr_cls", name=name)


def swapped_cls_model(model: Path, dest: Path) -> Path:
    """The classifier with its final layer's two columns swapped: loads and runs, answers the opposite."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(model))
    for node in m.graph.node:
        if node.op_type == "Constant" and node.output[0] in ("fc_0.w_0", "fc_0.b_0"):
            arr = numpy_helper.to_array(node.attribute[0].t)
            swapped = np.ascontiguousarray(arr[..., ::-1])
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(swapped, node.output[0]))
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(dest))
    return dest


def classify(bundle_dir: Path, image: np.ndarray) -> tuple[str, float]:
    """(label, probability) from a bundle on a BGR image: the model really runs."""
    from edgesdk.bundle import Bundle

    b = Bundle.load(bundle_dir)
    x, _ = b.preprocessor()([image])
    with b.runtime() as rt:
        probs = next(iter(rt.infer(x).values()))[0]
    i = int(np.argmax(probs))
    return b.manifest.labels[i], float(probs[i])


class Artifacts:
    """Keys, real bundles and packages built once per test session (see `artifacts`)."""

    def __init__(self, folder: Path, model: Path) -> None:
        from edgesdk.provision import health
        from edgesdk.provision.keys import generate_keypair
        from edgesdk.provision.package import pack

        self.folder = folder
        self.signer = generate_keypair(folder / "keys", "signer")
        self.stranger = generate_keypair(folder / "keys", "stranger")
        self.trusted = folder / "trusted"
        self.trusted.mkdir()
        (self.trusted / "signer.pub").write_bytes(self.signer.public_path.read_bytes())
        self.bundle = make_cls_bundle(model, folder / "bundle").path
        wrong_model = swapped_cls_model(model, folder / "wrong" / "ppocr_cls.onnx")
        self.wrong_bundle = make_cls_bundle(wrong_model, folder / "wrong_bundle").path
        self.sample = text_crop()
        self.pkgs: dict[str, Path] = {}
        for version in ("1.0.0", "1.1.0", "1.2.0", "1.10.0"):
            self.pkgs[version] = pack(self.bundle, folder / f"cls-{version}.edgepkg", version,
                                      key=self.signer.private_path, sample=self.sample).path
        self.pkgs["unsigned"] = pack(self.bundle, folder / "cls-unsigned.edgepkg", "1.1.0", sample=self.sample).path
        self.pkgs["stranger"] = pack(self.bundle, folder / "cls-stranger.edgepkg", "1.1.0",
                                     key=self.stranger.private_path, sample=self.sample).path
        # expected output recorded from the good model, then the swapped model packed and signed with it
        from edgesdk.bundle import Bundle
        good = health.record(Bundle.load(self.bundle), self.sample)
        self.pkgs["wrong"] = pack(self.wrong_bundle, folder / "cls-wrong.edgepkg", "2.0.0",
                                  key=self.signer.private_path, health_sample=good).path


_ARTIFACTS: dict[str, Artifacts] = {}


def artifacts(tmp_path_factory, model: Path) -> Artifacts:
    """One `Artifacts` per pytest session, shared by every provisioning test module."""
    if "a" not in _ARTIFACTS:
        _ARTIFACTS["a"] = Artifacts(tmp_path_factory.mktemp("provision"), model)
    return _ARTIFACTS["a"]


@pytest.fixture(scope="module")
def art(tmp_path_factory, cls_model) -> Artifacts:
    """Import into a test module: `from provisiondata import art`."""
    return artifacts(tmp_path_factory, cls_model)


#: keyword arguments that silence install/status progress in tests
QUIET = {"progress": lambda _message: None}


def edgesdk(*args) -> subprocess.CompletedProcess:
    """Run the real CLI (`python -m edgesdk ...`) from the repository root."""
    return subprocess.run([sys.executable, "-m", "edgesdk", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


# ----------------------------------------------------------------------------- archives
def member(name: str, data: bytes = b"", kind: str = "file", target: str = "", size: Optional[int] = None,
           mode: int = 0o644) -> tuple[tarfile.TarInfo, Optional[bytes]]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
             "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
             "fifo": tarfile.FIFOTYPE}
    info.type = types[kind]
    info.linkname = target
    if kind == "file":
        info.size = len(data) if size is None else size
        return info, data
    return info, None


def write_archive(path: Path, members: Iterable[tuple[tarfile.TarInfo, Optional[bytes]]],
                  compress: bool = True) -> Path:
    with open(path, "wb") as raw:
        stream = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if compress else raw
        with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for info, data in members:
                tf.addfile(info, io.BytesIO(data) if data is not None else None)
        if compress:
            stream.close()
    return path


def read_members(path: Path) -> list[tuple[tarfile.TarInfo, Optional[bytes]]]:
    """All members of a (trusted, test-made) package with their bytes."""
    out = []
    with tarfile.open(path, "r:*") as tf:
        for info in tf.getmembers():
            f = tf.extractfile(info)
            out.append((info, f.read() if f else None))
    return out


def repack(src: Path, dest: Path, edit) -> Path:
    """Copy a package member by member, letting `edit(name, info, data) -> (info, data) | None` change it."""
    out = []
    for info, data in read_members(src):
        changed = edit(info.name, info, data)
        if changed is None:
            continue
        info, data = changed
        if data is not None:
            info.size = len(data)
        out.append((info, data))
    return write_archive(dest, out)


# ----------------------------------------------------------------------------- fault server
def fault_server() -> None:
    """Serve kill-at-a-moment installs: one JSON request per stdin line, one JSON reply per stdout line.

    Request: {"package", "root", "trusted", "delay", "log", "step_delay"}. The child runs the real
    `edgesdk.provision.install.install`, logging its steps to `log`; after `delay` seconds the
    server sends it SIGKILL (unless it already finished) and replies {"killed", "status", "seconds"}.
    """
    import logging

    import onnxruntime  # noqa: F401  (imported once here, inherited by every child)

    from edgesdk.provision import install as inst

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        os.environ[inst.STEP_DELAY_ENV] = str(req.get("step_delay", 0))
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:  # child: a real install, nothing else
            code = 1
            try:
                handler = logging.FileHandler(req["log"])
                log = logging.getLogger("edgesdk.provision")
                log.addHandler(handler)
                log.setLevel(logging.INFO)
                with open(req["log"], "a") as out:
                    inst.install(req["package"], req["root"], trusted_keys=req["trusted"],
                                 progress=lambda m: (out.write(m + "\n"), out.flush()))
                code = 0
            finally:
                os._exit(code)
        killed = False
        deadline = t0 + float(req["delay"])
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                killed = True
                break
            time.sleep(0.0005)
        print(json.dumps({"killed": killed, "status": status, "seconds": time.monotonic() - t0}), flush=True)


class FaultServer:
    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__)), "fault-server"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert json.loads(self.proc.stdout.readline())["ready"]

    def run(self, **request) -> dict:
        self.proc.stdin.write(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in request.items()}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


if __name__ == "__main__" and sys.argv[1:] == ["fault-server"]:
    fault_server()


# ----------------------------------------------------------------------------- raw tar bytes
def raw_header(name: bytes, size: int = 0, flag: bytes = b"0", link: bytes = b"", checksum: bool = True) -> bytes:
    """One 512-byte ustar header written by hand (tarfile refuses to write the hostile ones)."""
    h = bytearray(512)
    h[0:len(name[:100])] = name[:100]
    h[100:108], h[108:116], h[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
    h[124:136], h[136:148] = b"%011o\0" % size, b"%011o\0" % 0
    h[148:156] = b" " * 8
    h[156:157] = flag
    h[157:157 + len(link)] = link
    h[257:263], h[263:265] = b"ustar\0", b"00"
    h[148:156] = b"%06o\0 " % (sum(h) if checksum else 1)
    return bytes(h)


def raw_member(name: bytes, data: bytes = b"", flag: bytes = b"0", declared: Optional[int] = None) -> bytes:
    """Header plus data padded to the block size; `declared` overrides the size in the header."""
    size = len(data) if declared is None else declared
    return raw_header(name, size, flag) + data + b"\0" * (-len(data) % 512)


def pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


def write_raw(path: Path, *blocks: bytes, end: bool = True) -> Path:
    """A gzip-compressed tar made of raw blocks (and the two zero end blocks)."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        for b in blocks:
            f.write(b)
        if end:
            f.write(b"\0" * 1024)
    return path


def resign(art: "Artifacts", src: Path, dest: Path, replace: dict) -> Path:
    """A copy of a package with members' bytes replaced, its manifest updated and signed again by the
    trusted signer: what a signer (or a stolen key) could ship, so only content checks can refuse it."""
    import hashlib

    from edgesdk.provision.keys import load_private_key, sign
    from edgesdk.provision.package import PackageManifest

    members = read_members(src)
    manifest = PackageManifest.from_bytes(next(d for i, d in members if i.name == "edgepkg.json"))
    for name, data in replace.items():
        manifest.files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    body = manifest.to_bytes()
    sig = (json.dumps(sign(load_private_key(art.signer.private_path), body)) + "\n").encode()
    new = {"edgepkg.json": body, "edgepkg.sig": sig, **replace}
    return repack(src, dest, lambda name, info, data: (info, new.get(name, data)))
