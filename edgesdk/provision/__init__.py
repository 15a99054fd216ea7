"""Device provisioning: signed packages, safe extraction, atomic A/B-style installs with rollback.

The pieces, one concept per module:

- `keys`: Ed25519 key pairs; a key id is a short sha256 of the public key.
- `package`: `pack()` a bundle into one `.edgepkg` (gzip tar) holding the bundle, a health
  sample, `edgepkg.json` (version, sha256 of every file) and `edgepkg.sig` (a detached
  signature over `edgepkg.json`).
- `extract`: reads an archive member by member and refuses anything unsafe (absolute paths,
  `..`, links leaving the package, device files, bombs) before a byte is written.
- `verify`: signature against trusted keys, then every file against the signed manifest.
- `store`: the release layout under a root directory (`releases/`, `current`, `previous`,
  a lock, a pending marker) with atomic symlink switches.
- `install`: verify -> extract to staging -> fsync -> rename -> switch -> health -> commit,
  rolling back by itself when the health check fails; `rollback`, `status`, `uninstall`.
- `health`: runs the bundled sample input and compares with the output recorded at pack time.
- `fetch`: HTTP(S) download with Range resume and sha256 check.
- `spec`, `systemd`, `provision`: a deployment spec applied idempotently, with a systemd unit.

Like Mender and SWUpdate, the device is never left without a complete, working release: every
step before the switch happens beside the running release, the switch is one `rename(2)` of a
symlink, and an interrupted switch is finished or undone by the next command that takes the lock.
"""
from __future__ import annotations

import importlib
from typing import Any

# Functions named like their module (install, extract, fetch) are not re-exported here: once the
# submodule is imported, the package attribute of that name is the module. Import them from it.
_LAZY = {
    "generate_keypair": "keys", "load_trusted_keys": "keys",
    "pack": "package", "PackageManifest": "package",
    "verify_package": "verify", "VerifiedPackage": "verify",
    "Limits": "extract",
    "rollback": "install", "status": "install", "uninstall": "install",
    "Store": "store",
    "load_spec": "spec",
    "apply": "provision", "check": "provision",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgesdk.provision' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = sorted(_LAZY)
