"""The training recipe the machine can afford: schedule length and Gaussian cap.

3DGS's recipe (30,000 steps, up to millions of Gaussians) is made for a GPU. On a CPU with a
time budget the same schedule is never finished: a 10-minute run on lego makes ~6,000 of its
30,000 steps, so it densifies until the budget ends and never decays its learning rate.

With ``[train] max_steps = "auto"`` (the default) and a time limit on a CPU, the schedule is
laid over the **clock** instead: densification, opacity resets, SH degrees and the learning
rate's decay happen at fixed fractions of ``max_minutes`` (3DGS's fractions of its 30,000
steps, over :data:`CLOCK_SPAN` × the budget), so the run reaches the same point of its
schedule at the limit however fast the machine turns out to be. (Measured on lego_200 in 10
minutes: 33.04 dB against 32.43 dB with the 30,000-step schedule; docs/train.md.) The cost
model's prediction of the steps the budget buys (:mod:`splatfx.recon.working_size`) only sets
the nominal length the schedule's steps are counted in and the progress bar's total.

``max_gaussians = "auto"`` caps the scene where a step at the working size would leave the
budget :data:`STEPS_AT_CAP` steps, so densification cannot slow the run to a crawl.

A GPU, or a run without a time limit, keeps the 3DGS recipe. A number set for either key is
taken as it is; a ``max_steps`` that is set is counted in steps (and still cut at the limit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from splatfx.recon.working_size import COSTS, Device, StepCost, WorkingSize

#: The 3DGS schedule's length (densify until 15k, reset opacity every 3k, SH every 1k).
REFERENCE_STEPS = 30_000
#: The 3DGS recipe's bound on the scene's size.
FULL_GAUSSIANS = 1_000_000
#: Steps a budget must still buy with the scene at its automatic cap.
STEPS_AT_CAP = 1_000
#: A clock schedule spans this many times the budget, which ends it at 1/SPAN of its course:
#: densifying over 70 % of the budget and ending with the learning rate at 1/25 of its start
#: rather than 1/100. On lego_200 in 10 minutes: 33.04 dB at 1.4, 32.90 dB at 1.0 (docs/train.md).
CLOCK_SPAN = 1.4

Auto = Literal["auto"]


@dataclass(frozen=True)
class Recipe:
    """What a run trains with, and why: printed before training and recorded in metrics.json."""

    max_steps: int  # the schedule's length in steps (its nominal length when it follows the clock)
    max_gaussians: int
    clock: bool  # the schedule follows max_minutes rather than the step count
    reason: str
    span: float = 1.0  # with the clock: the schedule covers span × max_minutes, the run ends at max_minutes

    def line(self, strategy: str, max_minutes: float | None) -> str:
        """``recipe: ADC, the 3DGS schedule over 1.4 × 10 min, cut at 10, ≤ 395,862 Gaussians (…)``."""
        if self.clock:
            schedule = f"the 3DGS schedule over {self.span:g} × {max_minutes:g} min, cut at {max_minutes:g}"
        else:
            schedule = f"{self.max_steps:,} steps"
        return f"recipe: {strategy.upper()}, {schedule}, ≤ {self.max_gaussians:,} Gaussians ({self.reason})"

    def to_dict(self) -> dict[str, object]:
        return {"max_steps": self.max_steps, "max_gaussians": self.max_gaussians, "clock": self.clock,
                "span": self.span, "reason": self.reason}


def gaussians_affordable(working: WorkingSize, max_minutes: float, cost: StepCost) -> int:
    """The most Gaussians at which a step at ``working.size`` still leaves ``max_minutes`` buying
    :data:`STEPS_AT_CAP` steps, by the cost model; never below the count the working size assumed."""
    pixels = working.size[0] * working.size[1]
    seconds = max_minutes * 60.0 / STEPS_AT_CAP - cost.step_seconds(pixels, 0)
    affordable = int(seconds / cost.per_100k * 1e5) if cost.per_100k > 0 else FULL_GAUSSIANS
    return min(FULL_GAUSSIANS, max(working.gaussians, affordable))


def choose_recipe(*, max_steps: int | Auto, max_gaussians: int | Auto, max_minutes: float | None,
                  working: WorkingSize, device: Device) -> Recipe:
    """The schedule and cap for a run (see the module's docstring); ``working`` is its working
    size, chosen for :data:`REFERENCE_STEPS` when ``max_steps`` is "auto"."""
    budgeted = device == "cpu" and max_minutes is not None
    if max_steps != "auto":
        steps, clock = int(max_steps), False
    elif budgeted:
        steps, clock = max(1, working.steps), True
    else:
        steps, clock = REFERENCE_STEPS, False
    if max_gaussians != "auto":
        cap = int(max_gaussians)
    elif budgeted:
        assert max_minutes is not None
        cap = gaussians_affordable(working, max_minutes, COSTS[device])
    else:
        cap = FULL_GAUSSIANS
    if not budgeted:
        reason = "the 3DGS recipe: a GPU" if device == "cuda" else "the 3DGS recipe: no time limit"
    else:
        reason = "a CPU with a time limit"
    if max_steps != "auto" and max_gaussians != "auto":
        reason = "set in [train]"
    return Recipe(steps, cap, clock, reason, CLOCK_SPAN if clock else 1.0)
