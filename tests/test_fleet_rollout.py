"""Rollout specs: the canary cohort first, the next cohort only when the one before is healthy."""
from __future__ import annotations

import pytest

from edgesdk.errors import ConfigError
from edgesdk.fleet.rollout import Rollout, load_rollout, parse_rollout

SPEC = {"release": "oci://127.0.0.1:5000/edge/cls:1.1.0", "canary": {"frames": 20, "threshold": 0.9},
        "cohorts": [{"name": "canary", "devices": ["a", "b"]},
                    {"name": "rest", "devices": ["c", "d", "e", "f"], "min_healthy": 0.75}]}


def test_healthy_cohorts_proceed_to_done():
    r = Rollout(parse_rollout(SPEC))
    assert r.targets() == ["a", "b"] and r.is_canary
    r.record("a", True)
    assert r.advance() == "wait"
    r.record("b", True)
    assert r.advance() == "next" and r.targets() == ["c", "d", "e", "f"] and not r.is_canary
    for d, ok in zip("cdef", (True, True, True, False)):  # 3 of 4 meets min_healthy 0.75
        r.record(d, ok)
    assert r.advance() == "done" and r.targets() == []


def test_an_unhealthy_canary_halts_and_the_release_goes_no_further():
    r = Rollout(parse_rollout(SPEC))
    r.record("a", False)
    r.record("b", True)
    r.record("c", True)  # not in the running cohort: ignored
    assert r.advance() == "halted" and r.targets() == [] and r.reached() == ["a", "b"]
    assert r.history[-1]["share"] == 0.5


def test_devices_that_never_report_count_as_unhealthy():
    now = [0.0]
    r = Rollout(parse_rollout({**SPEC, "timeout_s": 10}), clock=lambda: now[0])
    r.record("a", True)
    assert r.advance() == "wait"
    now[0] = 11.0
    assert r.advance() == "halted" and r.history[-1]["timed_out"]


@pytest.mark.parametrize("change, problem", [
    ({"cohorts": []}, "at least one cohort"),
    ({"cohorts": [{"name": "x", "devices": ["a"]}, {"name": "y", "devices": ["a"]}]}, "one cohort each"),
    ({"cohorts": [{"name": "x", "devices": ["a"], "min_healthy": 0}]}, "min_healthy"),
    ({"release": "oci://h/Bad:tag"}, "repository"),
    ({"canary": {"frames": 0}}, "frames >= 1"),
    ({"canary": {"speed": 1}}, "known: frames"),
    ({"extra": 1}, "unknown key"),
])
def test_bad_specs_say_what_is_wrong(change, problem):
    with pytest.raises(ConfigError, match=problem):
        parse_rollout({**SPEC, **change})


def test_load_from_yaml(tmp_path):
    p = tmp_path / "rollout.yaml"
    p.write_text("release: oci://127.0.0.1:5000/edge/cls:1.1.0\ncohorts:\n  - {name: canary, devices: [a]}\n")
    assert load_rollout(p).cohorts[0].devices == ["a"]  # syntax errors: tests/test_yamlfile.py
