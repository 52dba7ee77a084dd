"""``splatfx ply info|lint|convert``: inspect, check and convert Gaussian files.

Works on the 3DGS PLY (INRIA layout), ``.splat`` and ``.spz``; the format is taken
from the file extension. See docs/formats.md for conventions and tolerances.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from splatfx.io.formats import describe, format_of, read_arrays, read_gaussians, write_gaussians
from splatfx.io.formats.ply import LintReport, lint as lint_file
from splatfx.core.gaussians import Gaussians

PATH = click.Path(dir_okay=False, path_type=Path)


@click.group(name="ply")
def command() -> None:
    """Inspect, check and convert Gaussian files (.ply, .splat, .spz)."""


@command.command()
@click.argument("file", type=PATH)
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
def info(file: Path, as_json: bool) -> None:
    """Count, SH degree, extra channels, bounds, size and format of FILE."""
    facts = file_info(file)
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    bounds = facts["bounds"]
    box = "  ".join(f"{axis} [{lo:.4g}, {hi:.4g}]" for axis, lo, hi in zip("xyz", bounds["min"], bounds["max"])) \
        if bounds else "(no finite positions)"
    extras = ", ".join(f"{name}{'' if not shape else f' ×{shape[0]}'}" for name, shape in facts["extras"].items())
    rows = [
        ("file", facts["path"]),
        ("format", facts["format"]),
        ("size", f"{facts['size_bytes']:,} bytes"),
        ("gaussians", f"{facts['count']:,}"),
        ("sh degree", str(facts["sh_degree"])),
        ("extras", extras or "(none)"),
        ("bounds", box),
    ]
    for key, value in rows:
        click.echo(f"{key:<10} {value}")


def file_info(path: Path) -> dict:
    """What ``ply info`` reports, as plain data. Values are not validated, so a file with
    NaNs or zero quaternions can still be inspected (``ply lint`` says what is wrong)."""
    arrays = read_arrays(path)
    finite = arrays.means[np.isfinite(arrays.means).all(axis=1)]
    bounds = {"min": finite.min(axis=0).tolist(), "max": finite.max(axis=0).tolist()} if len(finite) else None
    return {
        "path": str(path),
        "format": describe(path),
        "size_bytes": path.stat().st_size,
        "count": len(arrays),
        "sh_degree": arrays.sh_degree,
        "extras": {name: list(value.shape[1:]) for name, value in arrays.extras.items()},
        "bounds": bounds,
    }


@command.command()
@click.argument("file", type=PATH)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def lint(file: Path, as_json: bool) -> None:
    """Report NaN/Inf values, absurd scales, bad quaternions and opacities, truncation.

    Exits with status 1 when any error is found (warnings alone exit 0).
    """
    format_of(file)  # unknown extensions are a usage error, not a lint finding
    report = lint_file(file)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))
    if not report.ok:
        sys.exit(1)  # SystemExit, not ctx.exit: the code must survive non-standalone click


def format_report(report: LintReport) -> str:
    """The lint report as lines of text: one per issue, then a summary."""
    read = f"{report.read:,}" + ("" if report.declared in (None, report.read) else f" of {report.declared:,} declared")
    lines = [f"{report.path}: {report.format}, {read} Gaussians, SH degree {report.sh_degree}"]
    lines += [f"  {issue.severity:<7} {issue.code:<18} {issue.message}" for issue in report.issues]
    errors = _count(len(report.errors), "error")
    warnings = _count(len(report.issues) - len(report.errors), "warning")
    lines.append(f"{errors}, {warnings}" if not report.ok else "ok" + (f" ({warnings})" if report.issues else ""))
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@command.command()
@click.argument("source", type=PATH)
@click.argument("target", type=PATH)
@click.option("--sh-degree", type=click.IntRange(0, 3), default=None, help="Lower the SH degree to this.")
def convert(source: Path, target: Path, sh_degree: int | None) -> None:
    """Convert SOURCE to TARGET (.ply, .splat, .spz, chosen by extension)."""
    format_of(target)
    gaussians = read_gaussians(source)
    if sh_degree is not None:
        if sh_degree > gaussians.sh_degree:
            raise click.BadParameter(
                f"{source} has SH degree {gaussians.sh_degree}; it can only be lowered", param_hint="--sh-degree")
        gaussians = gaussians.replace(sh=gaussians.sh[:, : (sh_degree + 1) ** 2].contiguous())
    for note in _losses(gaussians, format_of(target)):
        click.echo(f"note: {note}", err=True)
    write_gaussians(gaussians, target)
    click.echo(f"wrote {target}: {len(gaussians):,} Gaussians, {target.stat().st_size:,} bytes")


def _losses(gaussians: Gaussians, target_format: str) -> list[str]:
    """What the target format cannot hold."""
    notes = []
    if target_format == "splat" and gaussians.sh_degree > 0:
        notes.append(f".splat keeps colour only: SH degree {gaussians.sh_degree} is reduced to 0")
    if target_format != "ply" and gaussians.extras:
        notes.append(f".{target_format} has no extra channels: dropping {', '.join(gaussians.extras)}")
    if target_format != "ply":
        notes.append(f".{target_format} is quantised: see docs/formats.md for the precision kept")
    return notes
