"""Peak resident memory of a piece of work, for the benchmarks (Linux)."""

from __future__ import annotations

from collections.abc import Callable


def proc_status_mib(field: str) -> float:
    """A memory figure (``VmRSS``, ``VmHWM``) of this process from /proc/self/status, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_growth_mib(fn: Callable[[], object]) -> float:
    """Peak resident set growth (MiB) while ``fn`` runs: the kernel's peak mark (``VmHWM``) is
    reset to the current RSS through ``/proc/self/clear_refs`` first, so the figure is the
    work's own memory (what existed before excluded; what it allocates and keeps included)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = proc_status_mib("VmRSS")
    fn()
    return proc_status_mib("VmHWM") - base
