"""Model-aware canary on real models and real frames: the PP-OCR direction classifier on lines of
printed text from scikit-image's `page` photo (upright and turned), shadow-run beside the current
release. A release whose health check passes but which answers differently is rolled back."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgesdk.errors import ConfigError, PackageError, SourceError
from edgesdk.fleet.agreement import box_f1, metric_for, top1
from edgesdk.fleet.canary import CanaryPolicy, canary_install, shadow_compare
from edgesdk.provision.install import install, status
from edgesdk.provision.package import pack
from edgesdk.results import Result
from provisiondata import QUIET, art, edgesdk  # noqa: F401 (fixture)
from sampledata import text_line_frames


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """24 text-line frames: 12 windows of the page photo (191 x 384), each upright and turned 180 degrees."""
    return text_line_frames(tmp_path_factory.mktemp("frames"))


@pytest.fixture(scope="module")
def sneaky(art, tmp_path_factory):
    """The class-swapped model packed with a health sample of its own: healthy by every process and
    health check, yet it answers the opposite of the current model."""
    return pack(art.wrong_bundle, tmp_path_factory.mktemp("sneaky") / "cls-2.0.0.edgepkg", "2.0.0",
                key=art.signer.private_path, sample=art.sample).path


@pytest.fixture
def device(art, tmp_path):
    root = tmp_path / "dev"
    install(art.pkgs["1.0.0"], root, trusted_keys=art.trusted, **QUIET)
    return root


def test_same_model_commits(art, device, frames, tmp_path):
    report = canary_install(art.pkgs["1.1.0"], device, str(frames), CanaryPolicy(frames=24, min_frames=20),
                            trusted_keys=art.trusted, report_path=tmp_path / "r.json")
    assert report.passed and report.metric == "top1" and report.frames == 24 and report.agreement == 1.0
    assert status(device, **QUIET)["current"]["version"] == "1.1.0"
    assert json.loads((tmp_path / "r.json").read_text())["decision"] == "commit"
    assert not (device.parent / f".{device.name}.canary").exists()


def test_healthy_but_wrong_model_is_rolled_back_by_the_cli(art, device, frames, sneaky, tmp_path):
    before = sorted(p.name for p in (device / "releases").iterdir())
    r = edgesdk("canary", sneaky, "--root", device, "--source", frames, "--frames", 24, "--trusted-keys",
                art.trusted, "--report", tmp_path / "r.json")
    assert r.returncode == 12, r.stderr
    assert "ROLLBACK" in r.stdout and "stays current" in r.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["decision"] == "rollback" and report["agreement"] < 0.2 and report["frames"] == 24
    assert status(device, **QUIET)["current"]["version"] == "1.0.0"
    assert sorted(p.name for p in (device / "releases").iterdir()) == before
    assert not (device.parent / f".{device.name}.canary").exists()


def test_refusals_leave_the_device_as_it_was(art, device, frames, tmp_path):
    with pytest.raises(PackageError, match="no current release"):
        canary_install(art.pkgs["1.1.0"], tmp_path / "empty", str(frames), trusted_keys=art.trusted)
    with pytest.raises(SourceError, match="only 2 frames"):
        canary_install(art.pkgs["1.1.0"], device, str(frames / "00*.png"), CanaryPolicy(frames=24),
                       trusted_keys=art.trusted)
    with pytest.raises(ConfigError, match="box F1 needs a detector"):
        canary_install(art.pkgs["1.1.0"], device, str(frames), CanaryPolicy(metric="box_f1"), trusted_keys=art.trusted)
    with pytest.raises(ConfigError, match="threshold"):
        CanaryPolicy(threshold=1.5).check()
    with pytest.raises(PackageError, match="not signed|trusted"):
        canary_install(art.pkgs["stranger"], device, str(frames), trusted_keys=art.trusted)
    assert status(device, **QUIET)["current"]["version"] == "1.0.0"
    assert not (device.parent / f".{device.name}.canary").exists()


def test_cosine_on_raw_outputs(art, frames):
    metric, task, scores, _ = shadow_compare(art.bundle, art.wrong_bundle, str(frames),
                                             CanaryPolicy(frames=6, metric="cosine"))
    assert metric == "cosine" and len(scores) == 6 and all(-1.0 <= s < 0.999 for s in scores)


def test_box_f1_and_top1():
    a = Result(boxes=[[0, 0, 10, 10], [20, 20, 30, 30]], scores=[0.9, 0.8], class_ids=[0, 0])
    shifted = Result(boxes=[[1, 1, 11, 11]], scores=[0.9], class_ids=[0])
    assert box_f1(a, a) == 1.0 and box_f1(Result(), Result()) == 1.0 and box_f1(a, Result()) == 0.0
    assert box_f1(a, shifted) == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert box_f1(a, Result(boxes=[[1, 1, 11, 11]], scores=[0.9], class_ids=[1])) == 0.0  # other class
    assert top1(Result(topk=[(1, "a", 0.9)]), Result(topk=[(1, "a", 0.6)])) == 1.0
    assert top1(Result(topk=[(1, "a", 0.9)]), Result(topk=[(0, "b", 0.6)])) == 0.0
    assert metric_for("detection") == "box_f1" and metric_for("raw") == "cosine"
    with pytest.raises(ConfigError, match="not one of"):
        metric_for("raw", "accuracy")


def test_box_f1_canary_on_real_face_detectors(blazeface_model, tmp_path):
    """BlazeFace short-range vs full-range (two real models) on real photos with and without a face:
    they agree; a copy that sees nothing (score threshold 1.0) agrees only where there is no face."""
    from edgesdk.presets import make_bundle
    from realdata import photos as all_photos

    ph = all_photos()
    a = ph["astronaut"]
    images = [a, cv2.flip(a, 1), a[0:300, 50:400], cv2.resize(a, (256, 256)), ph["coffee"], ph["rocket"],
              ph["horse"], ph["chelsea"]]
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, im in enumerate(images):
        cv2.imwrite(str(folder / f"{i}.png"), np.ascontiguousarray(im))
    short = make_bundle(blazeface_model, tmp_path / "short", preset="blazeface_short").path
    full = make_bundle(blazeface_model.with_name("blazeface_full.tflite"), tmp_path / "full",
                       preset="blazeface_full").path
    blind = tmp_path / "blind"
    make_bundle(blazeface_model, blind, preset="blazeface_short")
    manifest = json.loads((blind / "manifest.json").read_text())
    manifest["decoder"]["score_threshold"] = 1.0
    (blind / "manifest.json").write_text(json.dumps(manifest))
    policy = CanaryPolicy(frames=8, min_frames=8)
    metric, task, scores, _ = shadow_compare(short, full, str(folder), policy)
    assert (metric, task) == ("box_f1", "detection") and scores == [1.0] * 8
    _, _, scores, _ = shadow_compare(short, blind, str(folder), policy)
    assert scores == [0.0] * 4 + [1.0] * 4  # the four face frames lost, the four empty ones agree
