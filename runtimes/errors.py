"""Errors every EdgeSDK layer raises.

They live in `runtimes` because it is the bottom layer and imports nothing of ours;
`edgesdk.errors` re-exports them and adds the higher-level ones. Messages say what
was wrong, what was expected, and what to do.
"""
from __future__ import annotations


def first_line(exc: BaseException, limit: int = 300, skip: tuple[str, ...] = ()) -> str:
    """An engine's or library's exception as one line for a message: its first non-blank line
    (cut at `limit`), or the exception's type name when it says nothing. Lines starting with one of
    `skip` (OpenVINO's "Exception from <file>:<line>" / "Check '<cond>'" trace lines) are passed
    over unless nothing else is left."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if skip:
        lines = [ln for ln in lines if not ln.startswith(skip)] or lines
    return lines[0][:limit] if lines else type(exc).__name__


class EdgeSDKError(Exception):
    """Base of every error EdgeSDK raises on purpose."""

    #: process exit code the CLI uses for this kind of error
    exit_code = 1


class ModelLoadError(EdgeSDKError):
    """The model file is missing, unreadable, corrupt or of an unknown kind."""

    exit_code = 3


class BackendUnavailableError(EdgeSDKError):
    """The engine a backend needs is not installed, or the asked-for device is missing."""

    exit_code = 4


class InputMismatchError(EdgeSDKError, ValueError):
    """A feed does not match the model's input (name, rank, shape or dtype)."""

    exit_code = 2


class OptionError(EdgeSDKError, ValueError):
    """An option's value is not one the runtime takes (device, precision, threads, hint)."""

    exit_code = 2


class InferenceError(EdgeSDKError):
    """The engine failed while running a valid input."""

    exit_code = 5


class ConversionError(EdgeSDKError):
    """A model could not be converted, calibrated or validated (raised by `converters`)."""

    exit_code = 8
