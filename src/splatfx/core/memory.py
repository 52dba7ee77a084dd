"""Bounds from cost: refuse settings whose estimated memory would not fit, before the work.

A stage lists what its settings cost (:class:`MemoryCost`: bytes per unit of a setting,
and how many units) and calls :func:`require_memory` first, so a setting such as
``debris = 1000000000`` is a one-line :class:`~splatfx.core.errors.ConfigError` naming the
setting and the largest value that fits, instead of the kernel killing the process.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from dataclasses import dataclass

from splatfx.core.errors import ConfigError

#: The share of the available memory a stage's estimate may take (the estimate is rough,
#: and the process and the machine need the rest).
USABLE_FRACTION = 0.8


@dataclass(frozen=True)
class MemoryCost:
    """``value`` units of the setting ``name`` (a full label: ``shot.toml [fx.collapse] debris``)
    at ``bytes_per_unit`` bytes each."""

    name: str
    value: int | float
    bytes_per_unit: float

    @property
    def bytes(self) -> float:
        return float(self.value) * self.bytes_per_unit


def available_memory() -> int:
    """Bytes this process can still allocate: the system's available memory (MemAvailable),
    and no more than its own address-space limit (RLIMIT_AS) leaves."""
    available = _mem_available()
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft != resource.RLIM_INFINITY:
        available = min(available, max(soft - _address_space(), 0))
    return available


def require_memory(costs: Sequence[MemoryCost], fixed: float = 0.0, what: str = "this stage") -> float:
    """The estimated bytes of ``costs`` plus ``fixed``; ConfigError when they exceed
    :data:`USABLE_FRACTION` of :func:`available_memory`, naming the costliest setting and
    the largest value of it that fits with the others as they are."""
    total = fixed + sum(c.bytes for c in costs)
    budget = USABLE_FRACTION * available_memory()
    if total <= budget or not costs:
        return total
    worst = max(costs, key=lambda c: c.bytes)
    room = max(budget - (total - worst.bytes), 0.0)
    units = room / worst.bytes_per_unit if worst.bytes_per_unit > 0 else 0.0
    largest = str(int(units)) if isinstance(worst.value, int) else f"{0.999 * units:.3g}"
    raise ConfigError(worst.name, f"{worst.value} would need about {_gib(total)} of memory for {what}, more than "
                                  f"the {_gib(budget)} available; the largest value that fits is {largest}")


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _mem_available() -> int:
    """MemAvailable of /proc/meminfo, or the free physical pages where there is none."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 2**63 - 1  # unknown: do not refuse


def _address_space() -> int:
    """This process's current virtual size (bytes), for the room left under RLIMIT_AS."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
