"""Errors raised by the converters package.

`ConversionError` (exit code 8) lives in the bottom layer (`runtimes.errors`) so that
converters and `edgesdk.errors` share one class: `except edgesdk.errors.ConversionError`
catches what converters raise. Import it from here inside `converters`.
"""
from __future__ import annotations

from runtimes.errors import ConversionError, EdgeSDKError

__all__ = ["ConversionError", "EdgeSDKError"]
