"""`edgesdk run` options: every number finite and in range, one-line errors with non-zero
exits, help made from the source/sink tables, exit codes for sources and sinks that fail."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgesdk.sinks import SINK_KINDS
from edgesdk.streaming.sources import SOURCE_KINDS
from streamdata import make_video

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "edgesdk", "run", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, model_paths) -> Path:
    from edgesdk.presets import make_bundle
    return make_bundle(model_paths["blazeface_short.tflite"], tmp_path_factory.mktemp("cli_run") / "bf").path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("cli_clip") / "clip.mp4", fps=15.0)


@pytest.mark.parametrize("args, match", [
    (["--batching", "fixed", "--batch", "2", "--max-wait-ms", "inf"], "'--max-wait-ms': 'inf' is not a finite"),
    (["--batching", "adaptive", "--slo-ms", "nan"], "'--slo-ms': 'nan' is not a finite"),
    (["--batching", "adaptive", "--slo-ms", "0"], "'--slo-ms': '0' is out of range: it must be > 0"),
    (["--duration", "inf"], "'--duration': 'inf' is not a finite"),
    (["--gate", "change", "--gate-threshold", "1.5"], "'--gate-threshold': '1.5' is out of range"),
    (["--gate", "change", "--gate-threshold", "-0.1"], "'--gate-threshold': '-0.1' is out of range"),
    (["--gate", "change", "--gate-max-age-s", "nan"], "'--gate-max-age-s': 'nan' is not a finite"),
    (["--weight", "clip=0"], "--weight: 'clip=0': '0' is out of range: it must be > 0"),
    (["--weight", "clip=inf"], "--weight: 'clip=inf'.*not a finite"),
    (["--weight", "clip"], "write NAME=WEIGHT"),
])
def test_bad_numbers_are_one_line_errors_with_exit_2(bundle, clip, args, match):
    proc = _run(str(bundle), "--source", f"clip={clip.path}", *args)
    assert proc.returncode == 2, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert len(err) == 1 and pytest.importorskip("re").search(match, err[0]), proc.stderr
    assert "Traceback" not in proc.stderr


def test_weight_for_a_source_that_is_not_there(bundle, clip):
    proc = _run(str(bundle), "--source", f"clip={clip.path}", "--weight", "door=2")
    assert proc.returncode == 2 and "weight given for unknown source(s) door" in proc.stderr


def test_a_folder_without_images_exits_non_zero(bundle, tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    proc = _run(str(bundle), "--source", str(tmp_path))
    assert proc.returncode == 9 and "no images" in proc.stderr and "Traceback" not in proc.stderr


def test_results_of_a_folder_say_which_image_they_are_about(bundle, tmp_path, photos):
    """BlazeFace over real photos in a folder: each JSONL line names its file, and the faces land on the
    photos that have one."""
    import cv2

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "coffee", "rocket"):
        cv2.imwrite(str(folder / f"{name}.png"), photos[name])
    out = tmp_path / "out.jsonl"
    proc = _run(str(bundle), "--source", str(folder), "--sink", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    found = {Path(r["meta"]["path"]).name: len(r["detections"]) for r in lines}
    assert set(found) == {"astronaut.png", "coffee.png", "rocket.png"}
    assert found["astronaut.png"] >= 1 and found["coffee.png"] == 0


def test_a_video_writer_that_cannot_open_exits_non_zero_and_leaves_nothing(bundle, clip, tmp_path):
    out = tmp_path / "out.mp4"
    proc = _run(str(bundle), "--source", str(clip.path), "--sink", f"{out}?fourcc=ZZZZ",
                "--report", str(tmp_path / "r.json"))
    assert proc.returncode == 10, proc.stderr
    assert "could not open a 'ZZZZ' writer" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    assert json.loads((tmp_path / "r.json").read_text())["sink_errors"]


def test_help_lists_every_source_and_sink_form_from_the_tables():
    import click

    from edgesdk.cli.run import run as command
    text = " ".join(command.get_help(click.Context(command, terminal_width=1000, max_content_width=1000)).split())
    for kind in SOURCE_KINDS:
        assert kind.form in text
    for kind in SINK_KINDS:
        if kind.listed:
            assert kind.form in text
    assert "prometheus://[USER:PW@]HOST:PORT" in text and "mqtts://" in text


def test_gated_run_reports_cached_results_states_and_video_at_source_rate(bundle, clip, tmp_path):
    import cv2
    report, video = tmp_path / "r.json", tmp_path / "annotated.avi"
    proc = _run(str(bundle), "--source", f"clip={clip.path}", "--gate", "change", "--sink", str(video),
                "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(report.read_text())["stats"]
    row = stats["sources"]["clip"]
    assert row["frames_out"] == len(clip) and row["cached"] == stats["cached"] > 0
    assert row["state"] == "ended"
    cap = cv2.VideoCapture(str(video))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15.0, abs=0.01)
    cap.release()


def test_then_cascade_from_the_cli_and_its_bad_input(bundle, clip, tmp_path, model_paths):
    from edgesdk.presets import make_bundle
    marks = make_bundle(model_paths["face_landmark.tflite"], tmp_path / "lm").path
    out = tmp_path / "faces.jsonl"
    proc = _run(str(bundle), "--source", str(clip.path), "--then", str(marks), "--sink", str(out))
    assert proc.returncode == 0, proc.stderr
    dets = [d for line in out.read_text().splitlines() for d in json.loads(line)["detections"]]
    assert dets and all("face_landmark" in d["then"] for d in dets)
    cls = make_bundle(model_paths["ppocr_cls.onnx"], tmp_path / "cls").path
    proc = _run(str(cls), "--source", str(clip.path), "--then", str(marks))
    assert proc.returncode == 2 and "needs a first bundle that detects" in proc.stderr
    assert "Traceback" not in proc.stderr


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_a_dead_camera_fails_alone_the_file_runs_and_the_exit_code_says_so(bundle, clip, tmp_path):
    """Eight cameras under systemd: one that cannot connect must not stop the seven others. It
    ends as failed with its reason (report, table), the file runs to its end, exit 9 names it."""
    door = f"rtsp://127.0.0.1:{_closed_port()}/live"
    out, report = tmp_path / "out", tmp_path / "r.json"
    proc = _run(str(bundle), "--source", f"clip={clip.path}", "--source", f"door={door}",
                "--sink", f"{out}/{{source}}.jsonl", "--report", str(report))
    assert proc.returncode == 9, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 2 source(s) failed (door), the others ran:") and "never connected" in last
    rep = json.loads(report.read_text())
    assert list(rep["failed_sources"]) == ["door"] and "cannot open stream" in rep["failed_sources"]["door"]
    assert rep["stats"]["sources"]["clip"]["frames_out"] == len(clip)
    assert rep["stats"]["sources"]["door"]["state"] == "failed"
    assert "| door | 0 | 0 |" in proc.stdout and "failed" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["clip.jsonl"]  # nothing empty for the dead one
    assert len((out / "clip.jsonl").read_text().splitlines()) == len(clip)


def test_require_all_sources_stops_at_the_start_and_writes_nothing(bundle, clip, tmp_path):
    door = f"rtsp://127.0.0.1:{_closed_port()}/live"
    proc = _run(str(bundle), "--source", f"clip={clip.path}", "--source", f"door={door}",
                "--sink", str(tmp_path / "all.jsonl"), "--require-all-sources")
    assert proc.returncode == 9 and "Traceback" not in proc.stderr
    assert "cannot open stream" in proc.stderr.strip().splitlines()[-1] and "(door)" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_no_source_that_opens_is_one_clear_error(bundle, tmp_path):
    (tmp_path / "empty").mkdir()
    door = f"rtsp://127.0.0.1:{_closed_port()}/live"
    proc = _run(str(bundle), "--source", f"door={door}", "--source", str(tmp_path / "empty"),
                "--sink", str(tmp_path / "all.jsonl"))
    assert proc.returncode == 9 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "none of the 2 sources could be opened" in last and "no images" in last
    assert not (tmp_path / "all.jsonl").exists()


def test_reconnect_attempts_make_a_dead_camera_fail_while_the_others_go_on(bundle, clip, tmp_path):
    door = f"rtsp://127.0.0.1:{_closed_port()}/live"
    report = tmp_path / "r.json"
    proc = _run(str(bundle), "--source", f"clip={clip.path}", "--source", f"door={door}", "--realtime", "--loop",
                "--duration", "4", "--reconnect-attempts", "1", "--report", str(report))
    assert proc.returncode == 9 and "Traceback" not in proc.stderr
    rep = json.loads(report.read_text())
    assert rep["stop_reason"] == "duration 4 s"  # the clip played on after the camera gave up
    assert "never connected after 1 reconnect attempts" in rep["failed_sources"]["door"]
    assert rep["stats"]["sources"]["clip"]["frames_out"] > len(clip)  # looped
