"""Bundles: written atomically, verified on load, and every broken bundle fails clearly."""
from __future__ import annotations

import json

import pytest

from edgesdk.bundle import SCHEMA_VERSION, Bundle, load_model_or_bundle, write_bundle
from edgesdk.errors import BundleError
from edgesdk.presets import make_bundle


@pytest.fixture
def cls_bundle(cls_model, tmp_path):
    return make_bundle(cls_model, tmp_path / "cls")


def _edit_manifest(bundle, **changes):
    path = bundle.path / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_round_trip(cls_bundle):
    b = Bundle.load(cls_bundle.path)
    m = b.manifest
    assert m.name == "ppocr_cls" and m.task == "classification" and m.labels == ["0", "180"]
    assert m.preprocess.size == (48, 192) and m.preprocess.color == "BGR"
    assert m.files == {"ppocr_cls.onnx": m.provenance["source_sha256"]}
    assert m.inputs[0].shape == (None, 3, None, None) and m.inputs[0].layout == "NCHW"
    assert m.schema_version == SCHEMA_VERSION
    bundle, rt = load_model_or_bundle(cls_bundle.path)
    assert bundle.manifest.name == "ppocr_cls" and rt.model_path == b.model_path


def test_not_a_directory_or_missing_manifest(tmp_path, cls_model):
    with pytest.raises(BundleError, match="not a bundle directory"):
        Bundle.load(cls_model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="has no manifest.json"):
        Bundle.load(tmp_path / "empty")
    with pytest.raises(BundleError, match="does not exist"):
        load_model_or_bundle(tmp_path / "nope.onnx")


def test_bad_json(cls_bundle):
    (cls_bundle.path / "manifest.json").write_text("{ not json")
    with pytest.raises(BundleError, match="is not valid JSON"):
        Bundle.load(cls_bundle.path)


def test_tampered_file_fails_hash_check(cls_bundle):
    model = cls_bundle.path / "ppocr_cls.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="fails its sha256 check"):
        Bundle.load(cls_bundle.path)
    Bundle.load(cls_bundle.path, verify=False)  # explicit opt-out still loads


def test_missing_file(cls_bundle):
    (cls_bundle.path / "ppocr_cls.onnx").unlink()
    with pytest.raises(BundleError, match="'ppocr_cls.onnx' listed in the manifest is missing"):
        Bundle.load(cls_bundle.path)


def test_model_not_listed(cls_bundle):
    _edit_manifest(cls_bundle, files={})
    with pytest.raises(BundleError, match="is not listed in the manifest's files"):
        Bundle.load(cls_bundle.path)


def test_newer_schema(cls_bundle):
    _edit_manifest(cls_bundle, schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(BundleError, match="newer than this EdgeSDK reads"):
        Bundle.load(cls_bundle.path)


@pytest.mark.parametrize("changes, needle", [
    ({"task": "pose"}, "task 'pose'"),  # segmentation became a task (issue 11)
    ({"precision": "fp8"}, "precision 'fp8'"),
    ({"inputs": []}, "lists no inputs"),
    ({"name": None, "model": None}, None),
])
def test_invalid_fields(cls_bundle, changes, needle):
    path = cls_bundle.path / "manifest.json"
    data = json.loads(path.read_text())
    if needle is None:  # a required key missing entirely
        del data["model"]
        needle = "required key 'model' is missing"
    else:
        data.update(changes)
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=needle):
        Bundle.load(cls_bundle.path)


def test_write_is_atomic_and_refuses_to_overwrite(cls_model, tmp_path):
    dest = tmp_path / "b"
    make_bundle(cls_model, dest)
    with pytest.raises(BundleError, match="already exists"):
        make_bundle(cls_model, dest)
    before = (dest / "manifest.json").read_text()
    make_bundle(cls_model, dest, overwrite=True, top_k=1)
    assert json.loads((dest / "manifest.json").read_text())["decoder"]["top_k"] == 1
    assert before != (dest / "manifest.json").read_text()
    # a write failing halfway leaves neither a half bundle nor staging folders behind
    manifest = Bundle.load(dest).manifest

    def fail(staging):
        (staging / "report.md").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_bundle(tmp_path / "c", {"ppocr_cls.onnx": cls_model}, manifest, extra_writer=fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_bundle(dest, {"ppocr_cls.onnx": cls_model}, manifest, overwrite=True, extra_writer=fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    Bundle.load(dest)  # the old bundle is intact
