"""read_yaml: one ConfigError line naming the file (and line/column of a syntax error),
for each of its callers: the stream spec (`edgesdk run --spec`), the deployment spec
(`edgesdk provision`), a device profile (ProfileError, exit code 6) and a rollout spec."""
from __future__ import annotations

import pytest

from edgesdk.errors import ConfigError, ProfileError
from edgesdk.fleet.rollout import load_rollout
from edgesdk.profiles import load_profile
from edgesdk.provision.spec import load_spec
from edgesdk.streaming.spec import load_spec_file
from edgesdk.yamlfile import read_yaml

LOADERS = [(load_spec_file, "the stream spec"), (load_spec, "deployment spec"),
           (load_profile, "the device profile"), (load_rollout, "the rollout spec")]
#: the error each caller raises (a profile's has its own exit code)
ERRORS = {load_profile: ProfileError}


def test_read_yaml_reads_yaml_and_json(tmp_path):
    (tmp_path / "a.yaml").write_text("model: m\nsources: [a, b]\n")
    (tmp_path / "b.json").write_text('{"model": "m", "n": 2}')
    assert read_yaml(tmp_path / "a.yaml", "x") == {"model": "m", "sources": ["a", "b"]}
    assert read_yaml(tmp_path / "b.json", "x") == {"model": "m", "n": 2}


@pytest.mark.parametrize("load, what", LOADERS)
def test_syntax_error_names_the_file_line_and_column(tmp_path, load, what):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\nsources: [a, b\nsinks: []\n")  # the list on line 2 is never closed
    with pytest.raises(ERRORS.get(load, ConfigError)) as err:
        load(bad)
    msg = str(err.value)
    assert msg.startswith(f"{what} {bad} is not valid YAML/JSON (line ") and "column" in msg, msg
    assert "fix the file" in msg and "\n" not in msg


def test_the_reported_line_and_column_are_where_the_problem_is(tmp_path):
    bad = tmp_path / "tab.yaml"
    bad.write_text("model: x\nsources:\n\t- a\n")  # a tab indent: YAML forbids it on line 3
    with pytest.raises(ConfigError, match=r"\(line 3, column 1\)"):
        read_yaml(bad, "the stream spec")


# a missing profile path is refused earlier, naming `edgesdk profiles list` (tests/test_profiles.py)
@pytest.mark.parametrize("load, what", [(load, what) for load, what in LOADERS if load is not load_profile])
def test_unreadable_file_is_one_line_naming_it(tmp_path, load, what):
    with pytest.raises(ERRORS.get(load, ConfigError), match=f"cannot read {what} .*missing.yaml: No such file or directory"):
        load(tmp_path / "missing.yaml")
    folder = tmp_path / "adir.yaml"
    folder.mkdir()
    with pytest.raises(ERRORS.get(load, ConfigError), match=f"cannot read {what} .*adir.yaml: Is a directory"):
        load(folder)


@pytest.mark.parametrize("load, what", LOADERS)
def test_a_file_that_is_not_utf8_is_named(tmp_path, load, what):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("model: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ERRORS.get(load, ConfigError), match=f"{what} .*latin1.yaml is not UTF-8 text"):
        load(bad)
