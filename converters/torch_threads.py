"""Keep torch's OpenMP threads from spin-waiting in training processes (distillation, QAT).

torch's CPU wheels run every operator's parallel region on GNU OpenMP, whose idle threads spin
(busy-wait, up to GOMP_SPINCOUNT iterations) between regions unless OMP_WAIT_POLICY=PASSIVE.
On a machine with other work (load above the core count) a spinning thread steals the core the
working one needs, and every one of the thousands of small regions of a training step waits for
a descheduled thread. Measured here (PP-OCRv4 rec, factorized, batch 8, torch 2.13, 2 cores,
load ~3): 7-27 s a step with 2 spinning threads, 1.5 s with 1 thread, 1.15 s with 2 passive
threads. libgomp reads the variable once, when torch loads it, so it is set before the first
`import torch` (converters/__init__ calls `passive_omp_wait`); a value the user set is kept.
"""
from __future__ import annotations

import os
import sys

_SET_BY_US = False


def passive_omp_wait() -> None:
    """OMP_WAIT_POLICY=PASSIVE for the rest of the process, unless set already or torch is loaded."""
    global _SET_BY_US
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    _SET_BY_US = True


def thread_note(threads: int) -> str:
    """One line for training output: torch's thread count and OpenMP wait policy, and what to do
    when the policy could not be set (torch was imported before EdgeSDK)."""
    policy = os.environ.get("OMP_WAIT_POLICY")
    if threads <= 1:
        return "torch on 1 thread"
    if policy is None:
        return (f"torch on {threads} threads with OpenMP spin-waiting (torch was imported before EdgeSDK could "
                "set OMP_WAIT_POLICY=PASSIVE): on a busy machine steps can be 10x slower; set "
                "OMP_WAIT_POLICY=PASSIVE before starting Python, or use 1 thread (--threads 1, threads=1)")
    source = "set by EdgeSDK" if _SET_BY_US else "from the environment"
    return f"torch on {threads} threads, OMP_WAIT_POLICY={policy} ({source})"
