#!/usr/bin/env python3
"""Does our Runtime take every model its engine takes? The ONNX conformance corpus, raw vs ours.

The corpus is the ONNX backend test suite, the cases engines test themselves with:
  - the node cases (onnx/backend/test/data/node/<case>/ in the onnx source tree). The onnx
    1.23 wheel installed here ships their generator, not the files, so they are written once
    with onnx.backend.test.case.node.collect_testcases() -- the code onnx's own
    `backend-test-tools generate-data` runs -- into .cache/onnx-conformance/onnx-<version>/,
    in the same layout (model.onnx, test_data_set_0/input_*.pb, output_*.pb);
  - the case folders the wheel does ship (simple, pytorch-converted, pytorch-operator).
Cases whose graph inputs or outputs are not tensors (sequences, maps, optionals) are left out
of every count: the Runtime API takes and gives numpy arrays. They are listed as skipped.

Each case runs once per mode, each mode in a worker process (an engine that crashes or hangs
on a case costs that case, not the run):
  raw:onnxruntime   InferenceSession(model).run(None, feeds)
  raw:openvino      Core().compile_model(model, "CPU", config)(feeds)
  ours:<backend>    runtimes.load(model, backend=...).infer(feeds)
  ours:auto         runtimes.load(model, backend="auto").infer(feeds)
Raw engines get the settings ours pass them (1 thread; OpenVINO: LATENCY hint, f32
precision, which ours pins), so a difference in counts comes from our API, not from settings.
A case passes when every output matches the reference outputs (rtol 1e-3, atol 1e-5, NaN ==
NaN, exact for strings). Each mode loads and infers RUNS times; a case whose outputs differ
between those runs is "unstable" (OpenVINO's Tile with repeats fed at run time returns
uninitialized memory, so it passes or fails by chance) and is compared by nobody. "untyped"
counts exceptions from our API that are not EdgeSDKError: there must be none.

    python bench/conformance.py [--jobs 2] [--stride 1] [--modes raw:onnxruntime,ours:onnxruntime]
                                [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("raw:onnxruntime", "ours:onnxruntime", "raw:openvino", "ours:openvino", "ours:auto")
SHIPPED_KINDS = ("simple", "pytorch-converted", "pytorch-operator")
RTOL, ATOL = 1e-3, 1e-5
UNIT_TIMEOUT_S = 120.0
RUNS = 2  # loads and inferences per case and mode: uninitialized memory differs from one load to the next


# --------------------------------------------------------------------------- the corpus
def cache_dir() -> Path:
    import onnx
    return ROOT / ".cache" / "onnx-conformance" / f"onnx-{onnx.__version__}"


def _is_tensor_graph(model: Any) -> bool:
    values = list(model.graph.input) + list(model.graph.output)
    return all(v.type.HasField("tensor_type") for v in values)


def _write_case(case: Any, out: Path) -> None:
    from onnx import TensorProto, numpy_helper

    (out / "test_data_set_0").mkdir(parents=True)
    (out / "model.onnx").write_bytes(case.model.SerializeToString())
    inputs, outputs = case.data_sets[0]
    for kind, values, graph_values in (("input", inputs, case.model.graph.input),
                                       ("output", outputs, case.model.graph.output)):
        for j, value in enumerate(values):
            proto = value if isinstance(value, TensorProto) else numpy_helper.from_array(
                np.asarray(value), graph_values[j].name)
            (out / "test_data_set_0" / f"{kind}_{j}.pb").write_bytes(proto.SerializeToString())


def generate_node_cases(target: Path) -> None:
    """Write the node cases once (temp folder + rename: never a half-written corpus)."""
    import warnings

    from onnx.backend.test.case import node

    print(f"writing the ONNX node conformance cases to {target} (once) ...", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=".node-", dir=target.parent))
    skipped = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators divide by zero on purpose
        cases = node.collect_testcases(None)
    for case in cases:
        if not _is_tensor_graph(case.model):
            skipped[case.name] = "a graph input or output is not a tensor"
            continue
        try:
            _write_case(case, tmp / case.name)
        except Exception as exc:  # a value numpy_helper cannot serialize: say so, do not guess
            shutil.rmtree(tmp / case.name, ignore_errors=True)
            skipped[case.name] = f"cannot serialize its data: {exc}"[:200]
    (tmp / "skipped.json").write_text(json.dumps(skipped, indent=1, sort_keys=True))
    try:
        os.replace(tmp, target)
    except OSError:  # another process wrote it meanwhile: theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():
            raise


def corpus(stride: int = 1) -> tuple[list[Path], dict[str, str]]:
    """(case folders, skipped case -> why); every stride-th case in name order."""
    import onnx

    root = cache_dir()
    node_dir = root / "node"
    if not node_dir.is_dir():
        node_dir.parent.mkdir(parents=True, exist_ok=True)
        generate_node_cases(node_dir)
    skipped = json.loads((node_dir / "skipped.json").read_text())
    cases = [d for d in node_dir.iterdir() if d.is_dir()]
    shipped = Path(onnx.__file__).parent / "backend" / "test" / "data"
    for kind in SHIPPED_KINDS:
        for d in sorted((shipped / kind).glob("*/model.onnx")):
            model = onnx.load(str(d), load_external_data=False)
            if not (d.parent / "test_data_set_0").is_dir():
                continue
            if _is_tensor_graph(model):
                cases.append(d.parent)
            else:
                skipped[f"{kind}/{d.parent.name}"] = "a graph input or output is not a tensor"
    cases.sort(key=case_name)
    return cases[::stride], skipped


def case_name(case: Path) -> str:
    return case.name if case.parent.name == "node" else f"{case.parent.name}/{case.name}"


def read_case(case: Path) -> tuple[Path, dict[str, np.ndarray], list[np.ndarray]]:
    """(model path, feeds by graph input name, reference outputs)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(case / "model.onnx"), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in inits]
    data = case / "test_data_set_0"

    def tensors(kind: str) -> list[np.ndarray]:
        files = sorted(data.glob(f"{kind}_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
        return [numpy_helper.to_array(onnx.TensorProto.FromString(f.read_bytes())) for f in files]

    inputs = tensors("input")
    return case / "model.onnx", dict(zip(names, inputs)), tensors("output")


# --------------------------------------------------------------------------- one case, one mode
def matches(got: list, want: list[np.ndarray]) -> bool:
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        g = np.asarray(g)
        if g.shape != w.shape:
            return False
        if w.dtype.kind in "OUS":
            if [str(v) for v in g.ravel()] != [v.decode() if isinstance(v, bytes) else str(v) for v in w.ravel()]:
                return False
        elif not np.allclose(g.astype(np.float64), w.astype(np.float64), rtol=RTOL, atol=ATOL, equal_nan=True):
            return False
    return True


OV_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}


def same_outputs(a: list, b: list) -> bool:
    """Bit-for-bit the same outputs (NaN == NaN): one engine, one model, the same feeds."""
    return len(a) == len(b) and all(
        np.asarray(x).shape == np.asarray(y).shape and (
            np.array_equal(x, y, equal_nan=True) if np.asarray(x).dtype.kind in "fc"
            else np.array_equal(np.asarray(x), np.asarray(y))) for x, y in zip(a, b))


def _raw_onnxruntime(model: Path, feeds: dict) -> list:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
    session = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _raw_openvino(model: Path, feeds: dict) -> list:
    import openvino as ov

    compiled = ov.Core().compile_model(str(model), "CPU", OV_CONFIG)
    return list(compiled(feeds).to_tuple())


def _ours(backend: str) -> Callable[[Path, dict], list]:
    def run(model: Path, feeds: dict) -> list:
        import runtimes

        with runtimes.load(model, backend=backend, threads=1) as rt:
            out = rt.infer(feeds)
            return [out[s.name] for s in rt.outputs]
    return run


RUNNERS = {"raw:onnxruntime": _raw_onnxruntime, "raw:openvino": _raw_openvino,
           "ours:onnxruntime": _ours("onnxruntime"), "ours:openvino": _ours("openvino"),
           "ours:auto": _ours("auto")}


def run_unit(case: Path, mode: str) -> dict[str, Any]:
    from runtimes import EdgeSDKError

    result: dict[str, Any] = {"case": case_name(case), "mode": mode}
    model, feeds, want = read_case(case)
    try:
        runs = [RUNNERS[mode](model, feeds) for _ in range(RUNS)]
    except Exception as exc:
        result.update(outcome="error", error=type(exc).__name__, typed=isinstance(exc, EdgeSDKError),
                      message=" ".join(str(exc).split())[:300])
        return result
    if not all(same_outputs(runs[0], again) for again in runs[1:]):
        result["outcome"] = "unstable"
    else:
        result["outcome"] = "pass" if matches(runs[0], want) else "mismatch"
    return result


def worker() -> None:
    """Read {"case", "mode"} lines on stdin, answer one JSON line each on the real stdout.

    Engines print to fd 1 from C++; the protocol gets its own copy of it, fd 1 goes to null."""
    import logging

    logging.disable(logging.WARNING)  # the auto fallback logs; the parent counts, not reads
    proto = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    for line in sys.stdin:
        unit = json.loads(line)
        proto.write(json.dumps(run_unit(Path(unit["case"]), unit["mode"]), default=str) + "\n")
        proto.flush()


# --------------------------------------------------------------------------- many cases, many modes
def _drive(units: list[tuple[Path, str]], results: list, timeout: float, tick: Callable[[], None]) -> None:
    """Run units one at a time in a worker process; a dead or stuck worker costs one unit."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc: Optional[subprocess.Popen] = None
    for case, mode in units:
        if proc is None:
            proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        proc.stdin.write(json.dumps({"case": str(case), "mode": mode}) + "\n")
        proc.stdin.flush()
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        line = proc.stdout.readline()
        timer.cancel()
        if line:
            results.append(json.loads(line))
        else:
            code = proc.wait()
            results.append({"case": case_name(case), "mode": mode, "outcome": "crash", "typed": False,
                            "error": "timeout" if code == -9 else f"exit {code}",
                            "message": f"the worker died (exit code {code}) on this case"})
            proc = None
        tick()
    if proc is not None:
        proc.stdin.close()
        proc.wait()


def run_all(cases: list[Path], modes: Iterable[str], jobs: int = 2, timeout: float = UNIT_TIMEOUT_S,
            quiet: bool = False) -> list[dict[str, Any]]:
    """Every case in every mode on `jobs` worker processes, with progress and ETA on stderr."""
    units = [(c, m) for c in cases for m in modes]
    results: list[dict[str, Any]] = []
    start, lock, done = time.monotonic(), threading.Lock(), [0]

    def tick() -> None:
        with lock:
            done[0] += 1
            n = done[0]
        if not quiet and (n % 50 == 0 or n == len(units)):
            eta = (time.monotonic() - start) / n * (len(units) - n)
            print(f"\r  {n}/{len(units)} runs, ETA {eta:.0f} s ", end="", file=sys.stderr, flush=True)

    threads = [threading.Thread(target=_drive, args=(units[i::jobs], results, timeout, tick))
               for i in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not quiet:
        print(file=sys.stderr)
    return results


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per mode: counts of each outcome, the passing and the unstable case names, the untyped errors."""
    table: dict[str, dict[str, Any]] = {}
    for r in results:
        row = table.setdefault(r["mode"], {"pass": 0, "mismatch": 0, "error": 0, "crash": 0, "unstable": 0,
                                           "passed": set(), "unstable_cases": set(), "untyped": []})
        row[r["outcome"]] += 1
        if r["outcome"] == "pass":
            row["passed"].add(r["case"])
        if r["outcome"] == "unstable":
            row["unstable_cases"].add(r["case"])
        if r["mode"].startswith("ours:") and r["outcome"] in ("error", "crash") and not r.get("typed"):
            row["untyped"].append(f"{r['case']}: {r.get('error')}: {r.get('message', '')[:120]}")
    return table


def unstable_for(table: dict[str, dict[str, Any]], backend: str) -> set[str]:
    """Cases that were unstable on one backend, raw or through our API."""
    return table[f"raw:{backend}"]["unstable_cases"] | table[f"ours:{backend}"]["unstable_cases"]


def passed_where_stable(table: dict[str, dict[str, Any]], backend: str) -> tuple[set[str], set[str]]:
    """Raw and ours passing cases of one backend, less the cases either found unstable."""
    unstable = unstable_for(table, backend)
    return table[f"raw:{backend}"]["passed"] - unstable, table[f"ours:{backend}"]["passed"] - unstable


def print_table(table: dict[str, dict[str, Any]], n_cases: int, n_skipped: int) -> None:
    print(f"ONNX conformance: {n_cases} tensor cases ({n_skipped} non-tensor cases skipped)")
    print(f"{'mode':<18} {'pass':>5} {'mismatch':>8} {'error':>6} {'crash':>6} {'unstable':>8} {'untyped':>8}")
    for mode in MODES:
        if mode in table:
            r = table[mode]
            print(f"{mode:<18} {r['pass']:>5} {r['mismatch']:>8} {r['error']:>6} {r['crash']:>6} "
                  f"{r['unstable']:>8} {len(r['untyped']):>8}")
    for backend in ("onnxruntime", "openvino"):
        if f"raw:{backend}" in table and f"ours:{backend}" in table:
            raw, ours = passed_where_stable(table, backend)
            unstable = sorted(unstable_for(table, backend))
            print(f"{backend}, stable cases: raw {len(raw)} == ours {len(ours)}: {raw == ours}"
                  f"  (only raw: {sorted(raw - ours)[:8]}, only ours: {sorted(ours - raw)[:8]}; "
                  f"unstable: {unstable[:8]})")
    if "ours:auto" in table:
        best = max((table[m]["pass"] for m in table if m.startswith("raw:")), default=0)
        print(f"auto: {table['ours:auto']['pass']} pass vs {best} on the best single raw engine")
    for mode, r in table.items():
        for line in r["untyped"][:10]:
            print(f"UNTYPED {mode}: {line}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--stride", type=int, default=1, help="every STRIDE-th case (default 1: all)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    ap.add_argument("--json", type=Path, default=None, help="also write every result to this file")
    args = ap.parse_args()
    if args.worker:
        worker()
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in RUNNERS]
    if unknown or args.jobs < 1 or args.stride < 1:
        ap.error(f"unknown modes {unknown} (choose from {', '.join(MODES)}); --jobs and --stride are >= 1")
    cases, skipped = corpus(args.stride)
    started = time.monotonic()
    results = run_all(cases, modes, jobs=args.jobs)
    table = summarize(results)
    print_table(table, len(cases), len(skipped))
    print(f"({len(results)} runs in {time.monotonic() - started:.0f} s on {args.jobs} workers)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    untyped = sum(len(r["untyped"]) for r in table.values())
    return 1 if untyped else 0


if __name__ == "__main__":
    sys.exit(main())
