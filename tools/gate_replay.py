#!/usr/bin/env python3
"""Replay the change-gate bench (bench/gate.py) offline, to judge a gate idea in seconds
instead of a ~2 minute bench run on the shared 2-core box.

    PYTHONPATH=$PWD .venv/bin/python tools/gate_replay.py record            # once, ~90 s
    PYTHONPATH=$PWD .venv/bin/python tools/gate_replay.py [--policy FILE] [--threshold X] [--only shake,static]

record: runs each bench case (video x detector) ungated once, keeping the frames as the gate
saw them (decoded, with their video position) and the results. replay: feeds those frames in
order to a gate and counts with bench/gate.py's `tally`; a frame the gate infers gets its
ungated result, which assumes the engine answers a frame the same whatever else is in its
batch (the replay of the product gate reproduced all 18 rows of bench/gate.py exactly).
A policy FILE defines `make(detector, score_threshold)` returning an object with
`decide(frame) -> bool` (True: infer) and, optionally, `observe(source_id, result)`, called
with each fresh result (the real pipeline would see it a batch or two late).
"""
from __future__ import annotations

import argparse
import importlib.util
import pickle
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import gate as bench  # noqa: E402  (bench/gate.py; it puts tools/ and tests/ on the path)

from edgesdk.results import Frame  # noqa: E402
from edgesdk.streaming import run  # noqa: E402
from edgesdk.streaming.gate import make_gate  # noqa: E402

DEFAULT_DIR = Path(tempfile.gettempdir()) / "edgesdk_gate_replay"


def record(folder: Path, frames: int, only: set) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    models = bench.fetch_models.fetch(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        videos = bench._videos(Path(tmp), frames, only)
        pairs = [(v, d) for v in videos for d in bench.DETECTORS if v[1] in (None, bench.DETECTORS[d][2])]
        bundles = {d: bench.make_bundle(models[bench.DETECTORS[d][0]], Path(tmp) / f"b_{d}",
                                        **bench.DETECTORS[d][1]).path for d in {d for _, d in pairs}}
        for (name, kind), det in pairs:
            bundle = bundles[det]
            off: dict = {}
            seen: dict = {}
            run(str(bundle), [f"clip={videos[(name, kind)][0]}"],
                on_result=lambda f, r: (off.__setitem__(f.index, r), seen.__setitem__(f.index, _copy(f))))
            video = name if kind is None else f"{name}/{kind}"
            case = {"video": video, "detector": det, "off": off, "states": videos[(name, kind)][1],
                    "floor": bench._score_floor(bundle), "frames": [seen[i] for i in sorted(seen)]}
            with open(folder / f"{video.replace('/', '_')}__{det}.pkl", "wb") as fh:
                pickle.dump(case, fh)
            print(f"recorded {video} x {det}: {len(off)} frames", file=sys.stderr, flush=True)


def _copy(frame: Frame) -> Frame:
    """The frame with its own image and meta: a source may reuse its buffers."""
    return Frame(frame.source_id, frame.index, frame.timestamp, frame.image.copy(), dict(frame.meta))


def replay_case(case: dict, make) -> dict:
    """bench/gate.py's row for one recorded case under the gate `make(detector, score_threshold)`."""
    gate = make(case["detector"], case["floor"] - bench.NEAR)
    off, cached_from, last = case["off"], {}, None
    for f in case["frames"]:
        if gate.decide(_copy(f)):
            last = f.index
            if hasattr(gate, "observe"):
                gate.observe(f.source_id, off[f.index])
        elif last is not None:
            cached_from[f.index] = last
    on = {i: off[cached_from.get(i, i)] for i in off}
    return {"video": case["video"], "detector": case["detector"],
            **bench.tally(off, on, cached_from, case["states"], case["floor"])}


def _policy(path: str | None, threshold: float | None):
    if path is None:  # the product's gate, as `edgesdk run --gate change` makes it
        return lambda detector, score_threshold: make_gate("change", threshold)
    spec = importlib.util.spec_from_file_location("gate_policy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", nargs="?", choices=["record", "replay"], default="replay")
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"recordings (default {DEFAULT_DIR})")
    ap.add_argument("--frames", type=int, default=150, help="record: frames per generated scene (default 150)")
    ap.add_argument("--only", default="", help="comma-separated videos: static," + ",".join(bench.SCENES))
    ap.add_argument("--policy", default=None, help="replay: a file defining make(detector, score_threshold)")
    ap.add_argument("--threshold", type=float, default=None, help="replay, product gate: --gate-threshold")
    args = ap.parse_args(argv)
    only = set(filter(None, args.only.split(",")))
    if args.command == "record":
        record(args.dir, args.frames, only)
        return 0
    cases = sorted(args.dir.glob("*__*.pkl"))
    if not cases:
        ap.error(f"no recordings in {args.dir}: run '{Path(__file__).name} record' first")
    make, rows = _policy(args.policy, args.threshold), []
    for path in cases:
        with open(path, "rb") as fh:
            case = pickle.load(fh)
        if not only or case["video"].split("/")[0] in only:
            rows.append(replay_case(case, make))
    bench._table(rows, args.threshold)
    return 0 if all(bench._ok(r) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
