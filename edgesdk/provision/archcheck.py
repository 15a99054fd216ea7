"""Does a package's bundle target this machine's architecture?

A bundle names the device profile it was converted or packed for; that profile states an
architecture. Installing an x86-64 profile's bundle on an arm64 board is allowed (ONNX and
TFLite files are portable, and the health check still decides), but the profile's choices
(threads, backends, precisions) were made for another machine, so the installer says so.
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Optional

from ..bundle import Bundle
from ..errors import EdgeSDKError


def this_arch() -> str:
    from ..hostinfo import normalize_arch

    return normalize_arch(platform.machine())


def arch_mismatch(bundle_dir: Path, machine: Optional[str] = None) -> Optional[str]:
    """A warning when the bundle's profile is for another architecture, else None.

    Unknown or missing profiles give None: nothing can be said about them.
    """
    from ..profiles import load_profile

    try:
        name = Bundle.load(bundle_dir).manifest.profile
        profile = load_profile(name) if name else None
    except EdgeSDKError:
        return None
    here = machine or this_arch()
    if profile is None or profile.arch == here:
        return None
    return (f"WARNING: this package's bundle was made for device profile {profile.name} ({profile.arch}); this "
            f"machine is {here}. Its model files are portable and the health check below still decides, but "
            f"threads, backends and precisions were chosen for {profile.arch}: convert or pack it for a "
            f"{here} profile (edgesdk profiles list) for this device")
