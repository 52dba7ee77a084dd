"""The ``--executor``, ``--ray-address``, ``--chunk-size`` and ``--workers`` flags shared by
``splatfx render``, ``refine``, ``comp`` and ``run``: they override ``[farm]`` in shot.toml
for one run (see :mod:`splatfx.shot.farm` and docs/robustness.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from splatfx.shot.farm import with_farm

__all__ = ["farm_options", "with_farm"]

F = TypeVar("F", bound=Callable)


def farm_options(command: F) -> F:
    """Add the farm flags to a click command; it receives them as keyword arguments."""
    flags = [
        click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
                     help="Where frames are computed: local processes or a Ray cluster (overrides [farm] executor; "
                          "default local)."),
        click.option("--ray-address", default=None, metavar="ADDR",
                     help="Ray cluster to join, e.g. 10.0.0.5:6379 (overrides [farm] ray_address; default: "
                          "RAY_ADDRESS, else a cluster from `ray start` on this machine, else a new local one)."),
        click.option("--chunk-size", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Frames per chunk sent to a worker (overrides [farm] chunk_size; default: about four "
                          "chunks per worker)."),
        click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Local worker processes, or chunks in flight on Ray (overrides [farm] workers; default: "
                          "1 locally, in this process; the cluster's CPUs on Ray)."),
    ]
    for flag in reversed(flags):
        command = flag(command)
    return command
