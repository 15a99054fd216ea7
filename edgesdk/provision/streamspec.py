"""The stream spec file a provisioned service runs (`edgesdk run --spec ROOT/<name>/stream.yaml`).

`edgesdk provision` writes it from the package's ``run:`` section; the service re-reads it
while running (edgesdk.streaming.specwatch), so sources added to or removed from it, on the
device or through a new deployment spec, apply without a restart. The deployment spec stays
the source of truth: the next `edgesdk provision` puts its sources back (`--check` reports
an edited file as drift). Settings other than sources (batching, sinks...) need a restart;
provision restarts the service when those change.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from .spec import DeploymentSpec, PackageSpec

STREAM_FILE = "stream.yaml"
#: keys the running service applies by itself (the rest needs a restart)
LIVE_KEYS = ("sources", "weights")


def stream_spec_path(spec: DeploymentSpec, pkg: PackageSpec) -> Path:
    return spec.package_root(pkg) / STREAM_FILE


def stream_spec(spec: DeploymentSpec, pkg: PackageSpec) -> dict[str, Any]:
    """The stream description of a package's run section (model through the root's `current`)."""
    run = pkg.run
    assert run is not None
    out: dict[str, Any] = {"model": str(spec.package_root(pkg) / "current" / "bundle"),
                           "sources": list(run.sources), "batching": run.batching}
    for key in ("batch", "max_wait_ms", "slo_ms", "gate", "gate_threshold", "gate_max_age_s", "replicas"):
        if getattr(run, key) is not None:
            out[key] = getattr(run, key)
    if run.then:  # a package of this spec runs from its installed bundle, like the model
        names = {p.name: p for p in spec.packages}
        out["then"] = [str(spec.package_root(names[t]) / "current" / "bundle") if t in names else t
                       for t in run.then]
    if run.sinks:
        out["sinks"] = list(run.sinks)
    if run.require_all_sources:
        out["require_all_sources"] = True
    if run.reconnect_attempts is not None:
        out["reconnect"] = {"attempts": run.reconnect_attempts}
    return out


def render_stream_spec(spec: DeploymentSpec, pkg: PackageSpec) -> str:
    import yaml

    origin = json.dumps(str(spec.source or "a deployment spec"))[1:-1]  # a comment is one line, whatever the path
    head = (f"# Written by `edgesdk provision` from {origin} for {pkg.name}.\n"
            "# The service re-reads this file while running: sources added or removed here apply without a\n"
            "# restart. The next `edgesdk provision` writes the deployment spec's sources back; other settings\n"
            "# need a restart of the service.\n")
    return head + yaml.safe_dump(stream_spec(spec, pkg), sort_keys=False, default_flow_style=False)


def needs_restart(old_text: Optional[str], new_text: str) -> bool:
    """Whether going from `old_text` to `new_text` changes more than the running service
    applies by itself (its sources). A missing or unreadable old file: yes."""
    import yaml

    if old_text is None:
        return True
    try:
        old = yaml.safe_load(old_text)
    except yaml.YAMLError:
        return True
    new = yaml.safe_load(new_text)
    if not isinstance(old, dict):
        return True
    return {k: v for k, v in old.items() if k not in LIVE_KEYS} != {k: v for k, v in new.items() if k not in LIVE_KEYS}
