"""Device commands: keygen, pack, verify, install, rollback, status, uninstall, provision.

Each is a thin layer over `edgesdk.provision`; progress goes to stderr, results to stdout.
Refusals raise PackageError (exit code 11); `status` exits 1 when the device has no complete,
healthy current release; `provision --check` exits 3 when the device drifted from the spec.
"""
from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path
from typing import Optional

import click

DRIFT_EXIT = 3


def _exit(code: int) -> None:
    # SystemExit, not click's Exit: the root runs click with standalone_mode=False, where an Exit
    # code is returned rather than used, and `python -m edgesdk` would then exit 0
    sys.exit(code)


def _finite(ctx: click.Context, param: click.Parameter, value: Optional[float]) -> Optional[float]:
    """FloatRange lets nan through (every comparison with it is false): refuse it here."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value}", ctx=ctx, param=param)
    return value


def _fs_guard(doing: str):
    """A file-system fault the library did not translate (a full disk while packing, a read-only key
    folder) still ends in one paragraph and exit code 11, never a traceback."""
    def wrap(f):
        @functools.wraps(f)
        def run(*args, **kwargs):
            from ..provision.store import fs_errors
            with fs_errors(kwargs.get("root"), doing):
                return f(*args, **kwargs)
        return run
    return wrap


def _err(message: str) -> None:
    click.echo(message, err=True)


def _loud(message: str) -> None:
    click.secho(message, err=True, fg="red", bold=True)


@click.command()
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for NAME.key (private, mode 0600) and NAME.pub.")
@click.option("--name", default="edgesdk", show_default=True, help="File name stem of the key pair.")
@click.option("--force", is_flag=True, help="Overwrite an existing key pair.")
@_fs_guard("writing the key pair")
def keygen(out_dir: Path, name: str, force: bool) -> None:
    """Create an Ed25519 signing key pair."""
    from ..provision.keys import generate_keypair
    kp = generate_keypair(out_dir, name, overwrite=force)
    click.echo(f"key id {kp.key_id}")
    click.echo(f"private key: {kp.private_path} (mode 0600; keep it secret, off devices)")
    click.echo(f"public key:  {kp.public_path} (copy it into each device's trusted-keys directory)")


@click.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The package to write, e.g. ocr-cls-1.2.0.edgepkg.")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), help="Private signing key (edgesdk keygen).")
@click.option("--unsigned", is_flag=True, help="Write an unsigned package (development only; devices refuse it "
                                               "without --allow-unsigned).")
@click.option("--version", "version", required=True, help="Package version, semantic: 1.2.0, 1.3.0-rc.1.")
@click.option("--sample", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Health-check input: an image (through the bundle's preprocessing), .npy or .npz. "
                   "Default: a seeded synthetic input.")
@click.option("--rtol", type=click.FloatRange(0, 1e6), callback=_finite,
              help="Health-check relative tolerance (default by the bundle's precision).")
@click.option("--atol", type=click.FloatRange(0, 1e6), callback=_finite,
              help="Health-check absolute tolerance (default by the bundle's precision).")
@click.option("--name", help="Package name (default: the bundle's name).")
@click.option("--force", is_flag=True, help="Overwrite the output.")
@_fs_guard("packing")
def pack(bundle: Path, output: Path, key: Optional[Path], unsigned: bool, version: str, sample: Optional[Path],
         rtol: Optional[float], atol: Optional[float], name: Optional[str], force: bool) -> None:
    """Pack a bundle into a signed .edgepkg with a health sample recorded by running it."""
    from ..errors import PackageError
    from ..provision.package import pack as _pack
    if key is None and not unsigned:
        raise PackageError("pass --key KEY to sign the package (or --unsigned for a development package)")
    if key is not None and unsigned:
        raise PackageError("--key and --unsigned contradict each other; pass one")
    if unsigned:
        _loud("WARNING: writing an UNSIGNED package; devices refuse it unless installed with --allow-unsigned")
    r = _pack(bundle, output, version, key=key, sample=sample, rtol=rtol, atol=atol, name=name, overwrite=force)
    signer = f"signed by key {r.key_id}" if r.key_id else "UNSIGNED"
    click.echo(f"wrote {r.path} ({r.size} bytes): {r.name} {r.version}, id {r.id}, {signer}")
    click.echo(f"sha256 {r.sha256}")


@click.command()
@click.argument("package", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--trusted-keys", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory of trusted *.pub keys.")
@click.option("--allow-unsigned", is_flag=True, help="Accept a package without a trusted signature (development).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_fs_guard("verifying")
def verify(package: Path, trusted_keys: Optional[Path], allow_unsigned: bool, as_json: bool) -> None:
    """Check a package's signature and every file, writing nothing."""
    from ..provision.verify import verify_package
    pkg = verify_package(package, trusted_keys, allow_unsigned=allow_unsigned)
    for w in pkg.warnings:
        _loud(w)
    m = pkg.manifest
    if as_json:
        click.echo(json.dumps({"ok": True, "name": m.name, "version": m.version, "id": pkg.id,
                               "release": pkg.release_name, "key_id": pkg.key_id, "signed": pkg.signed,
                               "files": len(m.files), "sha256": pkg.sha256}, indent=2))
        return
    signer = f"signature by trusted key {pkg.key_id}" if pkg.signed else "NOT signed by a trusted key"
    click.echo(f"OK {package}: {m.name} {m.version} (id {pkg.id}), {signer}, {len(m.files)} files match")


def _root_option(f):
    return click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path),
                        help="Install root on the device, e.g. /var/lib/edgesdk/ocr-cls.")(f)


def _profile_option(f):
    return click.option("--profile", help="Device profile: the health check uses its preferred backend.")(f)


@click.command()
@click.argument("package")
@_root_option
@click.option("--trusted-keys", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory of trusted *.pub keys.")
@click.option("--keep", default=3, show_default=True, type=click.IntRange(min=1),
              help="Releases to keep (current and previous always stay).")
@_profile_option
@click.option("--sha256", help="Expected sha256 of the package file (checked after download).")
@click.option("--allow-unsigned", is_flag=True, help="Accept a package without a trusted signature (development).")
@click.option("--allow-downgrade", is_flag=True, help="Accept a lower version than the current one.")
@click.option("--allow-reinstall", is_flag=True, help="Accept a package of the current version with different "
                                                      "content (by default one version names one content).")
@click.option("--max-download-bytes", type=click.IntRange(min=1),
              help="Largest package a URL may send (default: what the extraction limits allow, 8 GiB + headers).")
@click.option("--lock-timeout", type=click.FloatRange(0, 1e9), callback=_finite,
              help="Seconds to wait for another install (default: wait).")
@_fs_guard("installing")
def install(package: str, root: Path, trusted_keys: Optional[Path], keep: int, profile: Optional[str],
            sha256: Optional[str], allow_unsigned: bool, allow_downgrade: bool, allow_reinstall: bool,
            max_download_bytes: Optional[int], lock_timeout: Optional[float]) -> None:
    """Install PACKAGE (a file or an http(s) URL): verify, switch atomically, health-check, roll back on failure."""
    from ..provision.install import install as _install

    def progress(message: str) -> None:
        (_loud if message.startswith("WARNING") else _err)(message)

    r = _install(package, root, trusted_keys=trusted_keys, keep=keep, profile=profile, sha256=sha256,
                 allow_unsigned=allow_unsigned, allow_downgrade=allow_downgrade, lock_timeout=lock_timeout,
                 progress=progress, allow_reinstall=allow_reinstall, max_download_bytes=max_download_bytes)
    click.echo(r.message)


@click.command()
@_root_option
@_profile_option
@_fs_guard("rolling back")
def rollback(root: Path, profile: Optional[str]) -> None:
    """Switch back to the previous release (after a health check)."""
    from ..provision.install import rollback as _rollback
    click.echo(_rollback(root, profile=profile, progress=_err).message)


def _describe(label: str, rel: Optional[dict]) -> list[str]:
    if rel is None:
        return [f"{label}: none"]
    if rel.get("version") is None:
        return [f"{label}: {rel['release']} (BROKEN: {'; '.join(rel.get('problems') or [rel.get('error', '')])})"]
    signer = f"key {rel['key_id']}" if rel.get("key_id") else "UNSIGNED"
    health = rel.get("health") or {}
    state = "healthy" if rel["healthy"] else ("NOT HEALTHY" if health else "health not checked")
    lines = [f"{label}: {rel['name']} {rel['version']} ({rel['release']}), signed by {signer}, {state}"
             + ("" if rel["complete"] else ", INCOMPLETE")]
    if health:
        lines.append(f"  health: {health.get('reason')} [{health.get('backend')}, {health.get('checked_at')}]")
    lines += [f"  problem: {p}" for p in rel.get("problems") or []]
    return lines


@click.command()
@_root_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--no-verify", is_flag=True, help="Skip re-hashing the release files.")
@click.option("--check-health", is_flag=True, help="Run the current release's health check again now.")
@_profile_option
@_fs_guard("reading the status")
def status(root: Path, as_json: bool, no_verify: bool, check_health: bool, profile: Optional[str]) -> None:
    """Current and previous releases: versions, signers, health, completeness (exit 1 if not healthy)."""
    from ..provision.install import status as _status
    if profile:  # an unknown name fails here, not only once a release is there to check
        from ..profiles import load_profile
        load_profile(profile)
    st = _status(root, verify=not no_verify, recheck_health=check_health, profile=profile, progress=_err)
    if as_json:
        click.echo(json.dumps(st, indent=2, default=str))
    else:
        lines = [f"root: {st['root']}" + (" (another EdgeSDK command is running)" if st["busy"] else "")
                 + (" (read-only: nothing recovered or rewritten)" if st.get("read_only") else "")]
        if st.get("pending"):
            lines.append(f"pending: an interrupted switch to {st['pending'].get('release')} awaits recovery "
                         "(run `edgesdk status` as the root's owner on a writable root)")
        lines += [f"recovered: {a}" for a in st["recovered"]]
        lines += _describe("current", st["current"]) + _describe("previous", st["previous"])
        lines.append(f"releases on disk: {', '.join(st['releases']) or 'none'}")
        click.echo("\n".join(lines))
    if not st["ok"]:
        _exit(1)


@click.command()
@_root_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_fs_guard("uninstalling")
def uninstall(root: Path, yes: bool) -> None:
    """Remove every release and EdgeSDK's files under --root."""
    from ..provision.install import uninstall as _uninstall
    if not yes:
        click.confirm(f"remove every EdgeSDK release under {root}?", abort=True, err=True)
    removed = _uninstall(root, progress=_err)
    click.echo(f"removed {len(removed)} entries from {root}: {', '.join(removed) or 'nothing installed'}")


@click.command()
@click.argument("spec_path", metavar="SPEC.yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--check", is_flag=True, help="Change nothing; report drift from the spec (exit 3 if any).")
@click.option("--dry-run", is_flag=True, help="Change nothing; print what would change and the unit files.")
@_fs_guard("provisioning")
def provision(spec_path: Path, check: bool, dry_run: bool) -> None:
    """Make this device match a deployment spec (packages, systemd units); idempotent."""
    from ..provision.provision import apply, check as _check
    from ..provision.spec import load_spec
    spec = load_spec(spec_path)
    if check:
        report = _check(spec)
        if report.drift:
            click.echo("\n".join(f"drift: {d}" for d in report.drift))
            _exit(DRIFT_EXIT)
        click.echo("no drift: the device matches the spec")
        return
    report = apply(spec, dry_run=dry_run, progress=_err)
    if dry_run:
        for path, content in {**report.streams, **report.units}.items():
            click.echo(f"# {path}\n{content}")
    click.echo("\n".join(report.changes) if report.changes else "no changes")
