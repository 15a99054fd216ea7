"""Errors raised by the converters package.

`converters` sits above `runtimes` and below `edgesdk`, so it cannot import `edgesdk.errors`;
this module owns `ConversionError` and `edgesdk.errors` re-exports this very class, so that
`except edgesdk.errors.ConversionError` catches what converters raise.
"""
from __future__ import annotations

from runtimes.errors import EdgeSDKError


class ConversionError(EdgeSDKError):
    """A model could not be converted, calibrated or validated.

    The message says what was wrong, what was expected and what to do.
    """

    exit_code = 8


__all__ = ["ConversionError", "EdgeSDKError"]
