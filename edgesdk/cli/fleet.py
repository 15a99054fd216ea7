"""Fleet commands: push/pull packages to an OCI registry, `install oci://...`, Mender artifacts, canary.

Registry options are shared: --username with the password from --password-stdin or the
EDGESDK_REGISTRY_PASSWORD environment variable (never a command-line argument: it would show in
`ps`), --ca for a private CA's certificate, --plain-http for a registry without TLS (ORAS's flag).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import click

PASSWORD_ENV = "EDGESDK_REGISTRY_PASSWORD"


def _err(message: str) -> None:
    if message.startswith("WARNING"):
        click.secho(message, err=True, fg="red", bold=True)
    else:
        click.echo(message, err=True)


def _registry_params() -> list[click.Option]:
    return [
        click.Option(["--username"], help="Registry user (basic auth, or the token service's login)."),
        click.Option(["--password-stdin"], is_flag=True,
                     help=f"Read the registry password from stdin (or set {PASSWORD_ENV})."),
        click.Option(["--ca"], type=click.Path(dir_okay=False, path_type=Path),
                     help="PEM certificate of the CA that signed the registry's certificate (self-signed too)."),
        click.Option(["--plain-http"], is_flag=True, help="Talk HTTP, not HTTPS (a registry without TLS)."),
    ]


def registry_options(cmd: click.Command) -> click.Command:
    """Add the registry options to a command (apply above @click.command)."""
    cmd.params += _registry_params()
    return cmd


def make_registry(source: str, username: Optional[str], password_stdin: bool, ca: Optional[Path],
                  plain_http: bool) -> Any:
    from ..errors import ConfigError
    from ..fleet.ociref import parse_ref
    from ..fleet.registry import Credentials, Registry

    ref = parse_ref(source)
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else os.environ.get(PASSWORD_ENV)
    if password is not None and username is None:
        raise ConfigError("a registry password was given but no --username; pass --username USER too")
    creds = Credentials(username, password or "") if username is not None else None
    if plain_http and ca is not None:
        raise ConfigError("--plain-http and --ca contradict each other: a CA certificate is for TLS")
    return Registry(ref.host, creds, ca=ca, plain_http=plain_http)


@registry_options
@click.command()
@click.argument("package", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("target", metavar="oci://HOST[:PORT]/REPO:TAG")
def push(package: Path, target: str, **reg: Any) -> None:
    """Upload PACKAGE (.edgepkg) to an OCI registry as an ORAS-style artifact and tag it."""
    from ..fleet.oci import push as _push
    t = _push(package, target, registry=make_registry(target, **reg), progress=_err)
    click.echo(f"pushed {t.ref} ({t.size} bytes{', blob already there' if t.reused else ''})")


@registry_options
@click.command()
@click.argument("source", metavar="oci://HOST[:PORT]/REPO[:TAG][@sha256:DIGEST]")
@click.option("-o", "--output", "out_dir", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Directory to save the package in.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def pull(source: str, out_dir: Path, as_json: bool, **reg: Any) -> None:
    """Download a package from an OCI registry (resumes a partial download; digest-verified)."""
    from ..fleet.oci import pull as _pull
    t = _pull(source, out_dir, registry=make_registry(source, **reg), progress=_err)
    if as_json:
        click.echo(json.dumps({"ref": t.ref, "path": str(t.path), "manifest_digest": t.manifest_digest,
                               "blob_digest": t.blob_digest, "size": t.size, "bytes_moved": t.bytes_moved,
                               "annotations": t.annotations}, indent=2))
    else:
        click.echo(f"{t.path} ({t.ref}, {t.size} bytes)")


def _install_command() -> click.Command:
    """`edgesdk install`, taking oci:// too: pull into the root's downloads, then the usual install.

    Built around the device command (not a copy of it), so its options stay the device helper's.
    """
    from . import device

    base = device.install

    def callback(package: str, username: Optional[str], password_stdin: bool, ca: Optional[Path],
                 plain_http: bool, **rest: Any) -> Any:
        from ..fleet.ociref import is_oci
        if not is_oci(package):
            if username or password_stdin or ca or plain_http:
                from ..errors import ConfigError
                raise ConfigError("--username/--password-stdin/--ca/--plain-http are for oci:// packages only")
            return base.callback(package=package, **rest)
        from ..fleet.oci import pull as _pull
        from ..provision.store import Store
        store = Store(rest["root"])
        store.init()  # refuses a root that is not ours before anything is downloaded into it
        downloads = store.downloads / "oci"
        t = _pull(package, downloads, registry=make_registry(package, username, password_stdin, ca, plain_http),
                  progress=_err)
        try:
            return base.callback(package=str(t.path), **rest)
        finally:
            t.path.unlink(missing_ok=True)  # installed (or refused): the verified copy lives in releases/

    return click.Command("install", callback=callback, params=list(base.params) + _registry_params(),
                         help=(base.help or "") + "\n\nPACKAGE may also be oci://HOST[:PORT]/REPO:TAG[@sha256:DIGEST] "
                         "(pulled and digest-checked first; registry options below).")


install = _install_command()


@click.command("mender-artifact")
@click.argument("package", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-t", "--device-type", "device_types", multiple=True, required=True,
              help="Mender device type the artifact is for (repeat for several).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The artifact to write, e.g. ocr-cls-1.2.0.mender.")
@click.option("-n", "--artifact-name", help="Mender artifact name (default: NAME-VERSION of the package).")
@click.option("-k", "--key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Sign the artifact with this Mender signing key (mender-artifact -k).")
@click.option("--force", is_flag=True, help="Overwrite the output.")
def mender_artifact(package: Path, device_types: tuple[str, ...], output: Path, artifact_name: Optional[str],
                    key: Optional[Path], force: bool) -> None:
    """Wrap PACKAGE into a Mender artifact for the `edgesdk` update module (runs mender-artifact)."""
    from ..fleet.mender import write_artifact
    r = write_artifact(package, device_types, output, artifact_name=artifact_name, signing_key=key, overwrite=force)
    click.echo(f"wrote {r.path}: artifact {r.artifact_name} ({r.package} {r.version}) for device type(s) "
               f"{', '.join(r.device_types)}; the device needs the edgesdk update module (edgesdk mender-setup)")


@click.command("mender-setup")
@click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Install root the module installs into, e.g. /var/lib/edgesdk/ocr-cls.")
@click.option("--trusted-keys", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory of trusted *.pub keys.")
@click.option("--profile", help="Device profile for the health check.")
@click.option("--modules-dir", default="/usr/share/mender/modules/v3", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Where the Mender client looks for modules.")
@click.option("--config", default="/etc/edgesdk/mender.json", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Where the module's device config goes.")
def mender_setup(root: Path, trusted_keys: Optional[Path], profile: Optional[str], modules_dir: Path,
                 config: Path) -> None:
    """Install the `edgesdk` Mender update module on this device."""
    from ..fleet.mender import install_module
    script = install_module(root, trusted_keys, modules_dir=modules_dir, config=config, profile=profile)
    click.echo(f"installed the edgesdk update module {script} (config {config}, root {root})")


CANARY_REJECTED_EXIT = 12


@click.command()
@click.argument("package", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Install root on the device (it must have a current release to compare with).")
@click.option("--source", required=True, help="Live frames: camera index, rtsp://..., video file, image folder/glob.")
@click.option("--frames", default=50, show_default=True, type=click.IntRange(min=1), help="Frames to compare.")
@click.option("--seconds", default=60.0, show_default=True, type=float, help="Stop after this long at most.")
@click.option("--metric", type=click.Choice(["top1", "box_f1", "cosine"]),
              help="Agreement metric (default by task: classification top1, detection box_f1, raw cosine).")
@click.option("--threshold", default=0.95, show_default=True, type=float, help="Mean agreement needed to commit.")
@click.option("--min-frames", default=10, show_default=True, type=click.IntRange(min=1),
              help="Fewer frames compared than this: no decision, nothing installed.")
@click.option("--trusted-keys", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory of trusted *.pub keys.")
@click.option("--profile", help="Device profile for the health checks.")
@click.option("--allow-downgrade", is_flag=True, help="Accept a lower version than the current one.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the canary report here as JSON.")
def canary(package: Path, root: Path, source: str, frames: int, seconds: float, metric: Optional[str],
           threshold: float, min_frames: int, trusted_keys: Optional[Path], profile: Optional[str],
           allow_downgrade: bool, report_path: Optional[Path]) -> None:
    """Shadow-run PACKAGE beside the current release on live frames; install it only if they agree.

    Exit 0: committed; exit 12: the agreement was below --threshold and the current release stays.
    """
    from ..fleet.canary import CanaryPolicy, canary_install
    policy = CanaryPolicy(frames=frames, seconds=seconds, metric=metric, threshold=threshold,
                          min_frames=min(min_frames, frames))
    r = canary_install(package, root, source, policy, trusted_keys=trusted_keys, profile=profile,
                       report_path=report_path, progress=_err, allow_downgrade=allow_downgrade)
    click.echo(f"canary {r.decision.upper()}: {r.reason}" + (f"; {r.install_message}" if r.install_message else
                                                              f"; {r.current} stays current"))
    if not r.passed:
        sys.exit(CANARY_REJECTED_EXIT)


@click.command()
@click.argument("spec_path", metavar="SPEC.yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--check", is_flag=True, help="Change nothing; report drift from the spec (exit 3 if any).")
@click.option("--dry-run", is_flag=True, help="Change nothing; print what would change and the unit files.")
def provision(spec_path: Path, check: bool, dry_run: bool) -> None:
    """Make this device match a deployment spec (packages, systemd units, local MQTT broker, Mender module)."""
    from ..fleet import provisioning as fleet
    from ..provision.provision import apply, check as _check
    from ..provision.spec import load_spec
    from ..provision.systemd import systemctl, systemctl_available
    from .device import DRIFT_EXIT
    spec = load_spec(spec_path)
    if check:
        drift = _check(spec).drift + fleet.drift(spec)
        if drift:
            click.echo("\n".join(f"drift: {d}" for d in drift))
            sys.exit(DRIFT_EXIT)
        click.echo("no drift: the device matches the spec")
        return
    report = apply(spec, dry_run=dry_run, progress=_err)
    changes, broker_changed = fleet.apply(spec, dry_run=dry_run)
    if broker_changed and spec.broker.service and systemctl_available(spec.manage):
        systemctl("restart", spec.broker.service)
        changes.append(f"restarted {spec.broker.service}")
    if dry_run:
        for path, content in {**report.streams, **report.units}.items():
            click.echo(f"# {path}\n{content}")
    all_changes = report.changes + changes
    click.echo("\n".join(all_changes) if all_changes else "no changes")
