"""Issue 12: every checked variant carries its held-out Verdict (metric, held-out n, drop with its
95% interval, within / over / not confidently within, what to add) and the printed decision,
report.json and report.md all read that one record."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from convdata import cls_crops, write_images
from converters.compare import Comparison
from converters.guard import MIN_HELD_OUT, judge
from edgesdk.cli import cli
from edgesdk.conversion.choose import attach_verdicts

VERDICT_WORDS = {"within", "over", "not confidently within"}


@pytest.fixture(scope="module")
def cls_images(tmp_path_factory):
    return write_images(cls_crops("calibration") + cls_crops("heldout"), tmp_path_factory.mktemp("cls_images"))


def _convert(model, images, out, *extra):
    res = CliRunner().invoke(cli, ["convert", str(model), "-p", "generic-x86-64", "--calib", str(images),
                                   "-o", str(out), "--quiet", *extra])
    assert res.exit_code == 0, res.output
    return res.output, json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def test_int8_variant_carries_the_verdict_in_every_output(cls_model, cls_images, tmp_path):
    out = tmp_path / "cls.bundle"
    printed, report, md = _convert(cls_model, cls_images, out, "--precision", "int8", "--backend", "onnxruntime")
    row = next(v for v in report["variants"] if v["key"] == "onnxruntime-int8")
    v = row["verdict"]
    held = report["calibration"]["held_out"]
    assert v["metric"] == "top1" and v["samples"] == held == row["accuracy"]["samples"] and v["judged"] == held
    assert v["split"] == report["calibration"]["held_out_source"] and "held out whole" in v["split"]
    low, high = v["interval"]
    assert low <= v["drop"] <= high and v["confidence"] == 0.95
    assert v["drop"] == pytest.approx(row["accuracy"]["drop"]) and v["within"] == row["within_budget"]
    assert v["verdict"] in VERDICT_WORDS
    # a few held-out samples cannot make a 2% pass confident, even when all of them agree
    assert held < MIN_HELD_OUT and v["confident"] is False and v["verdict"] != "within"
    assert high > 0.1  # the interval of a top-1 agreement on ~16 samples is wide, not [0, 0]
    # report.md: the verdict's own line, the table's columns, and its warnings
    assert f"- onnxruntime-int8: {v['summary']}" in md
    assert "| metric | held-out n | drop [95% interval] | verdict |" in md
    assert f"| top1 | {held} | {v['drop']:.4f} [{low:.4f}, {high:.4f}] | {v['verdict']} |" in md
    assert all(f"- onnxruntime-int8: WARNING: {w}" in md for w in v["warnings"])
    # the printed decision and warnings carry the same verdict
    assert f"[{low:.4f}, {high:.4f}]) on {held} held-out samples: {v['verdict']} the budget" in printed
    assert report["chosen"]["verdict"] == v
    table_row = next(line for line in printed.splitlines() if line.startswith("* onnxruntime-int8"))
    assert "verdict" in printed and f"{v['drop']:.4f} [{low:.4f}, {high:.4f}]" in table_row
    assert table_row.rstrip().endswith(v["verdict"])  # the printed table's verdict column
    assert all(f"WARNING: {w}" in printed for w in v["warnings"])


def test_a_tiny_held_out_set_gets_the_warning_naming_what_to_add(cls_model, tmp_path):
    images = write_images(cls_crops("heldout")[:6], tmp_path / "six")
    printed, report, md = _convert(cls_model, images, tmp_path / "cls.bundle", "--precision", "fp32")
    v = report["chosen"]["verdict"]
    n = report["calibration"]["held_out"]
    assert 0 < n < MIN_HELD_OUT and v["samples"] == n and v["verdict"] == "not confidently within"
    line = next(w for w in v["warnings"] if w.startswith(f"only {n} held-out samples"))
    assert f"add at least {MIN_HELD_OUT - n} more images" in line and "interval is [" in line
    # the data stage's bare line gives way to the verdict's (with the interval): said once
    assert line in report["warnings"] and sum(w.startswith(f"only {n} held-out") for w in report["warnings"]) == 1
    assert f"WARNING: {line}" in printed and f"WARNING: {line}" in md


def test_every_compared_variant_is_judged_and_a_stale_verdict_is_redone():
    def comparison(misses, n=40):
        hits = [0.0] * misses + [1.0] * (n - misses)
        return Comparison(n, [], top1_agreement=sum(hits) / n, kind="top1", sample_values=np.array(hits))

    unjudged = SimpleNamespace(comparison=comparison(1), verdict=None)     # e.g. a LiteRT row
    stale = SimpleNamespace(comparison=comparison(4), verdict=judge(comparison(0), 0.02))  # re-compared
    unchecked = SimpleNamespace(comparison=None, verdict=None)
    judged = attach_verdicts([unjudged, stale, unchecked], 0.02, "by photo")
    assert judged == [unjudged, stale] and unchecked.verdict is None
    assert unjudged.verdict.drop == pytest.approx(1 / 40) and unjudged.verdict.word == "over"
    assert stale.verdict.drop == pytest.approx(0.1) and stale.verdict.split == "by photo"
    assert "held out: by photo" in stale.verdict.summary()


def test_a_row_compared_but_never_judged_is_not_shown_as_unchecked():
    from edgesdk.conversion.markdown import verdict_cells

    assert verdict_cells({"accuracy": {"kind": "cosine", "samples": 4, "drop": 0.01}}) == [
        "cosine", 4, "0.0100", "not judged (no interval)"]
    assert verdict_cells({"accuracy": None})[-1] == "not checked"
