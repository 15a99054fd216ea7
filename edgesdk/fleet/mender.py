"""Mender: `.edgepkg` inside a Mender artifact, and the `edgesdk` update module that installs it.

`write_artifact()` runs the real `mender-artifact write module-image -T edgesdk ...` with the
package as the payload's one file; `software` provides `rootfs-image.<name>.version = <version>`
so Mender's inventory shows the model release. `install_module()` puts the update module (a
two-line shell script that runs `edgesdk.fleet.mender_module` with this Python) and its device
config (`root`, `trusted_keys`, `profile`) where the Mender client looks for modules.

The device type is Mender's own check: the client refuses an artifact whose `device_type`
list does not include the one in its DeviceTypeFile, before the module sees a byte.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import PackageError
from ..provision.fsutil import atomic_write

PathLike = Union[str, Path]
MODULE_NAME = "edgesdk"
DEFAULT_MODULES_DIR = Path("/usr/share/mender/modules/v3")
DEFAULT_CONFIG = Path("/etc/edgesdk/mender.json")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")


class MenderError(PackageError):
    """mender-artifact is missing or failed, or the update module cannot be set up."""


def find_tool(name: str = "mender-artifact") -> str:
    found = shutil.which(name)
    if found is None:
        raise MenderError(f"{name} is not installed; install it (Debian/Ubuntu: apt-get install mender-artifact; "
                          "or tools/install_system_deps.sh) or put it on PATH")
    return found


@dataclass
class ArtifactResult:
    path: Path
    artifact_name: str
    device_types: tuple[str, ...]
    package: str
    version: str


def write_artifact(package: PathLike, device_types: Sequence[str], output: PathLike,
                   artifact_name: Optional[str] = None, signing_key: Optional[PathLike] = None,
                   overwrite: bool = False) -> ArtifactResult:
    """Wrap a readable `.edgepkg` into a Mender module-image artifact (temp file + rename)."""
    from ..provision.verify import verify_package

    if not device_types:
        raise MenderError("pass at least one --device-type (the Mender device type the artifact is for)")
    for t in device_types:
        if not _NAME.fullmatch(t):
            raise MenderError(f"device type {t!r} is not valid (letters, digits, _ . + -)")
    out = Path(output)
    if out.exists() and not overwrite:
        raise MenderError(f"{out} exists; pass --force to overwrite it")
    pkg = verify_package(Path(package), None, allow_unsigned=True)
    m = pkg.manifest
    name = artifact_name or f"{m.name}-{m.version}"
    if not _NAME.fullmatch(name):
        raise MenderError(f"artifact name {name!r} is not valid (letters, digits, _ . + -); pass --artifact-name")
    tool = find_tool()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    cmd = [tool, "write", "module-image", "-T", MODULE_NAME, "-n", name, "-o", tmp, "-f", str(package),
           "--software-name", m.name, "--software-version", m.version]
    for t in device_types:
        cmd += ["-t", t]
    if signing_key:
        cmd += ["-k", str(signing_key)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise MenderError(f"mender-artifact failed (exit {done.returncode}): "
                              f"{(done.stderr or done.stdout).strip()[-800:]}")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return ArtifactResult(out, name, tuple(device_types), m.name, m.version)


def module_script(python: str, config: PathLike, pythonpath: Optional[str] = None) -> str:
    env = f"PYTHONPATH={_sh(pythonpath)} " if pythonpath else ""
    return (f"#!/bin/sh\n# EdgeSDK update module for Mender (written by edgesdk; states -> install/health/rollback)\n"
            f"exec env {env}{_sh(python)} -m edgesdk.fleet.mender_module --config {_sh(str(config))} \"$@\"\n")


def _sh(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def install_module(root: PathLike, trusted_keys: Optional[PathLike], modules_dir: PathLike = DEFAULT_MODULES_DIR,
                   config: PathLike = DEFAULT_CONFIG, profile: Optional[str] = None,
                   python: str = sys.executable, pythonpath: Optional[str] = None) -> Path:
    """Write the device config and the `edgesdk` module script; returns the script's path."""
    if trusted_keys is not None and not Path(trusted_keys).is_dir():
        raise MenderError(f"trusted keys {trusted_keys}: not a directory of *.pub keys")
    cfg = {"root": str(Path(root).absolute()), "profile": profile,
           "trusted_keys": str(Path(trusted_keys).absolute()) if trusted_keys else None}
    Path(config).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(config, json.dumps(cfg, indent=2) + "\n")
    script = Path(modules_dir) / MODULE_NAME
    script.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(script, module_script(python, config, pythonpath), mode=0o755)
    return script
