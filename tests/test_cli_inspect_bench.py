"""`edgesdk bench` and the benchmark/report library on real models (short runs: no timing asserts)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import runtimes
from edgesdk.benchmark import backends_for, benchmark, make_feeds, parse_batches, write_report
from edgesdk.errors import ConfigError
from edgesdk.report import Report, markdown_table, write_atomic
from runtimes import BackendUnavailableError, ModelLoadError, TensorSpec

from test_cli_inspect import run


def test_bench_all_backends_json_reports_precision_that_ran(capsys, cls_model):
    code, out, err = run(capsys, "bench", cls_model, "--backend", "all", "--batch", "1,2", "--threads", "1",
                         "--iterations", "3", "--warmup", "1", "--json")
    assert code == 0, err
    d = json.loads(out)
    expected = [b for b in ("onnxruntime", "openvino") if b in runtimes.available_backends()]
    assert [(r["backend"], r["batch"]) for r in d["rows"]] == [(b, n) for b in expected for n in (1, 2)]
    for r in d["rows"]:
        assert r["count"] == 3 and r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] and r["throughput"] > 0
        assert r["input_shape"] == [r["batch"], 3, 48, 192]  # dynamic H/W from the preset
        if r["backend"] == "openvino":
            # fp32 model, no precision asked: pinned f32, never a silent bf16
            assert r["precision"] == "fp32" and r["inference_precision"] == "fp32"
    assert "onnxruntime batch 1" in err  # progress on stderr


def test_bench_requested_precision_is_reported_as_run(capsys, cls_model):
    if "openvino" not in runtimes.available_backends():
        pytest.skip("openvino not installed")
    code, out, err = run(capsys, "bench", cls_model, "--backend", "openvino", "--precision", "bf16",
                         "--iterations", "2", "--warmup", "0", "--json")
    assert code == 0, err
    (row,) = json.loads(out)["rows"]
    with runtimes.load(cls_model, backend="openvino", precision="bf16") as rt:
        assert row["precision"] == rt.precision  # whatever this CPU really runs


def test_bench_report_markdown_and_png(capsys, blazeface_model, tmp_path):
    report = tmp_path / "out" / "bench.md"
    code, out, err = run(capsys, "bench", blazeface_model, "--batch", "1,2", "--iterations", "3", "--warmup", "1",
                         "--report", report)
    assert code == 0, err
    assert out.splitlines()[0].split()[:4] == ["backend", "batch", "precision", "device"]
    assert len(out.splitlines()) == 4  # header, rule, two rows
    md = report.read_text()
    assert "| litert | 1 | fp32 |" in md and "![latency distribution (CDF)](bench.png)" in md
    png = report.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert f"wrote {report}" in err


@pytest.mark.parametrize("args, code, needle", [
    (["--backend", "nope"], 4, "unknown backend 'nope'"),
    (["--backend", "litert"], 3, "the litert backend cannot run .onnx files"),
    (["--batch", "1,x"], 2, "--batch takes comma-separated positive integers"),
    (["--batch", "0"], 2, "batch sizes must be positive"),
    (["--size", "640"], 2, "--size takes HEIGHTxWIDTH"),
    (["--iterations", "0"], 2, "--iterations"),
])
def test_bench_bad_options(capsys, cls_model, args, code, needle):
    got, _, err = run(capsys, "bench", cls_model, *args)
    assert got == code and needle in err and "Traceback" not in err


def test_bench_missing_model(capsys, tmp_path):
    code, _, err = run(capsys, "bench", tmp_path / "none.onnx")
    assert code == 3 and "does not exist" in err


def test_backends_for_and_parse_batches(cls_model, blazeface_model, tmp_path):
    assert backends_for(blazeface_model) == ["litert"]
    assert backends_for(cls_model, "ort,onnxruntime") == ["onnxruntime"]
    with pytest.raises(BackendUnavailableError, match="no installed backend opens .pt files"):
        backends_for(tmp_path / "m.pt")
    with pytest.raises(ConfigError, match="no backend given"):
        backends_for(cls_model, " , ")
    with pytest.raises(ModelLoadError):
        backends_for(cls_model, "litert")
    assert parse_batches("8,1,8,4") == [8, 1, 4]


def test_make_feeds_shapes_and_dtypes():
    specs = [TensorSpec("img", (None, 3, None, None), np.float32),
             TensorSpec("ids", (1, 16), np.int64), TensorSpec("q", (None, 8, 8, 3), np.uint8, layout="NHWC")]
    feeds = make_feeds(specs, 4, size=(32, 64))
    assert feeds["img"].shape == (4, 3, 32, 64) and feeds["img"].dtype == np.float32
    assert feeds["ids"].shape == (4, 16) and feeds["q"].dtype == np.uint8
    np.testing.assert_array_equal(make_feeds(specs, 4, (32, 64))["img"], feeds["img"])  # deterministic
    with pytest.raises(ConfigError, match="dynamic dims"):
        make_feeds([TensorSpec("seq", (None, None), np.float32)], 1)


def test_benchmark_library_rows_and_html_report(tiny_models, tmp_path):
    res = benchmark(tiny_models.conv_net(batch=None), backends="onnxruntime", batches=[1, 3], iterations=2, warmup=0)
    assert [r.batch for r in res.rows] == [1, 3] and all(r.ok for r in res.rows)
    assert res.rows[1].input_shape == (3, 3, 16, 16) and res.rows[1].stats.batch == 3
    paths = write_report(res, tmp_path / "r.html")
    assert paths[0].read_text().startswith("<!doctype html>") and paths[1].suffix == ".png"


def test_failing_configs_become_error_rows(capsys, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage, not a protobuf")
    res = benchmark(broken, backends="onnxruntime", batches=[1, 2], iterations=1, warmup=0)
    assert [(r.batch, r.ok) for r in res.rows] == [(1, False), (2, False)]
    assert "onnxruntime could not load" in res.rows[0].error
    with pytest.raises(ModelLoadError):
        benchmark(broken, backends="onnxruntime", keep_going=False)
    code, out, err = run(capsys, "bench", broken, "--backend", "onnxruntime", "--report", tmp_path / "r.md")
    assert code == 1 and "every benchmark configuration failed" in err and "error" in out
    assert "## Errors" in (tmp_path / "r.md").read_text()


def test_report_helpers(tmp_path):
    assert markdown_table(["a", "b|c"], [[1.23456, None]]) == "| a | b\\|c |\n|---|---|\n| 1.235 | - |"
    rep = Report("T").heading("H").paragraph("p <b>").bullets(["x"]).code("c").table(["k"], [["v"]])
    md, page = rep.to_markdown(), rep.to_html()
    assert md.startswith("# T\n") and "## H" in md and "- x" in md and "```\nc\n```" in md
    assert "&lt;b&gt;" in page and "<td>v</td>" in page
    p = write_atomic(tmp_path / "sub" / "f.txt", "hello")
    assert p.read_text() == "hello" and list(p.parent.iterdir()) == [p]
    assert (p.stat().st_mode & 0o644) == 0o644
