"""Issue 12 through `edgesdk convert`: the 5-image folder, --metric, --keep-best."""
from __future__ import annotations

import json

import numpy as np
import pytest

from convdata import text_scenes, write_images
from edgesdk.bundle import Bundle
from edgesdk.convert import convert
from edgesdk.cli import main
from test_convert import _leftovers, _run  # noqa: F401  (shared CLI helpers)


def _run_both(args, capsys):
    """main(args) -> (exit code, stderr + stdout)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    got = capsys.readouterr()
    return code, got.err, got.out


@pytest.fixture(scope="module")
def cls_images(tmp_path_factory):
    from convdata import cls_crops

    return write_images(cls_crops("calibration") + cls_crops("heldout"), tmp_path_factory.mktemp("cls_images"))


def test_five_image_folder_is_met_or_says_how_many_to_add(det_model, tmp_path, capsys):
    """Never a silent pass: with 5 real text scenes the detector's onnxruntime INT8 either meets
    the budget with warnings naming how many images to add, or fails saying so."""
    images = write_images(text_scenes("calibration", 5, (320, 320)), tmp_path / "five")
    out = tmp_path / "det.bundle"
    code, err, stdout = _run_both(["convert", str(det_model), "-p", "amd-epyc-zen4", "--calib", str(images),
                                   "--input-shape", "1,3,320,320", "--precision", "int8", "--backend", "onnxruntime",
                                   "--no-measure", "-o", str(out), "-q"], capsys)
    text = err + stdout
    assert "held-out samples" in text and "add at least" in text, text
    if code == 0:
        report = json.loads((out / "report.json").read_text())
        assert any("calibration set has" in w for w in report["warnings"])
        assert report["calibration"]["held_out"] >= 1
    else:
        assert code == 8 and "Likely cause" in err and len(err.splitlines()) <= 3


def test_a_metric_module_that_raises_is_one_line(cls_model, cls_images, tmp_path, capsys):
    metric = tmp_path / "boom.py"
    metric.write_text("def score(runtime):\n    raise RuntimeError('labels file missing\\nline two')\n")
    work = tmp_path / "w"
    work.mkdir()
    code, err = _run(["convert", str(cls_model), "-p", "amd-epyc-zen4", "--calib", str(cls_images), "--backend",
                      "onnxruntime", "--precision", "fp32", "--metric", f"{metric}:score", "-o",
                      str(work / "b"), "-q"], capsys)
    assert code == 8 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "score failed: RuntimeError: labels file missing" in err and _leftovers(work) == []


def test_box_f1_on_a_classifier_is_a_clear_error(cls_model, cls_images, tmp_path, capsys):
    code, err = _run(["convert", str(cls_model), "-p", "amd-epyc-zen4", "--calib", str(cls_images), "--backend",
                      "onnxruntime", "--metric", "box-f1", "-o", str(tmp_path / "b"), "-q"], capsys)
    assert code == 8 and "needs a box decoder" in err and not (tmp_path / "b").exists()


def test_keep_best_writes_the_closest_variant_marked_over_budget(cls_model, cls_images, tmp_path):
    from converters import variants

    real = variants.VariantBuilder.check

    def pessimist(self, v):  # every variant measured as far off, fp16 a little less
        real(self, v)
        if v.comparison is not None:
            v.comparison.top1_agreement = 0.6 if v.precision == "fp16" else 0.5

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(variants.VariantBuilder, "check", pessimist)
        # what is tested is the over-budget path, not the weights: skip the rounding to stay < 60 s
        mp.setattr(variants.VariantBuilder, "_int8_source", lambda self: self.s.prepared)
        res = convert(cls_model, "amd-epyc-zen4", tmp_path / "out.bundle", precision="auto", calib=cls_images,
                      backends=["onnxruntime"], measure=False, keep_best=True, metric="top1", progress=None)
    assert res.report["over_budget"] and res.report["decision"].startswith("OVER BUDGET")
    manifest = Bundle.load(res.path).manifest
    assert manifest.metrics["over_budget"] is True
    assert res.chosen.comparison.drop == min(v.comparison.drop for v in res.variants if v.comparison)
