"""`edgesdk` command line: a thin layer over the library.

Each command group lives in its own module and is imported only when used, so
`edgesdk --help` stays fast on a device and a missing build-time extra never breaks
device commands.
"""
from __future__ import annotations

import importlib
import logging
import sys
from typing import Any, Optional

import click

from ..errors import EdgeSDKError

# command name -> "module:attribute" (relative to edgesdk.cli)
COMMANDS = {
    "profiles": "profiles:profiles",
    "detect": "profiles:detect",
    "info": "inspect:info",
    "predict": "inspect:predict",
    "bench": "inspect:bench",
    "convert": "convert:convert",
    "run": "run:run",
    "keygen": "device:keygen",
    "pack": "device:pack",
    "verify": "device:verify",
    "install": "device:install",
    "rollback": "device:rollback",
    "status": "device:status",
    "uninstall": "device:uninstall",
    "provision": "device:provision",
}
COMMANDS.update({c: f"fleet:{c.replace('-', '_')}" for c in ("push", "pull", "install", "provision", "mender-artifact", "mender-setup", "canary")})


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        if name in self.commands:
            return self.commands[name]
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(__name__):
                return None  # command not built yet
            raise
        return getattr(mod, attr, None)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="edgesdk")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int) -> None:
    """EdgeSDK: convert a model for an edge device, run it on cameras, keep it running."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: Optional[list[str]] = None) -> Any:
    """Entry point: EdgeSDK errors become one paragraph and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        rv = cli.main(args=args, prog_name="edgesdk", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except EdgeSDKError as exc:
        if debug:
            raise
        # one paragraph, whatever the message holds (a YAML parser's caret lines, an engine's trace)
        click.echo("error: " + " ".join(str(exc).split()), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug of ours or an engine's: still one paragraph and a non-zero exit
        if debug:
            raise
        text = " ".join(str(exc).split())[:300]
        click.echo(f"error: internal error ({type(exc).__name__}: {text}); rerun with --debug for the "
                   "traceback and report it", err=True)
        sys.exit(1)
    # standalone_mode=False hands a command's return value back instead of exiting with it
    sys.exit(rv if isinstance(rv, int) else 0)
