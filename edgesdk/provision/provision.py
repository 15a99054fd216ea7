"""`edgesdk provision`: make a device match its deployment spec, idempotently.

For each package: install it into ROOT/<name> unless that exact package file (by sha256) is
already the current, intact, healthy release; write its stream spec (ROOT/<name>/stream.yaml,
which the service `edgesdk run --spec` re-reads while running: a change of sources needs no
restart) and its systemd unit unless the files already say the same; with systemd managed,
reload/enable/restart what changed. Stale units this tool
wrote for packages no longer in the spec are removed. A second run with nothing changed
changes nothing and says so. `check` changes nothing and lists the drift.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..bundle import sha256_file
from ..errors import ConfigError
from .fsutil import atomic_write
from .install import install, release_problems
from .spec import DeploymentSpec, PackageSpec
from .store import Store
from .streamspec import needs_restart, render_stream_spec, stream_spec_path
from .systemd import PREFIX, is_managed, render_unit, systemctl, systemctl_available, unit_name

Progress = Callable[[str], None]


@dataclass
class ProvisionReport:
    changes: list[str] = field(default_factory=list)  # done (or, dry run, to do)
    drift: list[str] = field(default_factory=list)  # check: how the device differs from the spec
    units: dict[str, str] = field(default_factory=dict)  # unit path -> content wanted
    streams: dict[str, str] = field(default_factory=dict)  # stream spec path -> content wanted

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _wanted_sha(pkg: PackageSpec, index: int) -> str:
    if pkg.sha256:
        return pkg.sha256
    assert pkg.path is not None
    if not pkg.path.is_file():
        raise ConfigError(f"packages[{index}].path: {pkg.path} does not exist")
    return sha256_file(pkg.path)


def _package_drift(spec: DeploymentSpec, pkg: PackageSpec, wanted: str) -> Optional[str]:
    """Why this package must be (re)installed, or None when it is in place."""
    store = Store(spec.package_root(pkg))
    current = store.link("current") if store.is_store() else None
    if current is None:
        return f"{pkg.name}: not installed (wants {pkg.source})"
    if store.pending() is not None:
        return f"{pkg.name}: an install was interrupted (pending switch to {store.pending().get('release')})"
    state = store.state(current)
    if wanted not in state.get("package_sha256", []):
        return (f"{pkg.name}: current release {current} came from a different package file "
                f"(spec wants sha256 {wanted[:12]}…)")
    problems = release_problems(store, current)
    if problems:
        return f"{pkg.name}: current release {current} is damaged: {'; '.join(problems[:3])}"
    health = state.get("health") or {}
    if not health.get("ok"):
        return f"{pkg.name}: current release {current} is not healthy: {health.get('reason', 'never checked')}"
    return None


def _stale_units(spec: DeploymentSpec, wanted: dict[str, str]) -> list[Path]:
    if not spec.unit_dir.is_dir():
        return []
    return [p for p in sorted(spec.unit_dir.glob(f"{PREFIX}*.service"))
            if str(p) not in wanted and is_managed(p)]


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text()
    except OSError:
        return None


def _file_drift(what: str, path: Path, content: str) -> Optional[str]:
    existing = _read(path)
    if existing is None:
        return f"{what} {path} is missing"
    return f"{what} {path} differs from the spec" if existing != content else None


def plan(spec: DeploymentSpec) -> tuple[list[tuple[PackageSpec, str, str]], dict[str, str], list[str],
                                        dict[str, str]]:
    """(packages to install with why and sha256, units wanted path -> content, unit and
    stream spec drift, stream specs wanted path -> content)."""
    installs = []
    units: dict[str, str] = {}
    streams: dict[str, str] = {}
    drift: list[Optional[str]] = []
    for i, pkg in enumerate(spec.packages):
        wanted = _wanted_sha(pkg, i)
        why = _package_drift(spec, pkg, wanted)
        if why:
            installs.append((pkg, why, wanted))
        if pkg.run is not None:
            stream = stream_spec_path(spec, pkg)
            streams[str(stream)] = render_stream_spec(spec, pkg)
            drift.append(_file_drift("stream spec", stream, streams[str(stream)]))
            path = spec.unit_dir / unit_name(pkg)
            units[str(path)] = render_unit(spec, pkg)
            drift.append(_file_drift("unit", path, units[str(path)]))
    drift += [f"unit {p} is not in the spec any more" for p in _stale_units(spec, units)]
    return installs, units, [d for d in drift if d], streams


def check(spec: DeploymentSpec) -> ProvisionReport:
    """List how the device differs from the spec; change nothing."""
    installs, units, file_drift, streams = plan(spec)
    report = ProvisionReport(drift=[why for _, why, _ in installs] + file_drift, units=units, streams=streams)
    if systemctl_available(spec.manage):
        for path in units:
            name = Path(path).name
            if systemctl("is-enabled", name) != "enabled":
                report.drift.append(f"service {name} is not enabled")
            if systemctl("is-active", name) != "active":
                report.drift.append(f"service {name} is not running")
    return report


def apply(spec: DeploymentSpec, dry_run: bool = False, progress: Optional[Progress] = None) -> ProvisionReport:
    """Make the device match the spec; report what changed (or would, with dry_run)."""
    say = progress or (lambda _m: None)
    installs, units, _, streams = plan(spec)
    report = ProvisionReport(units=units, streams=streams)
    restart: set[str] = set()
    for pkg, why, wanted in installs:
        if dry_run:
            report.changes.append(f"would install {pkg.name} from {pkg.source} ({why})")
            continue
        say(f"{why}: installing")
        result = install(pkg.url or pkg.path, spec.package_root(pkg), trusted_keys=spec.trusted_keys,
                         keep=spec.keep, profile=spec.profile, allow_unsigned=spec.allow_unsigned,
                         allow_downgrade=pkg.allow_downgrade, allow_reinstall=pkg.allow_reinstall, sha256=wanted,
                         progress=say)
        report.changes.append(f"{pkg.name}: {result.message}" if result.changed else
                              f"{pkg.name}: recorded {pkg.source} as the source of current release {result.release}")
        if pkg.run is not None:
            restart.add(unit_name(pkg))
    restart |= _write_streams(spec, streams, dry_run, report)
    written = []
    for path, content in units.items():
        p = Path(path)
        if _read(p) == content:
            continue
        if dry_run:
            report.changes.append(f"would write unit {p}")
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(p, content)
        written.append(p.name)
        report.changes.append(f"wrote unit {p}")
    stale = _stale_units(spec, units)
    for p in stale:
        if dry_run:
            report.changes.append(f"would remove unit {p} (not in the spec any more)")
            continue
        if systemctl_available(spec.manage):
            systemctl("disable", "--now", p.name)
        p.unlink()
        report.changes.append(f"removed unit {p} (not in the spec any more)")
    if not dry_run and systemctl_available(spec.manage) and (written or stale or restart):
        systemctl("daemon-reload")
        for name in sorted(set(written) | restart):
            systemctl("enable", name)
            systemctl("restart", name)
            report.changes.append(f"restarted {name}")
    return report


def _write_streams(spec: DeploymentSpec, streams: dict[str, str], dry_run: bool, report: ProvisionReport) -> set[str]:
    """Write the stream specs that differ; returns the units to restart (a change the running
    service does not apply by itself: anything but its sources)."""
    restart: set[str] = set()
    for pkg in spec.packages:
        if pkg.run is None:
            continue
        p = stream_spec_path(spec, pkg)
        content, old = streams[str(p)], _read(p)
        if old == content:
            continue
        live = not needs_restart(old, content)
        how = "the running service applies its sources without a restart" if live else "the service restarts"
        if dry_run:
            report.changes.append(f"would write stream spec {p} ({how})")
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(p, content)
        report.changes.append(f"wrote stream spec {p} ({how})")
        if not live:
            restart.add(unit_name(pkg))
    return restart


__all__ = ["apply", "check", "plan", "ProvisionReport"]
