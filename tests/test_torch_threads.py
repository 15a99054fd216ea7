"""Training processes keep torch's OpenMP threads from spin-waiting (converters/torch_threads.py):
importing `converters` before torch sets OMP_WAIT_POLICY=PASSIVE, a user's value is kept, and
when torch came first the training output says so and names the way out."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CODE = ("import json, os, sys; {first}; from converters.torch_threads import thread_note; "
        "print(json.dumps([os.environ.get('OMP_WAIT_POLICY'), thread_note(2), thread_note(1)]))")


def _run(first: str, policy=None) -> list:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    proc = subprocess.run([sys.executable, "-c", CODE.format(first=first)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_converters_first_makes_omp_threads_wait_passively():
    pytest.importorskip("torch")
    policy, note, one = _run("import converters, torch")
    assert policy == "PASSIVE"
    assert "OMP_WAIT_POLICY=PASSIVE (set by EdgeSDK)" in note
    assert one == "torch on 1 thread"


def test_a_policy_the_user_set_is_kept():
    policy, note, _ = _run("import converters", policy="ACTIVE")
    assert policy == "ACTIVE" and "from the environment" in note


def test_torch_imported_first_is_reported_with_the_way_out():
    pytest.importorskip("torch")
    policy, note, _ = _run("import torch, converters")
    assert policy is None
    assert "spin-waiting" in note and "OMP_WAIT_POLICY=PASSIVE" in note and "--threads 1" in note
