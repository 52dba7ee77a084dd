"""The size training works at: the plates' own, or smaller when the time budget asks for it.

A training step on a CPU costs time in proportion to its pixels (rasterizer, loss) and its
Gaussians (projection, optimiser), so a 12-MP still trained at full size makes a handful of
steps in a few minutes and learns nothing. With ``[train] downscale = "auto"`` training
predicts the seconds per step at each candidate size from a cost model measured on a small
CPU machine (``python benchmarks/train.py --working-size``; table in docs/train.md) and
trains at the largest size that still buys :data:`TARGET_STEPS` steps (or ``max_steps``,
when fewer) inside ``max_minutes``, never upsampling and never below :data:`FLOOR_PX` on
the long side. A number forces that factor.

The choice is a pure function of the plates and the settings, not of a timing taken at
start, so a resumed run and a re-run choose the same size (see docs/train.md, "Working size").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

#: Steps a time budget should buy: below ~2,000 a 3DGS scene has hardly densified.
TARGET_STEPS = 2_000
#: The smallest long side training is brought down to: smaller loses the scene's detail.
FLOOR_PX = 384
#: Downscale factors tried, largest size first (1.5 fills the big gap between 1 and 2).
FACTORS = (1.0, 1.5, *map(float, range(2, 65)))

Device = Literal["cpu", "cuda"]


@dataclass(frozen=True)
class StepCost:
    """Seconds per training step: ``fixed + per_mpx·megapixels + per_100k·(Gaussians / 100k)``,
    plus the one-off decoding of each plate at full size (``decode_per_mpx`` per megapixel)."""

    fixed: float
    per_mpx: float
    per_100k: float
    decode_per_mpx: float

    def step_seconds(self, pixels: int, gaussians: int) -> float:
        return self.fixed + self.per_mpx * pixels / 1e6 + self.per_100k * gaussians / 1e5

    def decode_seconds(self, plate_pixels: int, plates: int) -> float:
        return self.decode_per_mpx * plate_pixels / 1e6 * plates


#: A quiet 2-core machine, with the fused CPU loss: fitted to the steps `benchmarks/train.py
#: --working-size` measures on south_building_full's plates at 384 to 1536 px (the per-megapixel
#: slope from 384 to 3072 px, which keeps the middle sizes on the safe side; docs/train.md).
CPU_COST = StepCost(fixed=0.016, per_mpx=0.25, per_100k=0.145, decode_per_mpx=0.02)
#: gsplat on a GPU (not measured here: gsplat's published 3DGS timings, ~40 ms a step at
#: 1.5 MP and 3M Gaussians on an A100); it keeps every usual plate at full size.
CUDA_COST = StepCost(fixed=0.010, per_mpx=0.010, per_100k=0.0005, decode_per_mpx=0.02)
COSTS: dict[str, StepCost] = {"cpu": CPU_COST, "cuda": CUDA_COST}


@dataclass(frozen=True)
class WorkingSize:
    """What training works at and why: recorded in metrics.json and the manifest."""

    plate_size: tuple[int, int]
    size: tuple[int, int]
    downscale: float
    reason: str
    steps: int  # steps expected: max_steps, or what the time budget buys at this size
    seconds_per_step: float  # the cost model's prediction at this size
    gaussians: int  # the Gaussian count the prediction assumed

    @property
    def full_size(self) -> bool:
        return self.size == self.plate_size

    def line(self, max_minutes: float | None) -> str:
        """``training at 768x576 (plates 3072x2304 ÷ 4), ~2,000 steps in 2.5 min``."""
        (w, h), (pw, ph) = self.size, self.plate_size
        scale = "the plates' full size" if self.full_size else f"plates {pw}x{ph} ÷ {self.downscale:g}"
        if max_minutes is None:
            hours = self.steps * self.seconds_per_step / 3600
            when = f"about {hours:.1f} h" if hours >= 1 else f"about {hours * 60:.0f} min"
            return f"training at {w}x{h} ({scale}), {self.steps:,} steps in {when} (no time limit)"
        return f"training at {w}x{h} ({scale}), ~{self.steps:,} steps in {max_minutes:g} min"

    def to_dict(self) -> dict[str, object]:
        return {"plate_size": list(self.plate_size), "size": list(self.size), "downscale": self.downscale,
                "reason": self.reason, "expected_steps": self.steps,
                "expected_seconds_per_step": round(self.seconds_per_step, 4), "gaussians": self.gaussians}


def scaled_size(plate_size: tuple[int, int], downscale: float) -> tuple[int, int]:
    """The image size at ``downscale`` (as :func:`splatfx.io.dataset.load_dataset` makes it)."""
    w, h = plate_size
    return max(1, round(w / downscale)), max(1, round(h / downscale))


def choose_working_size(plate_size: tuple[int, int], *, downscale: float | str, max_steps: int,
                        max_minutes: float | None, gaussians: int, plates: int = 1,
                        device: Device = "cpu", cost: StepCost | None = None) -> WorkingSize:
    """The size to train at for plates of ``plate_size`` (w, h).

    ``downscale`` "auto" chooses (see the module's docstring); a number forces it.
    ``gaussians`` is the count the run is expected to work with (its cap or its start),
    ``plates`` the number of training plates (decoded once each at full size).
    """
    cost = cost or COSTS[device]
    budget = None if max_minutes is None else max_minutes * 60.0 - cost.decode_seconds(
        plate_size[0] * plate_size[1], plates)

    def option(factor: float, reason: str) -> WorkingSize:
        size = scaled_size(plate_size, factor)
        seconds = cost.step_seconds(size[0] * size[1], gaussians)
        steps = max_steps if budget is None else min(max_steps, max(0, math.floor(budget / seconds)))
        return WorkingSize(plate_size, size, factor, reason, steps, seconds, gaussians)

    if downscale != "auto":
        return option(float(downscale), f"set: [train] downscale = {float(downscale):g}")
    if budget is None:
        return option(1.0, "auto: no time limit, so the plates' full size")
    wanted = min(max_steps, TARGET_STEPS)
    allowed = [f for f in FACTORS if f == 1.0 or max(scaled_size(plate_size, f)) >= FLOOR_PX]
    for factor in allowed:
        choice = option(factor, "")
        if choice.steps >= wanted:
            why = ("auto: full size buys" if factor == 1.0 else "auto: the largest size that buys")
            return option(factor, f"{why} {wanted:,} steps in {max_minutes:g} min")
    return option(allowed[-1], f"auto: the {FLOOR_PX} px floor (a size buying {wanted:,} steps in "
                               f"{max_minutes:g} min would lose the scene's detail)")
