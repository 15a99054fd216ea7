"""Provisioning spec re-read: `edgesdk run --spec FILE` / `pipeline_from_file` apply the
sources added to or removed from the file while the pipeline runs, with no restart and
the statistics kept; a broken edit is refused and the sources keep running. Real model
(the PP-OCR direction classifier bundle) on real photo videos."""
from __future__ import annotations

import json
import os
import threading
import time

import pytest

from edgesdk.cli import main
from edgesdk.errors import ConfigError
from edgesdk.streaming.spec import load_spec_file
from edgesdk.streaming.specwatch import pipeline_from_file, wanted_sources
from streamdata import make_video


@pytest.fixture(scope="module")
def parts(tmp_path_factory, cls_model):
    from edgesdk.presets import make_bundle
    d = tmp_path_factory.mktemp("spec")
    return {"bundle": make_bundle(cls_model, d / "cls").path,
            "a": make_video(d / "a.mp4", (("astronaut", 6), ("coffee", 6)), fps=20.0).path,
            "b": make_video(d / "b.mp4", (("page", 6), ("camera", 6)), fps=20.0).path}


def _write(path, spec) -> None:
    """Replace the file as an editor or a provisioning tool would (whole, then rename), with
    a modification time the watcher cannot confuse with the previous one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(spec))
    os.replace(tmp, path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def _spec(parts, *names, **extra) -> dict:
    return {"model": str(parts["bundle"]), "sources": [f"{n}={parts[n]}" for n in names],
            "loop": True, "realtime": True, **extra}


def _wait_for(cond, timeout: float = 8.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_sources_follow_the_spec_file_without_a_restart(parts, tmp_path):
    path = tmp_path / "stream.json"
    _write(path, _spec(parts, "a"))
    pipe = pipeline_from_file(path).start()
    rows = lambda: pipe.snapshot()["sources"]  # noqa: E731
    try:
        assert _wait_for(lambda: rows().get("a", {}).get("frames_out", 0) >= 5)
        _write(path, _spec(parts, "b", weights={"b": 2}))  # a removed, b added
        assert _wait_for(lambda: rows().get("b", {}).get("frames_out", 0) >= 5)
        assert _wait_for(lambda: rows()["a"]["state"] == "ended")
        a_out = rows()["a"]["frames_out"]
        assert rows()["b"]["weight"] == 2.0
        path.write_text("sources: [unclosed")  # a broken edit: refused, nothing stops
        assert _wait_for(lambda: pipe.snapshot()["gauges"]["spec"]["refused"] == 1)
        assert rows()["b"]["state"] == "live" and pipe.running
        _write(path, _spec(parts, "a", "b", weights={"b": 2}))  # a comes back under its name
        assert _wait_for(lambda: rows()["a"]["frames_out"] > a_out + 3)
        assert rows()["a"]["state"] == "live" and pipe.snapshot()["gauges"]["spec"]["reloads"] == 2
    finally:
        pipe.stop("test")
        pipe.wait(15)
    stats = pipe.report().stats["sources"]
    assert stats["a"]["frames_out"] > a_out and stats["b"]["frames_out"] >= 5  # one run, stats kept
    assert pipe.report().stats["errors"].get("order", 0) == 0  # a's frame numbers went on, in order


def test_cli_run_spec_applies_a_source_added_to_the_file(parts, tmp_path, capsys):
    path = tmp_path / "stream.yaml"
    _write(path, _spec(parts, "a"))
    report = tmp_path / "r.json"
    timer = threading.Timer(1.5, _write, (path, _spec(parts, "a", "b")))
    timer.start()
    try:
        main(["run", "--spec", str(path), "--duration", "4", "--no-status", "--report", str(report)])
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err[-500:]
    finally:
        timer.cancel()
    stats = json.loads(report.read_text())["stats"]["sources"]
    assert stats["a"]["frames_out"] > 20 and stats["b"]["frames_out"] > 5


def test_spec_file_errors_name_the_file_and_the_problem(parts, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\nsources: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_spec_file(bad)
    bad.write_text("- just a list")
    with pytest.raises(ConfigError, match="must be a table"):
        load_spec_file(bad)
    with pytest.raises(ConfigError, match="cannot read the stream spec"):
        load_spec_file(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="used twice"):
        wanted_sources({"model": "m", "sources": ["a=x.mp4", {"id": "a", "uri": "y.mp4"}]})
    rel = tmp_path / "rel.json"
    rel.write_text(json.dumps({"model": "bundle_dir", "sources": ["0"]}))
    assert load_spec_file(rel)["model"] == str((tmp_path / "bundle_dir").resolve())  # relative to the file


def test_a_misspelt_spec_key_is_refused_naming_the_key_it_meant(parts, tmp_path, capsys):
    from edgesdk.streaming.pipeline import Pipeline

    # `slo: 50` used to reach the engine as an option nobody reads: the run went on without a target
    with pytest.raises(ConfigError, match=r"unknown key 'slo' \(did you mean 'slo_ms'\?\)"):
        Pipeline.from_spec(_spec(parts, "a", slo=50))
    spec = tmp_path / "typo.json"
    spec.write_text(json.dumps(_spec(parts, "a", batchng="adaptive")))
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--spec", str(spec), "--duration", "1"])
    assert exit_.value.code and "unknown key 'batchng' (did you mean 'batching'?)" in capsys.readouterr().err
    # engine options and keyword options of the pipeline, predictor and runtime stay accepted
    pipe = Pipeline.from_spec(_spec(parts, "a", slo_ms=200, batching="adaptive", threads=1,
                                    session_config={}, max_frames=2))
    assert isinstance(pipe, Pipeline)


def test_every_engine_option_a_runtime_reads_is_on_its_backend_record():
    import re
    from pathlib import Path

    import runtimes
    from runtimes.registry import RECORDS

    root = Path(runtimes.__file__).parent
    for rec in RECORDS.values():
        if not rec.engine:
            continue
        source = (root / f"{rec.engine.split(':')[0].split('.')[-1]}.py").read_text()
        read = set(re.findall(r"self\.options(?:\.get\(|\[)\"(\w+)\"", source))
        assert read <= set(rec.options), (rec.name, read - set(rec.options))


def test_require_all_sources_is_a_spec_key_and_the_default_runs_the_others(parts, tmp_path):
    from edgesdk.errors import SourceError
    from edgesdk.streaming.pipeline import Pipeline

    (tmp_path / "empty").mkdir()
    spec = {"model": str(parts["bundle"]), "sources": [f"a={parts['a']}", {"id": "dead", "uri": str(tmp_path / "empty")}]}
    pipe = Pipeline.from_spec(spec)
    with pytest.raises(SourceError, match="1 of 2 source\\(s\\) failed.*no images"):
        pipe.run()
    assert pipe.report().stats["sources"]["a"]["frames_out"] == 12
    assert list(pipe.report().failed_sources) == ["dead"]
    strict = Pipeline.from_spec({**spec, "require_all_sources": True})
    with pytest.raises(SourceError, match="no images"):
        strict.run()
    assert not strict.readers and strict.report().stop_reason.startswith("could not start")


def test_reconnect_in_a_spec_is_a_table_and_a_source_that_gives_up_fails_while_the_run_goes_on(parts, tmp_path):
    """`reconnect: {attempts: 2}` in a spec reached the readers as a dict: the source died with
    AttributeError. Now it is a Backoff; the dead stream ends as failed while the file plays on."""
    import socket

    from edgesdk.streaming.pipeline import Pipeline

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = _spec(parts, "a", reconnect={"attempts": 1, "initial": 0.05, "maximum": 0.05})
    spec["sources"].append(f"door=rtsp://127.0.0.1:{port}/live")
    pipe = Pipeline.from_spec(spec).start()
    try:
        assert _wait_for(lambda: pipe.states["door"].state == "failed", timeout=20)
        assert pipe.states["a"].state == "live" and "after 1 reconnect attempts" in pipe.states["door"].reason
    finally:
        pipe.stop("test")
        pipe.wait(15)
    for bad, match in (({"attempts": 0}, "reconnect.attempts must be a whole number >= 1"),
                       ({"initial": float("nan")}, "reconnect.initial must be a finite number > 0"),
                       ({"tries": 3}, "reconnect must be a table with initial"), (5, "must be a table")):
        with pytest.raises(ConfigError, match=match):
            Pipeline.from_spec(_spec(parts, "a", reconnect=bad))
