"""The ``splatfx`` command line.

Each stage or tool lives in its own module under :mod:`splatfx.commands` and exposes
a click command (or group) named ``command``; this file only assembles them and turns
errors into one clear line (``--debug`` shows the traceback).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback

import click

from splatfx import __version__
from splatfx.core.errors import SplatfxError

# Modules under splatfx.commands whose ``command`` is added to the CLI, in help order.
COMMAND_MODULES = ["init", "solve", "train", "eval", "render", "fx", "refine", "comp", "run", "demo", "view", "ply", "export"]


class _Group(click.Group):
    """A group that loads subcommands lazily, so ``splatfx --help`` stays fast."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [_command_name(m) for m in _available_modules()]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        for module in _available_modules():
            if _command_name(module) == name:
                return importlib.import_module(f"splatfx.commands.{module}").command
        return None


def _command_name(module: str) -> str:
    return module.rstrip("_").replace("_", "-")


def _available_modules() -> list[str]:
    found = []
    for module in COMMAND_MODULES:
        if importlib.util.find_spec(f"splatfx.commands.{module}") is not None:
            found.append(module)
    return found


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the full traceback when something fails.")
@click.version_option(__version__, prog_name="splatfx")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """splatfx: reconstruct footage as Gaussian splats, destroy it, render and composite it back."""
    ctx.obj = {"debug": debug}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: run the CLI, report errors as one line."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        status = cli.main(args=argv, prog_name="splatfx", standalone_mode=False)
        if isinstance(status, int) and status:
            sys.exit(status)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SplatfxError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence for users
        if debug:
            traceback.print_exc()
        click.echo(f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for details)", err=True)
        sys.exit(2)
