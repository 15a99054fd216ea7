"""A rollout spec: a release goes to a canary cohort first and on to the next cohort only when the
cohort before it is healthy.

    release: oci://registry.local:5000/edge/cls:1.1.0
    canary: {frames: 50, seconds: 60, threshold: 0.95}   # the model-aware check, first cohort only
    cohorts:
      - {name: canary, devices: [cam-01, cam-02], min_healthy: 1.0}
      - {name: site-a, devices: [cam-03, cam-04, cam-05], min_healthy: 0.9}

`Rollout` is the controller's state machine: `targets()` are the devices to deploy to now,
`record(device, healthy)` takes each device's report, `advance()` says whether to wait, go on
to the next cohort, stop (a cohort below `min_healthy`: the release reaches no further device),
or that every cohort is done. Devices that never report within `timeout_s` count as unhealthy.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import ConfigError, PackageError
from .canary import CanaryPolicy
from .ociref import parse_ref

PathLike = Union[str, Path]


@dataclass
class Cohort:
    name: str
    devices: list[str]
    min_healthy: float = 1.0


@dataclass
class RolloutSpec:
    release: str
    cohorts: list[Cohort]
    canary: CanaryPolicy = field(default_factory=CanaryPolicy)
    timeout_s: float = 600.0


def parse_rollout(data: Any, where: str = "rollout spec") -> RolloutSpec:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with release, cohorts (and canary)")
    unknown = set(data) - {"release", "cohorts", "canary", "timeout_s"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: release, cohorts, canary, timeout_s")
    release = data.get("release")
    if not isinstance(release, str):
        raise ConfigError(f"{where}: release must be an oci:// reference or a package path")
    if release.startswith("oci://"):
        try:
            parse_ref(release)
        except PackageError as exc:
            raise ConfigError(f"{where}: release: {exc}") from exc
    cohorts = [_cohort(c, f"{where}: cohorts[{i}]") for i, c in enumerate(data.get("cohorts") or [])]
    if not cohorts:
        raise ConfigError(f"{where}: name at least one cohort; the first is the canary cohort")
    seen: dict[str, str] = {}
    for c in cohorts:
        for d in c.devices:
            if d in seen:
                raise ConfigError(f"{where}: device {d!r} is in cohorts {seen[d]!r} and {c.name!r}; one cohort each")
            seen[d] = c.name
    try:
        canary = CanaryPolicy(**(data.get("canary") or {})).check()
    except TypeError as exc:
        raise ConfigError(f"{where}: canary: {exc}; known: frames, seconds, metric, threshold, min_frames") from exc
    return RolloutSpec(release, cohorts, canary, float(data.get("timeout_s", 600.0)))


def _cohort(c: Any, where: str) -> Cohort:
    if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not isinstance(c.get("devices"), list) \
            or not c["devices"] or not all(isinstance(d, str) for d in c["devices"]):
        raise ConfigError(f"{where}: needs a name and a non-empty list of device names")
    share = float(c.get("min_healthy", 1.0))
    if not 0.0 < share <= 1.0:
        raise ConfigError(f"{where}: min_healthy must be within (0, 1], got {share}")
    return Cohort(c["name"], list(c["devices"]), share)


def load_rollout(path: PathLike) -> RolloutSpec:
    from ..yamlfile import read_yaml

    p = Path(path)
    data = read_yaml(p, "the rollout spec")
    return parse_rollout(data, str(p))


class Rollout:
    """Cohort by cohort; see the module docstring."""

    def __init__(self, spec: RolloutSpec, clock=time.monotonic) -> None:
        self.spec, self.clock = spec, clock
        self.index = 0
        self.reports: dict[str, bool] = {}
        self.state = "running"  # running | halted | done
        self.started = clock()
        self.history: list[dict] = []

    @property
    def cohort(self) -> Cohort:
        return self.spec.cohorts[self.index]

    @property
    def is_canary(self) -> bool:
        return self.index == 0

    def targets(self) -> list[str]:
        return [] if self.state != "running" else list(self.cohort.devices)

    def record(self, device: str, healthy: bool) -> None:
        if self.state == "running" and device in self.cohort.devices:
            self.reports[device] = bool(healthy)

    def advance(self) -> str:
        """'wait', 'next' (moved on; deploy to `targets()`), 'halted' or 'done'."""
        if self.state != "running":
            return self.state
        c = self.cohort
        late = self.clock() - self.started > self.spec.timeout_s
        if len(self.reports) < len(c.devices) and not late:
            return "wait"
        healthy = sum(self.reports.get(d, False) for d in c.devices)
        share = healthy / len(c.devices)
        self.history.append({"cohort": c.name, "devices": len(c.devices), "healthy": healthy,
                             "share": round(share, 4), "min_healthy": c.min_healthy, "timed_out": late})
        if share < c.min_healthy:
            self.state = "halted"
            return "halted"
        if self.index + 1 == len(self.spec.cohorts):
            self.state = "done"
            return "done"
        self.index += 1
        self.reports, self.started = {}, self.clock()
        return "next"

    def reached(self) -> list[str]:
        """Devices the release was sent to so far."""
        return [d for c in self.spec.cohorts[:self.index + 1] for d in c.devices]
