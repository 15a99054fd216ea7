"""Install, roll back, report and remove releases: the device-side half of provisioning.

install:  lock -> recover -> (fetch) -> verify -> extract to staging/ -> fsync -> rename into
          releases/ -> pending.json -> previous := current -> current := new -> health check ->
          commit (remove pending.json) -> prune
          A failed health check switches back and removes the release, raising HealthCheckFailed.

Every step before `current := new` happens beside the running release. `pending.json` names
the release on trial and what to restore; the next command that takes the lock (install,
rollback, status, uninstall, provision) finishes the trial (health check, then commit or
roll back) or undoes a switch that never completed. So kill -9 or power loss at any moment
leaves `current` on the old or the new release, complete and healthy.

Setting EDGESDK_TEST_STEP_DELAY=SECONDS sleeps that long at each step (tests use it to widen
the window in which they kill the installer).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from ..bundle import sha256_file
from ..errors import PackageError
from . import health as _health
from .archcheck import arch_mismatch
from .extract import Limits, extract, normalize_name
from .fetch import fetch, is_url
from .fsutil import fsync_dir
from .health import HealthCheckFailed, HealthReport
from .package import MANIFEST_NAME, SIGNATURE_NAME, bundle_problems, package_id
from .store import MARKER, Store, fs_errors
from .verify import signed_size_bound, verify_package
from .version import Version

log = logging.getLogger("edgesdk.provision")
PathLike = Union[str, Path]
Progress = Callable[[str], None]
STEP_DELAY_ENV = "EDGESDK_TEST_STEP_DELAY"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _step(name: str) -> None:
    log.info("step: %s", name)
    delay = os.environ.get(STEP_DELAY_ENV)
    if delay:
        time.sleep(float(delay))


@dataclass
class InstallResult:
    changed: bool
    name: str
    version: str
    release: str
    previous: Optional[str]
    key_id: Optional[str]
    health: Optional[HealthReport]
    message: str
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- the trial
def _switch(store: Store, target: str, reason: str, profile: Any) -> HealthReport:
    """Make `target` current on trial; commit if healthy, else restore and raise."""
    pending = {"release": target, "restore_current": store.link("current"),
               "restore_previous": store.link("previous"), "reason": reason, "pid": os.getpid(),
               # recorded so that a later command finishing this trial checks health the same way
               "profile": _profile_name(profile)}
    store.set_pending(pending)
    _step("pending")
    if pending["restore_current"] and pending["restore_current"] != target:
        store.set_link("previous", pending["restore_current"])
    _step("switch previous")
    store.set_link("current", target)
    _step("switch current")
    return _trial(store, pending, profile)


def _profile_name(profile: Any) -> Optional[str]:
    if profile is None or isinstance(profile, (str, Path)):
        return None if profile is None else str(profile)
    return str(profile.source or profile.name)  # a DeviceProfile


def _trial(store: Store, pending: dict, profile: Any = None) -> HealthReport:
    target = pending["release"]
    profile = profile if profile is not None else pending.get("profile")
    manifest = store.manifest(target)
    _step("health")
    # through `current`, the path the service uses
    report = _health.check(store.root / "current", manifest.bundle, manifest.health, profile)
    state = store.state(target)
    state["health"] = report.to_dict()
    store.write_state(target, state)
    if report.ok:
        store.set_pending(None)
        _step("committed")
        return report
    restored = pending.get("restore_current")
    _undo(store, pending)
    where = f"rolled back to {restored}" if restored else "no release is installed now"
    store.log("rollback", automatic=True, release=target, to=restored, reason=report.reason)
    raise HealthCheckFailed(f"health check of release {target} failed: {report.reason}; {where}")


def _undo(store: Store, pending: dict) -> None:
    target = pending.get("release")
    restore_current, restore_previous = pending.get("restore_current"), pending.get("restore_previous")
    names = set(store.release_names())
    if store.link("current") != restore_current:
        store.set_link("current", restore_current if restore_current in names else None)
    if store.link("previous") != restore_previous:
        store.set_link("previous", restore_previous if restore_previous in names else None)
    if pending.get("reason") == "install" and target and target in names \
            and target not in (restore_current, restore_previous):
        store.remove_release(target)
    store.set_pending(None)


def recover(store: Store, profile: Any = None, progress: Progress = _stderr) -> list[str]:
    """Finish what an interrupted command left (lock held). Returns what was done."""
    done = [f"removed stale staging entry {n}" for n in store.clean_staging()]
    pending = store.pending()
    if pending is None:
        return done
    target = pending.get("release")
    if not target:  # unreadable (atomic writes make this unlikely): leave the links as they are
        store.set_pending(None)
        return done + ["removed an unreadable pending marker"]
    if store.link("current") == target and target in store.release_names():
        progress(f"an interrupted switch to {target} was found; re-running its health check")
        try:
            _trial(store, pending, profile)
            done.append(f"committed {target} after its health check")
        except HealthCheckFailed as exc:
            progress(f"error: {exc}")
            done.append(f"rolled back {target}: {exc}")
    else:
        _undo(store, pending)
        done.append(f"undid an interrupted switch to {target}")
    store.log("recover", actions=done)
    return done


# ---------------------------------------------------------------------------- install
def install(package: PathLike, root: PathLike, trusted_keys: Any = None, keep: int = 3, profile: Any = None,
            allow_unsigned: bool = False, allow_downgrade: bool = False, sha256: Optional[str] = None,
            limits: Limits = Limits(), lock_timeout: Optional[float] = None,
            progress: Progress = _stderr, allow_reinstall: bool = False,
            max_download_bytes: Optional[int] = None) -> InstallResult:
    """Install a package file or URL into `root`; see the module docstring for the steps."""
    if keep < 1:
        raise PackageError(f"--keep must be >= 1, got {keep}")
    check_timeout(lock_timeout)
    store = Store(root)
    with fs_errors(store.root, "installing"):
        store.prepare()
        waiting = lambda pid: progress(f"waiting for another EdgeSDK command (pid {pid}) on {store.root}")  # noqa: E731
        with store.lock(timeout=lock_timeout, on_wait=waiting):
            if store.read_only:
                raise PackageError(f"cannot install into {store.root}: it is on a read-only file system or not "
                                   "writable by this user; remount it read-write or run as its owner")
            store.init_locked()  # under the lock: simultaneous first installs all see one store
            recover(store, profile, progress)
            _step("locked")
            head = lambda part: signed_size_bound(part, trusted_keys, allow_unsigned)  # noqa: E731
            path = _local_package(package, store, sha256, max_download_bytes, limits, progress, head)
            _step("verify")
            pkg = verify_package(path, trusted_keys, allow_unsigned=allow_unsigned, limits=limits)
            return _install_verified(store, pkg, str(package), keep, profile, allow_downgrade, allow_reinstall,
                                     limits, progress)


def check_timeout(seconds: Optional[float]) -> None:
    if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
        raise PackageError(f"--lock-timeout must be a finite number of seconds >= 0, got {seconds}")


def _local_package(package: PathLike, store: Store, sha256: Optional[str], max_bytes: Optional[int],
                   limits: Limits, progress: Progress, size_from_head: Callable[[Path], Optional[int]]) -> Path:
    source = str(package)
    if is_url(source):
        _step("fetch")
        # a package can be no larger than what the limits let it unpack to, plus tar's headers
        cap = max_bytes if max_bytes is not None else limits.max_total_bytes + 2048 * limits.max_members
        return fetch(source, store.downloads, sha256=sha256, progress=progress, max_bytes=cap,
                     size_from_head=size_from_head)
    path = Path(package)
    digest = sha256_file(path) if sha256 is not None else None
    if digest is not None and digest != sha256.lower():
        raise PackageError(f"{path}: sha256 {digest} differs from the expected {sha256}")
    return path


def _install_verified(store: Store, pkg: Any, source: str, keep: int, profile: Any, allow_downgrade: bool,
                      allow_reinstall: bool, limits: Limits, progress: Progress) -> InstallResult:
    for w in pkg.warnings:
        progress(w)
    m = pkg.manifest
    signer = f"signed by key {pkg.key_id}" if pkg.signed else "UNSIGNED"
    progress(f"verified {m.name} {m.version} ({signer}, {len(m.files)} files)")
    current = store.link("current")
    if current is not None and release_id(current) == pkg.id and not release_problems(store, current):
        state = store.state(current)
        if pkg.sha256 not in state.setdefault("package_sha256", []):
            state["package_sha256"].append(pkg.sha256)
            store.write_state(current, state)
        return InstallResult(False, m.name, m.version, current, store.link("previous"), pkg.key_id,
                             _health.HealthReport.from_dict(state["health"]) if state.get("health") else None,
                             f"{m.name} {m.version} is already installed and current ({current}); nothing to do",
                             pkg.warnings)
    if current is not None:
        _check_version(store, current, pkg, allow_downgrade, allow_reinstall, progress)
    name = _free_name(store, pkg.release_name)
    _step("extract")
    staging = _extract_release(store, pkg, name, source, limits, progress)
    _step("rename")
    if store.release_path(name).exists():
        store.remove_release(name)  # left by an interrupted run, or an old copy: replaced whole
    os.rename(staging, store.release_path(name))
    fsync_dir(store.releases)
    _step("renamed")
    previous = store.link("current")
    report = _switch(store, name, "install", profile)
    removed = prune(store, keep)
    store.log("install", release=name, previous=previous, key_id=pkg.key_id, health=report.reason, pruned=removed)
    if is_url(source):
        pkg.path.unlink(missing_ok=True)
    return InstallResult(True, m.name, m.version, name, previous, pkg.key_id, report,
                         f"installed {m.name} {m.version} as {name}" + (f" (previous: {previous})" if previous else "")
                         + f"; health check passed ({report.backend}, {report.reason})", pkg.warnings)


def _extract_release(store: Store, pkg: Any, name: str, source: str, limits: Limits,
                     progress: Progress) -> Path:
    """Unpack into staging/ and refuse a bundle that is not self-contained; returns the staging path."""
    m = pkg.manifest
    staging = store.new_staging(name)
    expected = dict(m.files)
    expected[MANIFEST_NAME] = {"sha256": _sha(pkg.manifest_bytes), "size": len(pkg.manifest_bytes)}
    if pkg.signature_bytes is not None:
        expected[SIGNATURE_NAME] = {"sha256": _sha(pkg.signature_bytes), "size": len(pkg.signature_bytes)}
    # verify_package just scanned every header and link: this pass writes, re-checking as it goes
    extract(pkg.path, staging, expected, limits, scan_first=False, on_file=lambda n: _step(f"extract {n}"))
    mismatch = arch_mismatch(staging / m.bundle)
    if mismatch:
        progress(mismatch)
    problems = bundle_problems(staging / m.bundle, m.files)
    if problems:
        shutil.rmtree(staging, ignore_errors=True)
        raise PackageError(f"package {pkg.path}: its bundle is not self-contained: {'; '.join(problems[:3])}. "
                           "A release may use only the files the signed package carries; refusing it")
    store.write_state(staging, {
        "installed_at": time.time(), "installed": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "name": m.name, "version": m.version, "key_id": pkg.key_id, "package_sha256": [pkg.sha256],
        "source": source, "health": None})
    return staging


def release_id(release: str) -> str:
    """The package id in a release name `<version>-<id>[~n]`."""
    return release.split("~")[0].rsplit("-", 1)[-1]


def _free_name(store: Store, name: str) -> str:
    """`name`, or `name~2`, `name~3`... when `name` is current or previous (a repair reinstall must
    not touch the directory the device runs from; the switch stays one atomic rename)."""
    busy = {store.link("current"), store.link("previous")}
    candidate, n = name, 1
    while candidate in busy:
        n += 1
        candidate = f"{name}~{n}"
    return candidate


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_version(store: Store, current: str, pkg: Any, allow: bool, allow_reinstall: bool,
                   progress: Progress) -> None:
    try:
        cur = Version.parse(store.manifest(current).version)
    except PackageError:
        return  # an unreadable current release is no reason to refuse its replacement
    new = Version.parse(pkg.manifest.version)
    if new < cur:
        if not allow:
            raise PackageError(f"refusing to downgrade from {cur} to {new}; pass --allow-downgrade if you mean it "
                               "(or `edgesdk rollback` to go back to the previous release)")
        progress(f"downgrading from {cur} to {new} (--allow-downgrade)")
    elif new == cur and release_id(current) != pkg.id:
        if not allow_reinstall:
            raise PackageError(
                f"version {new} is already current ({current}) with different content (package id {pkg.id}); one "
                "version must name one content (a +build suffix does not make a version different). Bump the "
                "version, or pass --allow-reinstall if you mean to replace it")
        progress(f"reinstalling version {new} with different content over the current release (--allow-reinstall)")
    elif new == cur:
        progress(f"note: reinstalling version {new} over the current release of the same version (a repair)")


def prune(store: Store, keep: int) -> list[str]:
    """Keep the `keep` newest releases; `current` and `previous` are always kept."""
    protected = {store.link("current"), store.link("previous")}
    names = store.release_names()
    others = sorted((n for n in names if n not in protected),
                    key=lambda n: store.state(n).get("installed_at", 0), reverse=True)
    room = max(keep - len(protected & set(names)), 0)
    for n in others[room:]:
        store.remove_release(n)
    return others[room:]


# ---------------------------------------------------------------------------- rollback
def rollback(root: PathLike, profile: Any = None, lock_timeout: Optional[float] = None,
             progress: Progress = _stderr) -> InstallResult:
    """Make `previous` current again (after a health check); `previous` then names the release left."""
    check_timeout(lock_timeout)
    store = _existing(root)
    with fs_errors(store.root, "rolling back"), \
            store.lock(timeout=lock_timeout, on_wait=lambda pid: progress(f"waiting for pid {pid} ...")):
        _refuse_read_only(store, "roll back")
        recover(store, profile, progress)
        current, previous = store.link("current"), store.link("previous")
        if previous is None or previous not in store.release_names():
            raise PackageError(f"{store.root} has no previous release to roll back to")
        report = _switch(store, previous, "rollback", profile)
        store.log("rollback", automatic=False, release=previous, frm=current)
        m = store.manifest(previous)
        return InstallResult(True, m.name, m.version, previous, current, store.state(previous).get("key_id"),
                             report, f"rolled back from {current} to {previous}; health check passed")


def _refuse_read_only(store: Store, what: str) -> None:
    if store.read_only:
        raise PackageError(f"cannot {what} in {store.root}: it is on a read-only file system or not writable by "
                           "this user; remount it read-write or run as its owner")


# ---------------------------------------------------------------------------- status
def release_problems(store: Store, name: str) -> list[str]:
    """What is wrong with a release directory (empty list: complete, intact and self-contained)."""
    rdir = store.release_path(name)
    try:
        data = store._read_small(rdir / MANIFEST_NAME, 4 << 20)
        m = store.manifest(name)
    except (OSError, PackageError) as exc:
        return [f"unreadable {MANIFEST_NAME}: {exc}"]
    problems = []
    if release_id(name) != package_id(data):
        problems.append(f"{MANIFEST_NAME} does not match the release name (modified?)")
    inside = os.path.realpath(rdir)
    for rel, want in m.files.items():
        p = rdir / normalize_name(rel, name)
        if os.path.commonpath([inside, os.path.realpath(p.parent)]) != inside:
            problems.append(f"{rel}: its folder resolves outside the release (a planted link)")
        elif "symlink" in want:
            if not p.is_symlink() or os.readlink(p) != want["symlink"]:
                problems.append(f"{rel}: symlink missing or changed")
        elif not p.is_file() or p.is_symlink():
            problems.append(f"{rel}: missing")
        elif p.stat().st_size != want["size"] or sha256_file(p) != want["sha256"]:
            problems.append(f"{rel}: sha256 mismatch (modified or corrupt)")
    return problems + bundle_problems(rdir / m.bundle, m.files)


def _release_status(store: Store, name: Optional[str], verify: bool) -> Optional[dict]:
    if name is None:
        return None
    if name not in store.release_names():
        return {"release": name, "complete": False, "problems": ["release directory is missing"], "healthy": False}
    state = store.state(name)
    try:
        m = store.manifest(name)
        info = {"name": m.name, "version": m.version, "created": m.created}
    except PackageError as exc:
        info = {"name": None, "version": None, "error": str(exc)}
    problems = release_problems(store, name) if verify else bundle_problems(store.release_path(name) / "bundle")
    health = state.get("health") if isinstance(state.get("health"), dict) else None
    return {"release": name, **info, "key_id": state.get("key_id"), "signed": bool(state.get("key_id")),
            "installed": state.get("installed"), "health": health, "complete": not problems,
            "problems": problems, "healthy": bool(health and health.get("ok")) and not problems,
            "path": str(store.release_path(name))}


def status(root: PathLike, verify: bool = True, recheck_health: bool = False, profile: Any = None,
           progress: Progress = _stderr) -> dict:
    """Current and previous releases (versions, signers, health, completeness), recovering first.

    On a read-only root (a read-only mount, or run as a user that may not write it) nothing is
    recovered or rechecked; `read_only` says so and an interrupted switch is reported as `pending`."""
    store = _existing(root)
    with fs_errors(store.root, "reading the status"), store.lock(wait=False) as held:
        writable = held and not store.read_only
        actions = recover(store, profile, progress) if writable else []
        current = store.link("current")
        if writable and recheck_health and current:
            m = store.manifest(current)
            report = _health.check(store.root / "current", m.bundle, m.health, profile)
            state = store.state(current)
            state["health"] = report.to_dict()
            store.write_state(current, state)
        elif recheck_health and current:
            progress(f"note: {store.root} is read-only here; the health check was not run again")
        out = {
            "root": str(store.root), "busy": not held, "read_only": store.read_only, "recovered": actions,
            "current": _release_status(store, current, verify),
            "previous": _release_status(store, store.link("previous"), verify),
            "releases": store.release_names(), "pending": store.pending(), "history": store.history(5),
        }
    # a trial nobody is finishing (read-only here, and no other command holds the lock) is not ok
    out["ok"] = bool(out["current"] and out["current"]["healthy"] and out["current"]["complete"]
                     and (held is False or not out["pending"]))
    return out


# ---------------------------------------------------------------------------- uninstall
def uninstall(root: PathLike, lock_timeout: Optional[float] = None, progress: Progress = _stderr) -> list[str]:
    """Remove every release and the root's EdgeSDK files (only those); returns what was removed."""
    check_timeout(lock_timeout)
    store = _existing(root)
    removed = []
    with fs_errors(store.root, "uninstalling"), \
            store.lock(timeout=lock_timeout, on_wait=lambda pid: progress(f"waiting for pid {pid} ...")):
        _refuse_read_only(store, "uninstall")
        for which in ("current", "previous"):
            if store.link(which):
                store.set_link(which, None)
                removed.append(which)
        for name in store.release_names():
            store.remove_release(name)
            removed.append(f"releases/{name}")
        for d in (store.staging, store.downloads, store.releases):
            shutil.rmtree(d, ignore_errors=True)  # rmtree refuses a symlink; check_layout refused one anyway
        for f in (store.pending_path, store.history_path, store.root / MARKER):
            f.unlink(missing_ok=True)
        store.lock_path.unlink(missing_ok=True)
    try:
        store.root.rmdir()
    except OSError:
        pass  # files that are not ours stay
    return removed


def _existing(root: PathLike) -> Store:
    store = Store(root)
    with fs_errors(store.root, "opening the install root"):
        if store.root.is_symlink():
            os.close(store._root_fd())  # raises the one-paragraph "is a symlink" refusal
        found = store.is_store()
    if not found:
        raise PackageError(f"{store.root} is not an EdgeSDK install root (nothing was installed there with "
                           "`edgesdk install`)")
    return store


__all__ = ["install", "rollback", "status", "uninstall", "recover", "prune", "InstallResult", "release_problems"]
