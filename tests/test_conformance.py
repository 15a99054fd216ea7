"""The runtime takes what the engine takes: ONNX conformance cases, raw engine vs `runtimes.load().infer()`.

A sample of the ONNX backend node cases (every STRIDE-th by name, plus the cases with the
inputs check_feeds used to refuse: scalars, 0-size, int64, bool, strings, unrelated axis 0)
runs through each raw engine and through our API; per backend the passing cases must be the
same ones (less the cases whose outputs differ from run to run, which pass by chance), and
our API may raise nothing but EdgeSDKError. bench/conformance.py runs the
whole corpus and prints the table.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import conformance  # noqa: E402

STRIDE = 16  # ~125 cases x 5 modes: ~30 s on 2 workers
EDGE_CASES = {
    "test_matmul_2d", "test_expand_dim_changed", "test_reshape_extended_dims", "test_tile",  # axis 0 unrelated
    "test_size_example", "test_shape", "test_string_concat_zero_dimensional",  # scalars
    "test_slice_start_out_of_bounds", "test_nonzero_example", "test_constant_pad",  # 0-size, int64
    "test_and2d", "test_not_2d", "test_where_long_example",  # bool
    "test_equal_string", "test_string_concat_broadcasting", "test_strnormalizer_export_monday_empty_output",
    "test_min_int64", "test_mod_mixed_sign_int8", "test_gather_0", "test_onehot_with_axis",
}


@pytest.fixture(scope="module")
def table():
    cases, skipped = conformance.corpus()
    sample = [c for i, c in enumerate(cases) if i % STRIDE == 0 or conformance.case_name(c) in EDGE_CASES]
    missing = EDGE_CASES - {conformance.case_name(c) for c in sample}
    assert not missing, f"edge cases not in the corpus: {sorted(missing)}"
    results = conformance.run_all(sample, conformance.MODES, jobs=2, quiet=True)
    table = conformance.summarize(results)
    conformance.print_table(table, len(sample), len(skipped))
    return table


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_our_api_passes_exactly_the_cases_the_raw_engine_passes(table, backend):
    raw, ours = conformance.passed_where_stable(table, backend)
    print(f"{backend}, stable cases: raw {len(raw)} pass, ours {len(ours)} pass")
    assert len(raw) > 50  # the sample really ran
    assert ours == raw, f"only raw: {sorted(raw - ours)}, only ours: {sorted(ours - raw)}"


def test_our_api_raises_only_typed_errors(table):
    untyped = [line for mode, row in table.items() for line in row["untyped"]]
    assert not untyped


def test_auto_runs_more_cases_than_any_single_raw_engine(table):
    auto = table["ours:auto"]
    raws = {m: r["pass"] for m, r in table.items() if m.startswith("raw:")}
    print(f"auto {auto['pass']} pass; raw engines {raws}")
    assert auto["pass"] > max(raws.values())
    # auto tries onnxruntime first with the same settings: it keeps every case onnxruntime passes
    assert auto["passed"] >= table["raw:onnxruntime"]["passed"]


def test_a_case_whose_outputs_change_between_runs_is_unstable_not_a_pass(monkeypatch):
    """OpenVINO's Tile with run-time repeats returns uninitialized memory: a pass by chance
    must not count as a pass, or the raw-vs-ours comparison fails at random."""
    case = next(c for c in conformance.corpus()[0] if conformance.case_name(c) == "test_tile")
    _, _, want = conformance.read_case(case)
    garbage = want[0].copy()
    garbage.flat[0] = float("nan")
    runs = iter([[want[0]], [garbage]] * conformance.RUNS)
    monkeypatch.setitem(conformance.RUNNERS, "raw:openvino", lambda model, feeds: next(runs))
    assert conformance.run_unit(case, "raw:openvino")["outcome"] == "unstable"
    monkeypatch.setitem(conformance.RUNNERS, "raw:openvino", lambda model, feeds: [want[0]])
    assert conformance.run_unit(case, "raw:openvino")["outcome"] == "pass"
    table = conformance.summarize([
        {"case": "a", "mode": "raw:openvino", "outcome": "unstable"},
        {"case": "a", "mode": "ours:openvino", "outcome": "pass"},
        {"case": "b", "mode": "raw:openvino", "outcome": "pass"},
        {"case": "b", "mode": "ours:openvino", "outcome": "pass"}])
    assert conformance.passed_where_stable(table, "openvino") == ({"b"}, {"b"})
