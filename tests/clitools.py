"""Helpers for tests that drive the `edgesdk` CLI in-process (exit code, stdout, stderr)."""
from __future__ import annotations

import pytest

from edgesdk.cli import main


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def convert_args(model, out, calib, *extra: str) -> list[str]:
    """A quick fp32 onnxruntime conversion for this host's profile."""
    return ["convert", str(model), "-p", "amd-epyc-zen4", "--precision", "fp32", "--backend", "onnxruntime",
            "--calib", str(calib), "-o", str(out), "-q", *extra]
