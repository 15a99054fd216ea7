"""Spec numbers must be finite and in range; units are escaped per systemd's rules and parsed back.

The parser here follows systemd.syntax(7) and systemd.service(5): lines, sections, comments;
words split with double/single quotes and C-style backslash escapes; then `%%` -> `%`
(specifiers) and, in Exec lines only, `$$` -> `$` (variables). A lone `%` or `$` left after
escaping would be expanded by systemd, so the parser refuses it.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import yaml

from edgesdk.errors import ConfigError
from edgesdk.provision.spec import load_spec
from edgesdk.provision.streamspec import render_stream_spec
from edgesdk.provision.systemd import render_unit, run_args
from edgesdk.streaming.spec import load_spec_file
from provisiondata import art, edgesdk  # noqa: F401 (art: fixture)

_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", ";": ";", " ": " "}


def split_words(value: str) -> list[str]:
    words, i, n = [], 0, len(value)
    while i < n:
        while i < n and value[i] in " \t":
            i += 1
        if i >= n:
            break
        word, quote = [], None
        while i < n and (quote or value[i] not in " \t"):
            c = value[i]
            if c == "\\":
                word.append(_ESCAPES[value[i + 1]])
                i += 2
            elif quote and c == quote:
                quote, i = None, i + 1
            elif not quote and c in "\"'":
                quote, i = c, i + 1
            else:
                word.append(c)
                i += 1
        assert quote is None, f"unterminated quote in {value!r}"
        words.append("".join(word))
    return words


def unexpand(word: str, dollar: bool) -> str:
    specials = "%$" if dollar else "%"
    out = re.sub(f"([{re.escape(specials)}])(.?)", lambda m: m.group(1) if m.group(2) == m.group(1) else
                 pytest.fail(f"{m.group(0)!r} in {word!r} would be expanded by systemd"), word)
    return out


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        assert not line.endswith("\\"), f"continuation line {line!r}"
        if not line.strip() or line.lstrip().startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            assert current not in sections, f"section {current} twice"
            sections[current] = []
            continue
        key, sep, value = line.partition("=")
        assert sep and current, f"not a key=value line: {line!r}"
        sections[current].append((key, value))
    return sections


def exec_words(value: str) -> tuple[str, list[str]]:
    prefix = re.match(r"[@\-:+!|]*", value).group(0)
    return prefix, [unexpand(w, dollar=True) for w in split_words(value[len(prefix):])]


HOSTILE = {
    "sources": ["rtsp://u:p@h/x?a=1&b=$HOME", "/data/50% done/*.png", "a b\"c'd", "back\\slash", ";", "-leading"],
    "sinks": ["/var/lib/edgesdk/${USER}.jsonl", "mqtt://h:1883/t%h"],
    "args": ["--report", "/var/lib/$(reboot)/`id`.json", "--control=9"],
    "environment": {"A": "$HOME and ${PATH}", "B": "100%", "C": 'quote " and \\ backslash', "D": "x'y"},
}


def _spec(tmp_path, art, folder="spec", run=None, **top):
    d = tmp_path / folder
    d.mkdir(parents=True)
    spec = {"root": str(tmp_path / "de vice $x %i"), "trusted_keys": str(art.trusted), "user": "root",
            "systemd": {"unit_dir": str(tmp_path / "units"), "manage": False},
            "packages": [{"name": "ocr-cls", "path": str(art.pkgs["1.0.0"]),
                          "run": run or {"batching": "adaptive", "batch": 4, "max_wait_ms": 20.5, "slo_ms": 50,
                                         **HOSTILE}}], **top}
    (d / "spec.yaml").write_text(yaml.safe_dump(spec))
    return d / "spec.yaml"


def test_unit_parses_back_to_every_field(art, tmp_path):
    spec = load_spec(_spec(tmp_path, art, group="video"))
    pkg = spec.packages[0]
    unit = parse_unit(render_unit(spec, pkg))
    assert list(unit) == ["Unit", "Service", "Install"]
    service = dict(unit["Service"][:3])
    assert service == {"Type": "simple", "User": "root", "Group": "video"}
    env = [split_words(v) for k, v in unit["Service"] if k == "Environment"]
    assert all(len(w) == 1 for w in env)
    assert dict(unexpand(w[0], dollar=False).split("=", 1) for w in env) == HOSTILE["environment"]
    execs = {k: exec_words(v) for k, v in unit["Service"] if k.startswith("Exec")}
    assert execs["ExecStart"] == ("", run_args(spec, pkg))
    assert run_args(spec, pkg)[-len(HOSTILE["args"]):] == HOSTILE["args"]
    # sources and sinks live in the stream spec the service runs: they read back exactly from it
    stream = parse_stream(render_stream_spec(spec, pkg), tmp_path)
    assert stream["sources"] == HOSTILE["sources"] and stream["sinks"] == HOSTILE["sinks"]
    assert execs["ExecStartPre"] == ("+", [*spec.edgesdk, "status", "--root", str(spec.package_root(pkg))])
    assert [k for k, _ in unit["Service"]].count("ExecStartPre") == 1
    assert dict(unit["Install"]) == {"WantedBy": "multi-user.target"}


#: hostile sources that name no relative path: a spec folder a unit cannot hold is no WorkingDirectory
ABSOLUTE_SOURCES = [s for s in HOSTILE["sources"] if s.startswith("/") or "://" in s]
INJECT = "x\n[Service]\nExecStartPre=/bin/touch /tmp/pwned\n#"


def test_a_newline_in_the_spec_path_cannot_inject_lines(art, tmp_path):
    path = _spec(tmp_path, art, folder=INJECT, run={**HOSTILE, "sources": ABSOLUTE_SOURCES})
    spec = load_spec(path)
    text = render_unit(spec, spec.packages[0])
    unit = parse_unit(text)
    assert [k for k, _ in unit["Service"]].count("ExecStartPre") == 1 and list(unit) == ["Unit", "Service", "Install"]
    assert "/bin/touch" not in "".join(v for _, v in unit["Service"])
    assert "WorkingDirectory" not in dict(unit["Service"])  # the folder cannot be one, and no path needs it
    # nor into the stream spec: the path is in its first comment, which stays one comment line
    stream = render_stream_spec(spec, spec.packages[0])
    assert stream.splitlines()[0].startswith("# Written by") and "\nExecStartPre" not in stream
    assert parse_stream(stream, tmp_path)["sources"] == ABSOLUTE_SOURCES


def test_relative_sources_run_in_the_spec_folder_or_are_refused(art, tmp_path):
    """The unit had no WorkingDirectory: `clips/door.mp4` and `out/{source}.jsonl` resolved against /.
    They stay verbatim in the stream spec and the service runs in the spec's folder."""
    run = {"sources": ["door=clips/door.mp4", "file://clips/b.mp4", "0", "rtsp://h/x"], "sinks": ["out/{source}.jsonl"]}
    spec = load_spec(_spec(tmp_path, art, folder="50% of specs", run=run))
    unit = dict(parse_unit(render_unit(spec, spec.packages[0]))["Service"])
    assert unexpand(unit["WorkingDirectory"], dollar=False) == str(tmp_path / "50% of specs")
    assert parse_stream(render_stream_spec(spec, spec.packages[0]), tmp_path)["sources"] == run["sources"]
    # absolute paths and URLs only: no WorkingDirectory (a spec the service user cannot enter still works)
    spec = load_spec(_spec(tmp_path / "abs", art, run={"sources": ["/abs.mp4", "rtsp://h/x", "1"],
                                                        "sinks": ["/o.jsonl", "mqtt://h/t", "window"]}))
    assert "WorkingDirectory" not in dict(parse_unit(render_unit(spec, spec.packages[0]))["Service"])
    # a folder a unit cannot hold: a relative path is refused naming it, not resolved against /
    spec = load_spec(_spec(tmp_path, art, folder=INJECT, run=run))
    with pytest.raises(ConfigError, match=r"run.sources\[0\] 'door=clips/door.mp4' is a relative path.*absolute"):
        render_unit(spec, spec.packages[0])
    spec = load_spec(_spec(tmp_path / "2", art, folder=INJECT, run={"sources": ["/abs.mp4"], "sinks": ["o.jsonl"]}))
    with pytest.raises(ConfigError, match=r"run.sinks\[0\] 'o.jsonl' is a relative path"):
        render_unit(spec, spec.packages[0])


def parse_stream(text: str, folder) -> dict:
    """A stream spec as `edgesdk run --spec` reads it."""
    path = folder / "stream.yaml"
    path.write_text(text)
    return load_spec_file(path)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_hostile_unit_passes_systemd_analyze_verify(art, tmp_path):
    spec = load_spec(_spec(tmp_path, art, folder="spec 50% $x"))  # the folder is the WorkingDirectory
    unit = tmp_path / "edgesdk-ocr-cls.service"
    unit.write_text(render_unit(spec, spec.packages[0]))
    assert "WorkingDirectory=" in unit.read_text()
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("top, message", [
    ({"root": "/var/lib/a\nExecStartPre=/bin/evil"}, "root: must be one line without control characters"),
    ({"edgesdk": ["-/usr/bin/edgesdk"]}, "systemd reads a leading"),
    ({"edgesdk": ["/usr/bin/edge\tsdk"]}, "edgesdk: must list one-line strings"),
])
def test_unrepresentable_values_are_refused(art, tmp_path, top, message):
    path = _spec(tmp_path, art, **top)
    with pytest.raises(ConfigError, match=message):
        spec = load_spec(path)
        render_unit(spec, spec.packages[0])


@pytest.mark.parametrize("text, message", [
    ("max_wait_ms: .inf", "max_wait_ms: must be a finite number"),
    ("max_wait_ms: -.inf", "max_wait_ms: must be a finite number"),
    ("slo_ms: .nan", "slo_ms: must be a finite number"),
    ("slo_ms: 0", "slo_ms: must be > 0"),
    ("max_wait_ms: 1.0e+12", "max_wait_ms: must be >= 0 and <= 60000"),
    ("batch: 100000000", "batch: must be <= 4096"),
])
def test_spec_numbers_must_be_finite_and_in_range(art, tmp_path, text, message):
    path = tmp_path / "spec.yaml"
    path.write_text(f"""root: {tmp_path / 'device'}
trusted_keys: {art.trusted}
systemd: {{unit_dir: {tmp_path / 'units'}, manage: false}}
packages:
  - name: ocr-cls
    path: {art.pkgs['1.0.0']}
    run:
      sources: [rtsp://127.0.0.1:8554/live]
      batching: adaptive
      {text}
""")
    with pytest.raises(ConfigError, match=rf"packages\[0\]\.run\.{message}"):
        load_spec(path)
    r = edgesdk("provision", path, "--dry-run")
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [("--rtol", "nan"), ("--atol", "inf"), ("--rtol", "-1")])
def test_pack_tolerances_must_be_finite(art, tmp_path, args):
    r = edgesdk("pack", art.bundle, "-o", tmp_path / "x.edgepkg", "--version", "1.0.0", "--key",
                art.signer.private_path, *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr and not (tmp_path / "x.edgepkg").exists()


def test_lock_timeout_must_be_finite(art, tmp_path):
    r = edgesdk("install", art.pkgs["1.0.0"], "--root", tmp_path / "r", "--trusted-keys", art.trusted,
                "--lock-timeout", "nan")
    assert r.returncode == 2 and "finite" in r.stderr
    assert sys.executable  # the CLI ran under this interpreter


def test_the_args_provision_allows_are_the_options_run_takes_with_spec():
    """run.args is checked at provision time against what `edgesdk run --spec` accepts."""
    from edgesdk.cli.run import SPEC_OVERRIDES, run
    from edgesdk.provision.spec import ARGS_WITH_SPEC

    taken = {opt for p in run.params if p.name in SPEC_OVERRIDES and p.name not in ("spec_path", "bundle")
             for opt in p.opts + p.secondary_opts}
    assert set(ARGS_WITH_SPEC) == taken
