"""kill -9 at random moments of a real install: the device always ends on a complete, healthy release.

Until 50 runs were killed mid-install, each run copies a root holding release 1.0.0, starts a real
install of 1.1.0 in a child process (forked from a server that imported everything once), and
SIGKILLs it after a random delay drawn over the install's measured duration. EDGESDK_TEST_STEP_DELAY adds a small sleep at each step so
the kills spread over all of them. Then `status` (the CLI for every 5th run) must show a complete,
healthy current release, old or new, the model must classify real text correctly, and the next
install must finish the job.
"""
from __future__ import annotations

import json
import random
import shutil
from collections import Counter

import pytest

from edgesdk.errors import PackageError
from edgesdk.provision.install import install, release_problems, status
from edgesdk.provision.store import Store
from edgesdk.provision.verify import verify_package
from provisiondata import QUIET, FaultServer, art, classify, edgesdk, text_crop  # noqa: F401 (art: fixture)

KILLS = 50  # runs killed mid-install (a random delay may also land after the end: those run on top)
MAX_RUNS = 80
FRESH_RUNS = 8
STEP_DELAY = 0.01



@pytest.fixture(scope="module")
def server():
    s = FaultServer()
    yield s
    s.close()


def last_step(log) -> str:
    if not log.exists():
        return "(before start)"
    steps = [line.split("step: ", 1)[1].strip() for line in log.read_text().splitlines() if "step: " in line]
    if not steps:
        return "(before the lock)"
    return "extract" if steps[-1].startswith("extract") else steps[-1]


def cli_status(root) -> dict:
    return json.loads(edgesdk("status", "--root", root, "--json").stdout)


def assert_model_runs(root):
    bundle = root / "current" / "bundle"
    assert classify(bundle, text_crop())[0] == "0"
    assert classify(bundle, text_crop(rotated=True))[0] == "180"


def test_kill_9_during_upgrade_leaves_old_or_new_complete_and_healthy(art, server, tmp_path):
    template = tmp_path / "template"
    old = install(art.pkgs["1.0.0"], template, art.trusted, **QUIET).release
    new = verify_package(art.pkgs["1.1.0"], art.trusted).release_name
    request = dict(package=art.pkgs["1.1.0"], trusted=art.trusted, step_delay=STEP_DELAY)

    durations = []
    for i in range(2):  # how long an install runs when nobody kills it
        root = tmp_path / f"whole{i}"
        shutil.copytree(template, root, symlinks=True)
        res = server.run(root=root, delay=120, log=tmp_path / f"whole{i}.log", **request)
        assert not res["killed"] and res["status"] == 0, (tmp_path / f"whole{i}.log").read_text()
        durations.append(res["seconds"])
    window = max(durations)

    rng = random.Random(20240611)
    outcomes, steps, killed, i = Counter(), Counter(), 0, -1
    while killed < KILLS and i + 1 < MAX_RUNS:
        i += 1
        root, log = tmp_path / f"run{i}", tmp_path / f"run{i}.log"
        shutil.copytree(template, root, symlinks=True)
        res = server.run(root=root, delay=rng.uniform(0.0, window), log=log, **request)
        killed += res["killed"]
        step = last_step(log) if res["killed"] else "(finished)"
        st = cli_status(root) if i % 5 == 0 else status(root, **QUIET)
        cur = st["current"]
        assert st["ok"], f"run {i} killed after step {step!r}: {st}"
        assert cur["release"] in (old, new) and cur["complete"] and cur["healthy"] and not cur["problems"]
        store = Store(root)
        assert store.pending() is None and list(store.staging.iterdir()) == []
        assert set(store.release_names()) <= {old, new}
        assert_model_runs(root)
        outcomes[cur["version"]] += 1
        steps[(step, cur["version"])] += 1
        if i % 10 == 9:  # the next install completes what the killed one started
            r = install(art.pkgs["1.1.0"], root, art.trusted, **QUIET)
            assert r.release == new and status(root, **QUIET)["current"]["release"] == new
        shutil.rmtree(root)

    print(f"\nfault test: {i + 1} runs over a {window:.2f} s install, {killed} killed mid-install; "
          f"ended on 1.0.0: {outcomes['1.0.0']}, on 1.1.0: {outcomes['1.1.0']}")
    for (step, version), n in sorted(steps.items()):
        print(f"  killed after step {step:<18} -> {version}: {n}")
    assert killed >= KILLS
    assert outcomes["1.0.0"] > 0 and outcomes["1.1.0"] > 0  # kills landed before and after the switch
    assert len({s for s, _ in steps}) >= 6  # and spread over the steps


def test_kill_9_during_first_install_leaves_nothing_or_a_healthy_release(art, server, tmp_path):
    rng = random.Random(7)
    request = dict(package=art.pkgs["1.1.0"], trusted=art.trusted, step_delay=STEP_DELAY)
    res = server.run(root=tmp_path / "whole", delay=120, log=tmp_path / "whole.log", **request)
    assert res["status"] == 0
    seen = Counter()
    for i in range(FRESH_RUNS):
        root = tmp_path / f"fresh{i}"
        server.run(root=root, delay=rng.uniform(0.0, res["seconds"]), log=tmp_path / f"fresh{i}.log", **request)
        try:
            st = status(root, **QUIET)
        except PackageError:  # killed before the root was even marked as ours
            seen["no root"] += 1
            continue
        assert st["pending"] is None
        if st["current"] is None:
            seen["empty"] += 1
            # a release renamed into place but never switched to may stay (complete) until pruned
            assert all(not release_problems(Store(root), n) for n in Store(root).release_names())
        else:
            assert st["ok"] and st["current"]["version"] == "1.1.0"
            assert_model_runs(root)
            seen["installed"] += 1
        assert list(Store(root).staging.iterdir()) == []
    print(f"\nfirst-install kills: {dict(seen)}")


def test_kill_9_of_the_cli_installer(art, tmp_path):
    """The same through `python -m edgesdk install` itself (fewer runs: each pays Python's start-up)."""
    import os
    import subprocess
    import sys
    import time

    from provisiondata import ROOT
    template = tmp_path / "template"
    old = install(art.pkgs["1.0.0"], template, art.trusted, **QUIET).release
    new = verify_package(art.pkgs["1.1.0"], art.trusted).release_name
    cmd = [sys.executable, "-m", "edgesdk", "install", str(art.pkgs["1.1.0"]), "--trusted-keys", str(art.trusted)]
    env = dict(os.environ, EDGESDK_TEST_STEP_DELAY=str(STEP_DELAY))
    t0 = time.monotonic()
    whole = subprocess.run(cmd + ["--root", str(shutil.copytree(template, tmp_path / "whole", symlinks=True))],
                           env=env, cwd=ROOT, capture_output=True)
    duration = time.monotonic() - t0
    assert whole.returncode == 0
    rng = random.Random(3)
    ended = Counter()
    for i in range(6):
        root = shutil.copytree(template, tmp_path / f"cli{i}", symlinks=True)
        proc = subprocess.Popen(cmd + ["--root", str(root)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.0) * duration)  # past start-up, into the install itself
        proc.kill()
        proc.wait()
        st = cli_status(root)
        assert st["ok"] and st["current"]["release"] in (old, new)
        assert_model_runs(root)
        ended[st["current"]["version"]] += 1
    print(f"\nCLI kills: ended on {dict(ended)}")
