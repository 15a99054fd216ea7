"""systemd units for the stream service `edgesdk run` of each package in a deployment spec."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from ..errors import ConfigError
from .spec import DeploymentSpec, PackageSpec
from .streamspec import stream_spec_path

PREFIX = "edgesdk-"
MANAGED_MARK = "# Managed by `edgesdk provision`"
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def unit_name(pkg: PackageSpec) -> str:
    return f"{PREFIX}{pkg.name}.service"


# C0 and C1 controls, Unicode line and paragraph separators, lone surrogates (undecodable bytes)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
#: a first word starting with one of these is read by systemd as flags, quoted or not
EXEC_PREFIXES = "@-:+!|"


def _refuse_unrepresentable(text: str, what: str) -> None:
    if "\n" in text or "\r" in text:
        raise ConfigError(f"{what} {text!r} contains a newline, which a systemd unit cannot hold")
    if _CONTROL.search(text):
        raise ConfigError(f"{what} {text!r} contains a control character or undecodable byte, which EdgeSDK "
                          "does not write into a systemd unit; rename it")


def _quoted(text: str) -> str:
    """Double quotes with C-style escapes: systemd unquotes and unescapes words this way."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_quote(arg: str) -> str:
    """One argument of an Exec line, as systemd's command-line parser reads it back unchanged."""
    _refuse_unrepresentable(arg, "argument")
    # % starts a specifier and $ a variable in Exec lines; doubled, they stand for themselves
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg == ";":
        return "\\;"  # a lone ; separates commands
    if arg and _PLAIN.fullmatch(arg):
        return arg
    return _quoted(arg)


def env_quote(name: str, value: str) -> str:
    """One Environment= assignment: specifiers are expanded there, but `$` is not special."""
    _refuse_unrepresentable(value, f"environment value of {name}")
    return _quoted(f"{name}={value}".replace("%", "%%"))


def _exec_line(args: list[str], prefix: str = "") -> str:
    if not args or not args[0] or args[0][0] in EXEC_PREFIXES:
        raise ConfigError(f"command {args[:1]!r}: systemd reads a leading {EXEC_PREFIXES} as flags; give the "
                          "program by its absolute path")
    return prefix + _line(args)


def _line(args: list[str]) -> str:
    return " ".join(exec_quote(a) for a in args)


def run_args(spec: DeploymentSpec, pkg: PackageSpec) -> list[str]:
    """`edgesdk run --spec ROOT/<name>/stream.yaml ...` for a package: the stream spec holds
    the model (through the root's `current` link), sources, batching and sinks, and is
    re-read while the service runs (streamspec.py)."""
    run = pkg.run
    assert run is not None
    args = [*spec.edgesdk, "run", "--spec", str(stream_spec_path(spec, pkg))]
    if run.metrics_port is not None:
        args += ["--metrics-port", str(run.metrics_port)]
    if spec.profile:
        args += ["--profile", spec.profile]
    return args + list(run.args)


def _is_relative_path(text: str, sink: bool) -> bool:
    """Whether a run source or sink names a file by a relative path: the source and sink
    tables say which of their forms are paths."""
    from ..sinks import is_relative_file as sink_is_relative
    from ..streaming.sources import is_relative_file as source_is_relative

    return sink_is_relative(text) if sink else source_is_relative(text)


def working_directory(spec: DeploymentSpec, pkg: PackageSpec) -> Optional[str]:
    """The unit's WorkingDirectory when a source or sink of the run is a relative path: the
    spec's folder, which they are relative to (they are carried verbatim into the stream
    spec; without it they would resolve against /). None when no path needs one, so that a
    spec kept where the service user cannot enter changes nothing for absolute paths."""
    run = pkg.run
    assert run is not None
    relative = [(key, i, text) for key, values in (("sources", run.sources), ("sinks", run.sinks))
                for i, text in enumerate(values) if _is_relative_path(text, sink=key == "sinks")]
    if not relative:
        return None
    base = str(spec.base or Path.cwd())
    # WorkingDirectory= takes the rest of the line as the path: no quoting, no escapes
    if _CONTROL.search(base) or base != base.strip():
        key, i, text = relative[0]
        raise ConfigError(f"{pkg.name}: run.{key}[{i}] {text!r} is a relative path, and the spec's folder "
                          f"{base!r} cannot be the service's WorkingDirectory (it has a control character "
                          "or surrounding spaces); write the path absolute or move the spec")
    return base.replace("%", "%%")


def render_unit(spec: DeploymentSpec, pkg: PackageSpec) -> str:
    run = pkg.run
    assert run is not None
    status = [*spec.edgesdk, "status", "--root", str(spec.package_root(pkg))]
    if spec.profile:
        status += ["--profile", spec.profile]
    source = json.dumps(str(spec.source or "a deployment spec"))[1:-1]  # a comment is one line, whatever the path
    lines = [
        f"{MANAGED_MARK} from {source}; edits are reported as drift and replaced.",
        "[Unit]",
        f"Description=EdgeSDK stream service for {pkg.name}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"User={spec.user}",
    ]
    if spec.group:
        lines.append(f"Group={spec.group}")
    for k, v in run.environment:
        lines.append(f"Environment={env_quote(k, v)}")
    workdir = working_directory(spec, pkg)
    if workdir is not None:
        lines += ["# Relative source/sink paths are relative to the deployment spec's folder (the service user must be",
                  "# able to enter it).",
                  f"WorkingDirectory={workdir}"]
    lines += [
        "# Finish or undo an install that power loss interrupted, and refuse to start without a healthy release.",
        "# '+': with full privileges, so that the service user needs no write access to the install root.",
        f"ExecStartPre={_exec_line(status, '+')}",
        f"ExecStart={_exec_line(run_args(spec, pkg))}",
        "Restart=on-failure",
        "RestartSec=5s",
        "NoNewPrivileges=yes",
        "ProtectSystem=full",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def is_managed(path: Path) -> bool:
    try:
        with open(path) as f:
            return f.readline().startswith(MANAGED_MARK)
    except OSError:
        return False


def systemctl_available(manage: str) -> bool:
    """Whether to drive systemctl: 'true', 'false', or 'auto' (systemd is running and systemctl exists)."""
    if manage == "false":
        return False
    present = shutil.which("systemctl") is not None and Path("/run/systemd/system").is_dir()
    if manage == "true" and not present:
        raise ConfigError("systemd.manage is true but systemd is not running here (no /run/systemd/system); "
                          "set systemd.manage: false to only write unit files")
    return present


def systemctl(*args: str) -> Optional[str]:
    """Run systemctl; returns stdout, or raises ConfigError with its message."""
    proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0 and args[0] not in ("is-enabled", "is-active"):
        raise ConfigError(f"systemctl {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()
