"""`edgesdk profiles list|show NAME` and `edgesdk detect`: thin layers over
edgesdk.profiles and edgesdk.hostinfo."""
from __future__ import annotations

import json
import textwrap
from typing import Any, Optional, Sequence

import click

from ..errors import ProfileError

_DIRS_HELP = ("Extra folder of NAME.yaml profiles, searched before the shipped ones (repeatable; "
              "also $EDGESDK_PROFILE_PATH).")


def _dirs(ctx: click.Context, local: Sequence[str]) -> list[str]:
    group = (ctx.obj or {}).get("profiles_dirs", ()) if ctx.obj else ()
    return [*local, *group]


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


@click.group("profiles")
@click.option("--profiles-dir", "profiles_dirs", multiple=True, type=click.Path(file_okay=False),
              help=_DIRS_HELP)
@click.pass_context
def profiles(ctx: click.Context, profiles_dirs: tuple[str, ...]) -> None:
    """Device profiles: what each target device runs best."""
    ctx.ensure_object(dict)
    ctx.obj["profiles_dirs"] = list(profiles_dirs)


@profiles.command("list")
@click.option("--profiles-dir", "profiles_dirs", multiple=True, type=click.Path(file_okay=False),
              help=_DIRS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def list_cmd(ctx: click.Context, profiles_dirs: tuple[str, ...], as_json: bool) -> None:
    """List the known device profiles."""
    from ..profiles import list_profiles
    found = list_profiles(_dirs(ctx, profiles_dirs))
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in found], indent=2))
        return
    rows = []
    for p in found:
        best = p.best
        rows.append([p.name, p.arch, f"{best.backend}/{best.device}", ",".join(best.precisions),
                     f"{p.memory_mb // 1024} GB" if p.memory_mb >= 1024 else f"{p.memory_mb} MB",
                     str(p.max_batch), textwrap.shorten(p.description, 60, placeholder="...")])
    click.echo(_table(rows, ["NAME", "ARCH", "BEST BACKEND", "PRECISIONS", "MEMORY", "MAX BATCH", "DESCRIPTION"]))
    click.echo(f"\n{len(found)} profiles. `edgesdk profiles show NAME` for details, `edgesdk detect` for this host.")


def _render(p: Any) -> str:
    out = [f"{p.name}: {p.description}"]
    if len(p.chain) > 1:
        out.append(f"  extends:      {' -> '.join(p.chain[1:])}")
    out += [f"  source:       {p.source}",
            f"  arch:         {p.arch}",
            f"  cpu:          {p.cpu}",
            f"  cores:        {p.cores} (default threads {p.threads})",
            f"  memory:       {p.memory_mb} MiB",
            f"  batch:        max {p.max_batch}, preferred {', '.join(map(str, p.batch_sizes))}"]
    if p.accelerators:
        out.append("  accelerators:")
        out += [f"    - {a}" for a in p.accelerators]
    out.append("  backends (best first):")
    for i, b in enumerate(p.backends, 1):
        opts = "  " + json.dumps(b.to_dict()["options"]) if b.options else ""
        out.append(f"    {i}. {b.backend}/{b.device}  precisions {', '.join(b.precisions)}  layout {b.layout}{opts}")
        if b.note:
            out.append(textwrap.fill(b.note, 100, initial_indent="       ", subsequent_indent="       "))
        if not b.verified:
            text = "recipe, not verified here" + (f": {b.recipe_note}" if b.recipe_note else "")
            out.append(textwrap.fill(text, 100, initial_indent="       ", subsequent_indent="       "))
    if p.software:
        out.append("  software:")
        out += [f"    {k}: {v}" for k, v in p.software]
    if p.notes:
        out.append("  notes:")
        for n in p.notes:
            out.append(textwrap.fill(n, 100, initial_indent="    - ", subsequent_indent="      "))
    hints = p.detect.to_dict()
    if hints:
        out.append("  detected by:  " + "; ".join(f"{k} {', '.join(v)}" for k, v in hints.items()))
    if p.sources:
        out.append("  sources:")
        out += [f"    - {s}" for s in p.sources]
    return "\n".join(out)


@profiles.command("show")
@click.argument("name")
@click.option("--profiles-dir", "profiles_dirs", multiple=True, type=click.Path(file_okay=False),
              help=_DIRS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the resolved profile as JSON.")
@click.pass_context
def show_cmd(ctx: click.Context, name: str, profiles_dirs: tuple[str, ...], as_json: bool) -> None:
    """Show one profile, with `extends:` resolved. NAME may also be a path to a .yaml file."""
    from ..profiles import load_profile
    prof = load_profile(name, _dirs(ctx, profiles_dirs))
    click.echo(json.dumps(prof.to_dict(), indent=2) if as_json else _render(prof))


def _host_lines(h: Any) -> list[str]:
    lines = [f"  arch:           {h.arch or 'unknown'}",
             f"  cpu:            {h.cpu_model or 'unknown'} ({h.vendor or 'unknown vendor'}), {h.cores} logical CPUs",
             f"  memory:         {h.memory_mb} MiB",
             f"  ML CPU flags:   {' '.join(h.ml_flags) or 'none found'}"]
    if h.board:
        lines.append(f"  board:          {h.board}")
    if h.tegra_release:
        lines.append(f"  Jetson Linux:   {h.tegra_release}")
    attached = sorted(h.usb_ids & {"1a6e:089a", "18d1:9302", "03e7:2485", "03e7:f63b"}) + sorted(h.dev_nodes)
    attached += [f"accel driver {d}" for d in sorted(h.accel_drivers)]
    if attached:
        lines.append(f"  accelerators:   {', '.join(attached)}")
    if h.root == "/" or h.backends or h.ort_providers or h.openvino_devices:
        lines.append(f"  ORT providers:  {', '.join(h.ort_providers) or 'none'}")
        names = dict(h.openvino_device_names)
        ov = [f"{d} ({names[d]})" if d in names else d for d in h.openvino_devices]
        lines.append(f"  OpenVINO:       {', '.join(ov) or 'none'}")
        lines.append(f"  EdgeSDK backends installed: {', '.join(h.backends) or 'none'}")
    for note in h.probe_notes:
        lines.append(f"  note: {note}")
    return lines


@click.command("detect")
@click.option("--profiles-dir", "profiles_dirs", multiple=True, type=click.Path(file_okay=False),
              help=_DIRS_HELP)
@click.option("--root", type=click.Path(exists=True, file_okay=False), default="/", show_default=True,
              help="Read proc/, sys/ and etc/ under this folder instead (a recorded copy of another machine).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def detect(ctx: click.Context, profiles_dirs: tuple[str, ...], root: str, as_json: bool) -> None:
    """Inspect this host and print the closest device profile, and why."""
    from ..hostinfo import closest_profile, detect_host
    from ..profiles import list_profiles
    host = detect_host(root)
    found = list_profiles(_dirs(ctx, profiles_dirs))
    error: Optional[ProfileError] = None
    try:
        prof, reasons = closest_profile(host, found)
    except ProfileError as exc:
        prof, reasons, error = None, [], exc
    runnable = prof.runnable_backends(host.backends) if prof is not None and host.backends else []
    if as_json:
        click.echo(json.dumps({
            "host": host.to_dict(), "profile": prof.name if prof else None, "reasons": reasons,
            "runnable_backends": [b.to_dict() for b in runnable],
            "error": str(error) if error else None}, indent=2))
    else:
        click.echo("host" + ("" if root == "/" else f" (recorded under {root})") + ":")
        click.echo("\n".join(_host_lines(host)))
        if prof is not None:
            click.echo(f"\nclosest profile: {prof.name}  ({prof.description})")
            click.echo("because:")
            click.echo("\n".join(f"  - {r}" for r in reasons))
            best = prof.best
            click.echo(f"\nprofile's first choice: {best.backend}/{best.device} {', '.join(best.precisions)} ({best.layout})")
            if runnable:
                click.echo("runnable here, best first: " +
                           "; ".join(f"{b.backend}/{b.device} {','.join(b.precisions)}" for b in runnable))
            elif host.backends:
                click.echo(f"none of the profile's backends is installed here (have: {', '.join(host.backends)})")
    if error is not None:
        raise error
