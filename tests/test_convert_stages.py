"""convert() runs named stages (edgesdk/conversion/) and the report replays them in order, with
their time and a one-line summary, in report.json, report.md and the progress lines."""
from __future__ import annotations

import json

import pytest

from convdata import cls_crops, write_images
from edgesdk.conversion import STAGES
from edgesdk.convert import convert
from edgesdk.errors import ConversionError


@pytest.fixture(scope="module")
def cls_images(tmp_path_factory):
    return write_images(cls_crops("calibration") + cls_crops("heldout"), tmp_path_factory.mktemp("cls_images"))


def test_the_report_replays_the_stages_in_order(cls_model, cls_images, tmp_path):
    said: list[str] = []
    out = tmp_path / "cls.bundle"
    result = convert(cls_model, "amd-epyc-zen4", out, precision="fp32", calib=str(cls_images),
                     backends=["onnxruntime"], measure=False, progress=said.append)
    stages = result.report["stages"]
    assert [s["name"] for s in stages] == list(STAGES)
    assert all(s["seconds"] >= 0 and s["summary"] for s in stages)
    assert sum(s["seconds"] for s in stages) <= result.report["seconds"] + 1.0
    by_name = {s["name"]: s["summary"] for s in stages}
    assert "input x [1, 3, 48, 192]" in by_name["prepare"]
    assert "held out" in by_name["data"] and "no compression" in by_name["compress"]
    assert result.chosen.key in by_name["build"] and result.chosen.name in by_name["choose"]
    assert str(out) in by_name["write"]
    # the report on disk replays the same stages (the write stage with its time up to the write)
    on_disk = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in on_disk["stages"]] == list(STAGES)
    md = (out / "report.md").read_text()
    assert "## Stages" in md
    assert [md.index(f"| {name} |") for name in STAGES] == sorted(md.index(f"| {name} |") for name in STAGES)
    # progress says each stage as it starts and ends, in order
    started = [line.split(":")[1].split()[0] for line in said if line.startswith("stage ") and "/" in line.split()[1]]
    assert started == list(STAGES)
    assert sum(line.startswith("stage ") and " done in " in line for line in said) == len(STAGES)
    # the keys the report had before the stages are all still there
    assert {"model", "profile", "mode", "budget", "variants", "chosen", "decision", "calibration", "passes",
            "options", "preprocess", "warnings", "notes"} <= set(result.report)


def test_a_failing_stage_leaves_nothing_behind(cls_model, tmp_path):
    """The build stage refuses INT8 without calibration data; no bundle and no scratch folder remain."""
    out = tmp_path / "cls.bundle"
    with pytest.raises(ConversionError, match="--calib"):
        convert(cls_model, "amd-epyc-zen4", out, precision="int8", backends=["openvino"], measure=False,
                progress=None)
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("settings, option", [(dict(lowrank=1.5), "--lowrank"), (dict(lowrank=0.0), "--lowrank"),
                                              (dict(distill_minutes=0), "--distill-minutes")])
def test_compression_options_are_validated_with_the_rest(settings, option):
    from edgesdk.convert_options import ConvertOptions

    with pytest.raises(ConversionError, match=option):
        ConvertOptions(**settings)


def test_backend_aliases_resolve_and_an_unknown_backend_is_refused_in_the_options():
    """`--backend ov` matched no profile entry ('offers nothing ... on backends ov') though ov is its alias."""
    from edgesdk.convert_options import ConvertOptions

    assert ConvertOptions(backends=["ov", "ORT", "tflite", "coral"]).backends == ["openvino", "onnxruntime", "litert",
                                                                                  "edgetpu"]
    with pytest.raises(ConversionError, match=r"--backend 'onnx-runtime' is no backend convert builds for; choose "
                                              r"one of onnxruntime, openvino"):
        ConvertOptions(backends=["onnx-runtime"])


def test_options_replace_the_keywords_including_compression_and_choice():
    from edgesdk.convert_options import ConvertOptions

    recorded = ConvertOptions(lowrank=0.9, distill=True, keep_best=True, metric="top1").to_dict()
    assert recorded["lowrank"] == 0.9 and recorded["distill"] is True and recorded["keep_best"] is True
    assert recorded["metric"] == "top1"


def test_compress_stage_distils_with_the_recipe_of_the_models_task(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from converters import distill as kd
    from edgesdk.conversion.compress import compress

    seen = {}
    monkeypatch.setattr(kd, "compress_for_convert", lambda *a, **k: seen.setdefault("config", k["config"]))
    opts = SimpleNamespace(prune=None, lowrank=0.9, distill=True, distill_minutes=1.0, resume=False, calib=None)
    ctx = SimpleNamespace(opts=opts, threads=1, output=tmp_path / "bundle", say=lambda _m: None)
    for task, mirrors in (("text_recognition", False), ("text_detection", True)):
        facts = SimpleNamespace(task=task, input_name="x", shape=[1, 3, 48, 320])
        prep = SimpleNamespace(facts=facts, prepared_model=None, prepared_path=tmp_path / "prepared.onnx")
        compress(ctx, prep, SimpleNamespace(fit=None))
        assert seen.pop("config").flip is mirrors   # a text line is never mirrored; a scene may be
