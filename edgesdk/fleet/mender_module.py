"""The `edgesdk` Mender update module (protocol v3): `MODULE STATE FILES_DIR`.

Mender state        -> EdgeSDK
ArtifactInstall     -> `install` of the payload's .edgepkg: verify, switch, health check; a failed
                       check has already switched back when this exits 1
ArtifactCommit      -> the health check again, through `current` (exit 1 -> Mender rolls back)
ArtifactRollback    -> `rollback` to the release that was current before, if it is not current now
ArtifactFailure     -> `status`, which finishes or undoes anything an interruption left
SupportsRollback    -> "Yes";  NeedsArtifactReboot -> "No"
Download, Cleanup and the reboot states need nothing (Mender stores the payload in FILES_DIR/files).

What was current before the install is kept in FILES_DIR/tmp/edgesdk.json, so the rollback knows
where to go back to even when it runs in another process after a crash.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from ..errors import EdgeSDKError, PackageError
from ..provision.fsutil import atomic_write

STATE_FILE = "edgesdk.json"
ANSWERS = {"SupportsRollback": "Yes", "NeedsArtifactReboot": "No"}


def _say(message: str) -> None:
    print(f"edgesdk update module: {message}", file=sys.stderr, flush=True)


def _load_config(path: Path) -> dict:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PackageError(f"update module config {path} is unreadable ({exc}); run `edgesdk provision` with a "
                           "mender section, or edgesdk.fleet.mender.install_module()") from exc
    if not cfg.get("root"):
        raise PackageError(f"update module config {path} names no install root")
    return cfg


def _current(root: str) -> Optional[str]:
    from ..provision.install import status
    try:
        st = status(root, verify=False, progress=_say)
    except PackageError:
        return None  # nothing installed yet
    return (st.get("current") or {}).get("release")


def _payload(files_dir: Path) -> Path:
    pkgs = sorted((files_dir / "files").glob("*.edgepkg"))
    if len(pkgs) != 1:
        raise PackageError(f"the artifact's payload holds {len(pkgs)} .edgepkg files, expected 1; write it with "
                           "`edgesdk mender-artifact`")
    return pkgs[0]


def artifact_install(cfg: dict, files_dir: Path) -> None:
    from ..provision.install import install
    state_path = files_dir / "tmp" / STATE_FILE
    state_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(state_path, json.dumps({"before": _current(cfg["root"])}))
    r = install(_payload(files_dir), cfg["root"], trusted_keys=cfg.get("trusted_keys"), profile=cfg.get("profile"),
                progress=_say)
    _say(r.message)


def artifact_commit(cfg: dict, files_dir: Path) -> None:
    from ..provision.install import status
    st = status(cfg["root"], recheck_health=True, profile=cfg.get("profile"), progress=_say)
    if not st["ok"]:
        problem = (st.get("current") or {}).get("health") or {}
        raise PackageError(f"the new release is not healthy at commit: {problem.get('reason', 'no current release')}")
    _say(f"committed {st['current']['release']} (health: {st['current']['health']['reason']})")


def artifact_rollback(cfg: dict, files_dir: Path) -> None:
    from ..provision.install import rollback
    try:
        before = json.loads((files_dir / "tmp" / STATE_FILE).read_text()).get("before")
    except (OSError, ValueError):
        before = None
    now = _current(cfg["root"])
    if now == before:
        _say(f"nothing to roll back: {before or 'no release'} is current")
        return
    if before is None:
        raise PackageError("there was no release before this update; nothing to roll back to")
    _say(rollback(cfg["root"], profile=cfg.get("profile"), progress=_say).message)


def artifact_failure(cfg: dict, files_dir: Path) -> None:
    _say(f"update failed; current release: {_current(cfg['root']) or 'none'}")


HANDLERS = {"ArtifactInstall": artifact_install, "ArtifactCommit": artifact_commit,
            "ArtifactRollback": artifact_rollback, "ArtifactFailure": artifact_failure}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="edgesdk-mender-module")
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("state")
    ap.add_argument("files_dir", type=Path)
    args = ap.parse_args(argv)
    if args.state in ANSWERS:
        print(ANSWERS[args.state])
        return 0
    handler = HANDLERS.get(args.state)
    if handler is None:
        return 0  # Download, Cleanup, reboot states: nothing to do for a model release
    try:
        handler(_load_config(args.config), args.files_dir)
    except EdgeSDKError as exc:
        _say(f"{args.state} failed: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
