"""Deployment specs: validation naming the key, idempotent provisioning, drift, systemd units."""
from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from edgesdk.errors import ConfigError
from edgesdk.provision.install import status
from edgesdk.provision.provision import apply, check
from edgesdk.provision.spec import load_spec, parse_spec
from edgesdk.provision.systemd import exec_quote
from provisiondata import QUIET, art, edgesdk  # noqa: F401 (art: fixture)





def write_spec(folder, art, packages=None, **top):
    shutil.copy(art.pkgs["1.0.0"], folder / "cls-1.0.0.edgepkg")
    shutil.copy(art.pkgs["1.1.0"], folder / "cls-1.1.0.edgepkg")
    spec = {"root": "device", "trusted_keys": str(art.trusted), "user": "edgesdk",
            "systemd": {"unit_dir": "units", "manage": False},
            "packages": packages or [{
                "name": "ocr-cls", "path": "cls-1.0.0.edgepkg",
                "run": {"sources": ["rtsp://127.0.0.1:8554/live"], "batching": "adaptive", "batch": 4,
                        "max_wait_ms": 20, "slo_ms": 50, "sinks": ["/var/lib/edgesdk/ocr.jsonl"],
                        "metrics_port": 9100}}],
            **top}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


BASE = {"root": "/r", "trusted_keys": "/k", "packages": [{"name": "a", "path": "a.edgepkg"}]}


@pytest.mark.parametrize("change, message", [
    ({"root": None}, "spec: root: is required"),
    ({"roots": "/r"}, "spec: roots: unknown key"),
    ({"trusted_keys": None}, "trusted_keys: is required"),
    ({"keep": 0}, "keep: must be >= 1"),
    ({"keep": "3"}, "keep: must be int"),
    ({"user": "Root Admin"}, "user: 'Root Admin' is not a valid"),
    ({"profile": "no-such-device"}, "profile: "),
    ({"systemd": {"manage": "sometimes"}}, "systemd.manage: must be auto, true or false"),
    ({"packages": []}, "packages: must list at least one"),
    ({"packages": [{"name": "a"}]}, r"packages\[0\].path: give exactly one of path"),
    ({"packages": [{"name": "a", "path": "x", "url": "http://h/x"}]}, "give exactly one"),
    ({"packages": [{"name": "a", "url": "http://h/x"}]}, r"packages\[0\].sha256: is required with url"),
    ({"packages": [{"name": "a", "url": "ftp://h/x", "sha256": "0" * 64}]}, r"packages\[0\].url: must start"),
    ({"packages": [{"name": "a", "path": "x", "sha256": "abc"}]}, "sha256: must be 64 hex"),
    ({"packages": [{"name": "A B", "path": "x"}]}, r"packages\[0\].name"),
    ({"packages": [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]}, r"packages\[1\].name: 'a' is used twice"),
    ({"packages": [{"name": "a", "path": "x", "run": {"sources": []}}]}, r"packages\[0\].run.sources: must list"),
    ({"packages": [{"name": "a", "path": "x", "run": {"sources": ["s"], "batching": "fast"}}]},
     r"packages\[0\].run.batching: must be one of none, fixed, adaptive"),
    ({"packages": [{"name": "a", "path": "x", "run": {"sources": ["s"], "batching": "fixed"}}]},
     r"run.batch: is required when batching is 'fixed'"),
    ({"packages": [{"name": "a", "path": "x", "run": {"sources": ["s"], "metrics_port": 70000}}]},
     r"run.metrics_port: must be a TCP port"),
    ({"packages": [{"name": "a", "path": "x", "run": {"sources": ["s"], "sink": ["x"]}}]},
     r"packages\[0\].run.sink: unknown key"),
    ({"packages": [{"name": "a", "path": "x", "run": {"sources": ["s"], "args": ["--report", "r.json", "--loop"]}}]},
     r"packages\[0\].run.args\[2\]: '--loop': the service runs `edgesdk run --spec`"),
    ({"packages": [{"name": "a", "path": "x", "run": {"sources": ["s"], "then": ["nope"]}}]},
     r"packages\[0\].run.then\[0\]: 'nope' is neither a package of this spec \(a\) nor a bundle folder"),
    ({"packages": [{"name": "a", "path": "x", "run": {"sources": ["s"], "then": ["a"]}}]},
     r"run.then\[0\]: 'a' is this package itself"),
    ({"packages": [{"name": "a", "path": "x", "run": {"sources": ["s"], "gate": "motion"}}]},
     r"run.gate: must be none or change"),
    ({"packages": [{"name": "a", "path": "x", "run": {"sources": ["s"], "gate": "change", "gate_threshold": 1.5}}]},
     r"run.gate_threshold: must be >= 0 and <= 1"),
    ({"packages": [{"name": "a", "path": "x", "run": {"sources": ["s"], "gate_max_age_s": 2}}]},
     r"run.gate: must be change when"),
    ({"packages": [{"name": "a", "path": "x", "run": {"sources": ["s"], "replicas": 0}}]},
     r"run.replicas: must be >= 1"),
    ({"packages": [{"name": "a", "path": "x", "run": {"sources": ["s"], "require_all_sources": "yes"}}]},
     r"run.require_all_sources: must be bool"),
    ({"packages": [{"name": "a", "path": "x", "run": {"sources": ["s"], "reconnect_attempts": 0}}]},
     r"run.reconnect_attempts: must be >= 1"),
])
def test_spec_errors_name_the_key(change, message):
    data = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        parse_spec(data, "spec")


def test_spec_file_errors(tmp_path):
    (tmp_path / "bad.yaml").write_text("root: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_spec(tmp_path / "bad.yaml")
    r = edgesdk("provision", tmp_path / "bad.yaml")
    assert r.returncode == 2 and "error:" in r.stderr


def test_provision_is_idempotent_and_check_reports_drift(art, tmp_path):
    spec_path = write_spec(tmp_path, art)
    r = edgesdk("provision", spec_path)
    assert r.returncode == 0, r.stderr
    assert "ocr-cls: installed ppocr_cls 1.0.0" in r.stdout and "wrote unit" in r.stdout
    unit = tmp_path / "units" / "edgesdk-ocr-cls.service"
    assert unit.is_file()
    st = status(tmp_path / "device" / "ocr-cls", **QUIET)
    assert st["ok"] and st["current"]["version"] == "1.0.0"

    again = edgesdk("provision", spec_path)
    assert again.returncode == 0 and again.stdout.strip() == "no changes"
    ok = edgesdk("provision", spec_path, "--check")
    assert ok.returncode == 0 and "no drift" in ok.stdout

    # drift 1: someone edits the unit; drift 2: the spec moves to 1.1.0
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restart=no"))
    spec = yaml.safe_load(spec_path.read_text())
    spec["packages"][0]["path"] = "cls-1.1.0.edgepkg"
    spec_path.write_text(yaml.safe_dump(spec))
    drift = edgesdk("provision", spec_path, "--check")
    assert drift.returncode == 3
    assert "differs from the spec" in drift.stdout and "came from a different package file" in drift.stdout
    assert "Restart=no" in unit.read_text()  # --check changed nothing
    fixed = apply(load_spec(spec_path), **QUIET)
    assert any("installed ppocr_cls 1.1.0" in c for c in fixed.changes)
    assert any("wrote unit" in c for c in fixed.changes) and "Restart=on-failure" in unit.read_text()
    assert check(load_spec(spec_path)).drift == []
    assert apply(load_spec(spec_path), **QUIET).changes == []

    # drift 3: damage in the installed release is found and repaired
    model = tmp_path / "device" / "ocr-cls" / "current" / "bundle" / "ppocr_cls.onnx"
    model.write_bytes(model.read_bytes()[:-10])
    assert any("is damaged" in d for d in check(load_spec(spec_path)).drift)
    apply(load_spec(spec_path), **QUIET)
    assert check(load_spec(spec_path)).drift == []


def test_dry_run_prints_the_unit_and_changes_nothing(art, tmp_path):
    spec_path = write_spec(tmp_path, art, user="camera", group="video")
    r = edgesdk("provision", spec_path, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "units").exists() and not (tmp_path / "device").exists()
    out = r.stdout
    assert "Restart=on-failure" in out and "User=camera" in out and "Group=video" in out
    execs = [line for line in out.splitlines() if line.startswith("ExecStart=")]
    args = shlex.split(execs[0].split("=", 1)[1])
    stream = tmp_path / "device" / "ocr-cls" / "stream.yaml"
    assert args[1:] == ["-m", "edgesdk", "run", "--spec", str(stream), "--metrics-port", "9100"]
    # the stream spec the service runs, printed as it would be written (not written: dry run)
    assert not stream.exists() and f"# {stream}" in out and "would write stream spec" in out
    text = out.split(f"# {stream}\n", 1)[1]
    assert yaml.safe_load(text.split("\n# /", 1)[0]) == {
        "model": str(tmp_path / "device" / "ocr-cls" / "current" / "bundle"),
        "sources": ["rtsp://127.0.0.1:8554/live"], "batching": "adaptive", "batch": 4, "max_wait_ms": 20.0,
        "slo_ms": 50.0, "sinks": ["/var/lib/edgesdk/ocr.jsonl"]}
    # '+': status runs with full privileges, so the service user needs no write access to the root
    assert f"ExecStartPre=+{sys.executable} -m edgesdk status --root {tmp_path / 'device' / 'ocr-cls'}" in out
    assert "would install ocr-cls" in out and "would write unit" in out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(art, tmp_path):
    spec = load_spec(write_spec(tmp_path, art, user="root"))
    report = apply(spec, dry_run=True)
    path, content = next(iter(report.units.items()))
    unit = tmp_path / "edgesdk-ocr-cls.service"
    unit.write_text(content)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_exec_quote_round_trips_tricky_arguments():
    args = ["plain", "with space", 'say "hi"', "back\\slash", "50%", "$HOME", "", "rtsp://u:p@h/x?a=1&b=2"]
    line = " ".join(exec_quote(a) for a in args)
    assert "50%%" in line and "$$HOME" in line  # specifiers and variables cannot leak in
    # systemd unescapes %% and $$ before splitting; its quoting rules match the shell's for these
    assert shlex.split(line.replace("%%", "%").replace("$$", "$")) == args
    with pytest.raises(ConfigError, match="newline"):
        exec_quote("two\nlines")


def test_stale_units_are_removed_and_packages_from_urls(art, tmp_path):
    data = art.pkgs["1.0.0"].read_bytes()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "cls.edgepkg").write_bytes(data)
    requests = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path / "www"), **kw)

        def log_message(self, fmt, *args):
            requests.append(self.path)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/cls.edgepkg"
        run = {"sources": ["/dev/video0"]}
        two = [{"name": "a", "url": url, "sha256": hashlib.sha256(data).hexdigest(), "run": run},
               {"name": "b", "path": "cls-1.0.0.edgepkg", "run": run}]
        spec_path = write_spec(tmp_path, art, packages=two)
        first = apply(load_spec(spec_path), **QUIET)
        assert len([c for c in first.changes if "installed" in c]) == 2 and len(requests) == 1
        assert sorted(p.name for p in (tmp_path / "units").iterdir()) == ["edgesdk-a.service", "edgesdk-b.service"]
        assert apply(load_spec(spec_path), **QUIET).changes == [] and len(requests) == 1  # no download again

        (tmp_path / "units" / "other.service").write_text("[Unit]\n")  # not ours: left alone
        write_spec(tmp_path, art, packages=two[1:])
        report = apply(load_spec(spec_path), **QUIET)
        assert report.changes == [f"removed unit {tmp_path / 'units' / 'edgesdk-a.service'} (not in the spec any more)"]
        assert sorted(p.name for p in (tmp_path / "units").iterdir()) == ["edgesdk-b.service", "other.service"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_units_commands_run_the_installed_release(art, tmp_path):
    """ExecStartPre and ExecStart as systemd would run them: real text images through `current`."""
    import cv2

    from provisiondata import text_crop
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        cv2.imwrite(str(images / f"a-up{i}.png"), text_crop())
        cv2.imwrite(str(images / f"b-down{i}.png"), text_crop(rotated=True))
    out = tmp_path / "results.jsonl"
    pkg = [{"name": "ocr-cls", "path": "cls-1.0.0.edgepkg",
            "run": {"sources": [str(images)], "sinks": [str(out)], "batching": "none"}}]
    apply(load_spec(write_spec(tmp_path, art, packages=pkg)), **QUIET)
    unit = (tmp_path / "units" / "edgesdk-ocr-cls.service").read_text()
    commands = {k: shlex.split(v.lstrip("+").replace("%%", "%").replace("$$", "$"))
                for k, v in (line.split("=", 1) for line in unit.splitlines() if line.startswith("Exec"))}
    pre = subprocess.run(commands["ExecStartPre"], capture_output=True, text=True, cwd=tmp_path)
    assert pre.returncode == 0, pre.stderr
    run = subprocess.run(commands["ExecStart"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    import json
    labels = [json.loads(line)["topk"][0]["label"] for line in out.read_text().splitlines()]
    assert sorted(labels) == ["0", "0", "180", "180"]


def _run_section(tmp_path, sources, batching="none"):
    return [{"name": "ocr-cls", "path": "cls-1.0.0.edgepkg", "run": {"sources": sources, "batching": batching}}]


def test_provision_writes_the_stream_spec_the_service_runs_and_source_edits_need_no_restart(art, tmp_path):
    from edgesdk.streaming.spec import load_spec_file

    spec_path = write_spec(tmp_path, art, packages=_run_section(tmp_path, ["a=rtsp://10.0.0.1/a"]))
    report = apply(load_spec(spec_path), **QUIET)
    stream = tmp_path / "device" / "ocr-cls" / "stream.yaml"
    assert any(c.startswith(f"wrote stream spec {stream}") for c in report.changes)
    unit = (tmp_path / "units" / "edgesdk-ocr-cls.service").read_text()
    assert f"run --spec {stream}" in unit
    read = load_spec_file(stream)  # as `edgesdk run --spec` reads it
    assert read["sources"] == ["a=rtsp://10.0.0.1/a"] and read["batching"] == "none"
    assert read["model"] == str(tmp_path / "device" / "ocr-cls" / "current" / "bundle")
    assert check(load_spec(spec_path)).drift == []

    # a source added in the deployment spec: only the stream spec changes, no restart
    write_spec(tmp_path, art, packages=_run_section(tmp_path, ["a=rtsp://10.0.0.1/a", "b=rtsp://10.0.0.1/b"]))
    report = apply(load_spec(spec_path), **QUIET)
    assert report.changes == [f"wrote stream spec {stream} (the running service applies its sources without a "
                              "restart)"]
    assert load_spec_file(stream)["sources"] == ["a=rtsp://10.0.0.1/a", "b=rtsp://10.0.0.1/b"]
    # a batching change is not applied while running: the service restarts
    write_spec(tmp_path, art, packages=_run_section(tmp_path, ["a=rtsp://10.0.0.1/a"], batching="adaptive"))
    report = apply(load_spec(load_spec(spec_path).source), dry_run=True, **QUIET)
    assert report.changes == [f"would write stream spec {stream} (the service restarts)"]

    # edited on the device: it applies live there, `--check` calls it drift, provision puts the spec's back
    stream.write_text(stream.read_text().replace("rtsp://10.0.0.1/b", "rtsp://10.0.0.1/c"))
    write_spec(tmp_path, art, packages=_run_section(tmp_path, ["a=rtsp://10.0.0.1/a", "b=rtsp://10.0.0.1/b"]))
    assert check(load_spec(spec_path)).drift == [f"stream spec {stream} differs from the spec"]
    stream.unlink()
    assert check(load_spec(spec_path)).drift == [f"stream spec {stream} is missing"]
    apply(load_spec(spec_path), **QUIET)
    assert check(load_spec(spec_path)).drift == []


def test_a_running_service_follows_re_provisioned_sources_without_a_restart(art, tmp_path):
    """The provisioned stream spec run as the service runs it (`pipeline_from_file`, what
    `edgesdk run --spec` builds), real model and videos of real photos: a source added by
    re-provisioning starts, one removed ends, with no restart and the statistics kept."""
    import time

    from edgesdk.streaming.specwatch import pipeline_from_file
    from streamdata import make_video

    a = make_video(tmp_path / "a.mp4", (("astronaut", 6), ("coffee", 6)), fps=20.0).path
    b = make_video(tmp_path / "b.mp4", (("page", 6), ("camera", 6)), fps=20.0).path
    spec_path = write_spec(tmp_path, art, packages=_run_section(tmp_path, [f"a={a}"]))
    apply(load_spec(spec_path), **QUIET)
    stream = tmp_path / "device" / "ocr-cls" / "stream.yaml"
    pipe = pipeline_from_file(stream, loop=True, realtime=True).start()  # a file source, played like a camera

    def rows():
        return pipe.snapshot()["sources"]

    def wait_for(cond, timeout=10.0):
        end = time.time() + timeout
        while time.time() < end and not cond():
            time.sleep(0.05)
        return cond()

    try:
        assert wait_for(lambda: rows().get("a", {}).get("frames_out", 0) >= 5)
        write_spec(tmp_path, art, packages=_run_section(tmp_path, [f"b={b}"]))
        assert apply(load_spec(spec_path), **QUIET).changes == [
            f"wrote stream spec {stream} (the running service applies its sources without a restart)"]
        assert wait_for(lambda: rows().get("b", {}).get("frames_out", 0) >= 5)
        assert wait_for(lambda: rows()["a"]["state"] == "ended")
        assert pipe.running and pipe.snapshot()["gauges"]["spec"]["reloads"] >= 1
    finally:
        pipe.stop("test")
        pipe.wait(15)
    stats = pipe.report().stats["sources"]
    assert stats["a"]["frames_out"] >= 5 and stats["b"]["frames_out"] >= 5


def test_a_run_section_cascade_gate_and_replicas_reach_the_stream_spec(art, tmp_path):
    """The issue's cascade "in the provisioning spec": then: names another package of the spec
    (run from its installed bundle) or a bundle folder; gate and replicas pass through."""
    from edgesdk.streaming.spec import load_spec_file

    (tmp_path / "extra_bundle").mkdir()
    packages = [{"name": "ocr-cls", "path": "cls-1.0.0.edgepkg",
                 "run": {"sources": ["a=rtsp://10.0.0.1/a"], "then": ["ocr-cls2", "extra_bundle"], "gate": "change",
                         "gate_threshold": 0.05, "replicas": 2, "require_all_sources": True,
                         "reconnect_attempts": 10}},
                {"name": "ocr-cls2", "path": "cls-1.1.0.edgepkg"}]
    spec_path = write_spec(tmp_path, art, packages=packages)
    apply(load_spec(spec_path), **QUIET)
    read = load_spec_file(tmp_path / "device" / "ocr-cls" / "stream.yaml")
    assert read["then"] == [str(tmp_path / "device" / "ocr-cls2" / "current" / "bundle"),
                            str(tmp_path / "extra_bundle")]
    assert (read["gate"], read["gate_threshold"], read["replicas"]) == ("change", 0.05, 2)
    assert read["require_all_sources"] is True  # fail-fast, asked for; the service's default runs the others
    assert read["reconnect"] == {"attempts": 10}
