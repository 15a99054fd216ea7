"""EdgeSDK's errors: the runtime ones re-exported, plus the higher-level kinds."""
from __future__ import annotations

from runtimes.errors import (BackendUnavailableError, ConversionError, EdgeSDKError, InferenceError,
                             InputMismatchError, ModelLoadError)


class ProfileError(EdgeSDKError):
    """A device profile is unknown or invalid (the message names the file and key)."""

    exit_code = 6


class BundleError(EdgeSDKError):
    """A bundle is missing files, fails its hash check, or has an invalid manifest."""

    exit_code = 7


class SourceError(EdgeSDKError):
    """A stream source could not be opened or read."""

    exit_code = 9


class SinkError(EdgeSDKError):
    """A sink could not be opened or written."""

    exit_code = 10


class PackageError(EdgeSDKError):
    """A device package is unsigned, tampered, unsafe, or cannot be installed."""

    exit_code = 11


class ConfigError(EdgeSDKError, ValueError):
    """A configuration file or option is invalid."""

    exit_code = 2


__all__ = [
    "EdgeSDKError", "ModelLoadError", "BackendUnavailableError", "InputMismatchError", "InferenceError",
    "ProfileError", "BundleError", "ConversionError", "SourceError", "SinkError", "PackageError",
    "ConfigError",
]
