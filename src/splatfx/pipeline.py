"""``splatfx run``: every stage of a shot that is not up to date, in pipeline order.

::

    solve ─▶ train ─▶ fx (select, then [fx] effects in order) ─▶ render ─▶ refine ─▶ comp

Each stage is the same function its own command runs (``splatfx solve``, ``train``, …),
so it skips itself when its inputs and settings did not change (see :mod:`splatfx.shot.runner`)
and resumes where an interrupted run stopped. The pipeline adds only the order and the
choices between stages:

* **fx**: ``fx.select`` runs when an effect needs a selection (collapse); then each effect
  of ``[fx] effects``, in the order listed. No effects: the scene is rendered as it is.
* **refine** runs only when ``[refine] model`` is set. When it names the built-in
  refiner's folder (``refine/model``), that model is trained on the shot first, as
  ``[refine] train_*`` say (``refine-train``, itself skipped while the scene, the solve and
  those settings are unchanged).
* **comp** composites over the plates; for a virtual camera (``[render] camera =
  "virtual"``), whose frames do not match the plates, it writes the fully synthetic
  shot instead (:mod:`splatfx.comp.virtual`).

At the end it prints a table of the stages (ran or up to date, seconds, the size each
worked at: ``768x576 (proxy 0.25 of 3072x2304)`` at a proxy) and where the outputs are.
``[shot] proxy`` (or ``--proxy``) renders, refines and comps at a fraction of full size
into ``proxy/<proxy>/``, beside the full-size frames (:meth:`~splatfx.shot.folder.Shot.proxy_dir`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from splatfx.core.errors import InputError
from splatfx.shot.folder import PROXY_MARK, Shot, describe_size
from splatfx.shot.runner import StageResult

#: The pipeline's steps, in order (``until`` names one of them).
STEPS = ("solve", "train", "fx", "render", "refine", "comp")
#: Effects that act on the ``[fx.select]`` selection (``fx.select`` runs before them).
NEEDS_SELECTION = frozenset({"collapse"})

_console = Console(stderr=True, highlight=False)


@dataclass(frozen=True)
class StepTiming:
    """One stage of a pipeline run: whether it ran, why, its wall time in seconds (the
    stage's own record when it ran; the up-to-date check when skipped) and the size it
    worked at, as its record states it (e.g. ``768x576 (proxy 0.25 of 3072x2304)``)."""

    stage: str
    ran: bool
    reason: str
    seconds: float
    size: str | None = None


@dataclass
class PipelineRun:
    """What :func:`run_shot` did: per-stage timings, the total, and the outputs present."""

    shot: Shot
    stages: list[StepTiming] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ran(self) -> list[str]:
        return [s.stage for s in self.stages if s.ran]

    def outputs(self) -> dict[str, Path]:
        """The shot's deliverables that exist now, by label."""
        return {label: path for label, path in shot_outputs(self.shot).items() if path.exists()}


def shot_outputs(shot: Shot) -> dict[str, Path]:
    """Where each deliverable of a shot lives (whether or not it exists yet); a virtual
    camera's shot has no review movie (no plate to show beside it)."""
    outputs = {"scene": shot.scene_ply, "render frames (EXR passes)": shot.render_dir}
    if shot.config.refine.model is not None:
        outputs["refined frames"] = shot.refine_dir
    comp = shot.comp_dir
    outputs |= {"comp frames": comp, "shot movie": comp / "shot.mp4", "contact sheet": comp / "contact_sheet.png"}
    if shot.config.render.camera != "virtual":
        outputs["review movie (plate | comp)"] = comp / "review.mp4"
    outputs["manifest"] = shot.manifest_path
    return outputs


def planned_steps(shot: Shot, until: str | None = None, start: str | None = None) -> list[str]:
    """The steps :func:`run_shot` takes for ``shot``, from ``start`` up to and including ``until``."""
    for name, value in (("until", until), ("start", start)):
        if value is not None and value not in STEPS:
            raise InputError(shot.toml_path, f"unknown stage {value!r} for {name}; choose one of {', '.join(STEPS)}")
    first = STEPS.index(start) if start else 0
    steps = list(STEPS[first: STEPS.index(until) + 1] if until else STEPS[first:])
    if shot.config.refine.model is None and "refine" in steps:
        steps.remove("refine")
    return steps


def run_shot(shot: Shot, *, force: bool = False, until: str | None = None, start: str | None = None,
             summary: bool = True) -> PipelineRun:
    """Run every stage of ``shot`` that is not up to date, in order, up to ``until``.

    ``force`` reruns every stage; ``start`` skips the steps before it (the caller has just
    run them). With ``summary`` the per-stage table and the outputs are printed at the end, also after
    a failure; a failing stage raises (its failure is in the manifest).
    """
    run = PipelineRun(shot)
    t0 = time.perf_counter()
    steps: dict[str, Callable[[], Sequence[StageResult]]] = {
        "solve": lambda: _solve(shot, force),
        "train": lambda: _train(shot, force),
        "fx": lambda: _fx(shot, force),
        "render": lambda: _render(shot, force),
        "refine": lambda: _refine(shot, force),
        "comp": lambda: _comp(shot, force),
    }
    try:
        for step in planned_steps(shot, until, start):
            started = time.perf_counter()
            results = steps[step]()
            run.stages.extend(_timings(results, time.perf_counter() - started))
    finally:
        run.seconds = time.perf_counter() - t0
        if summary:
            print_summary(run)
    return run


# --- the steps -------------------------------------------------------------------------------------

def _solve(shot: Shot, force: bool) -> list[StageResult]:
    from splatfx.recon.solve import run_orient, run_solve

    return [run_solve(shot, force=force), run_orient(shot, force=force)]


def _train(shot: Shot, force: bool) -> list[StageResult]:
    from splatfx.recon.train import run_train

    return [run_train(shot, force=force)]


def _fx(shot: Shot, force: bool) -> list[StageResult]:
    from splatfx.fx.stage import run_collapse, run_select, run_snow

    effects = shot.config.fx.effects
    runners = {"collapse": run_collapse, "snow": run_snow}
    results = []
    if NEEDS_SELECTION & set(effects):
        results.append(run_select(shot, force=force))
    for effect in effects:
        results.append(runners[effect](shot, force=force))
    return results


def _render(shot: Shot, force: bool) -> list[StageResult]:
    from splatfx.render.stage import run_render

    return [run_render(shot, force=force)]


def _refine(shot: Shot, force: bool) -> list[StageResult]:
    """The built-in refiner's training (when ``[refine] model`` is its folder), then refine;
    both take their settings from ``[refine]``."""
    from splatfx.refine.stage import builtin_model_dir, run_refine, run_refine_train

    results = []
    model = shot.path(shot.config.refine.model)
    if model.resolve() == builtin_model_dir(shot).resolve():
        results.append(run_refine_train(shot, force=force))
    results.append(run_refine(shot, force=force))
    return results


def _comp(shot: Shot, force: bool) -> list[StageResult]:
    from splatfx.comp.stage import run_comp

    return [run_comp(shot, force=force)]


# --- reporting -------------------------------------------------------------------------------------

def _timings(results: Sequence[StageResult], wall: float) -> list[StepTiming]:
    """Per-stage timings; a skipped stage's share of ``wall`` is what its check cost."""
    ran_seconds = sum(r.record.seconds for r in results if r.ran and r.record and r.record.seconds)
    skipped = [r for r in results if not r.ran]
    check = max(wall - ran_seconds, 0.0) / len(skipped) if skipped else 0.0
    return [StepTiming(r.stage, r.ran, r.reason,
                       float(r.record.seconds) if r.ran and r.record and r.record.seconds else check,
                       describe_size(r.record.figures or {}) if r.record else None)
            for r in results]


def print_summary(run: PipelineRun, console: Console = _console) -> None:
    """The per-stage table and the outputs, as ``splatfx run`` and ``splatfx demo`` show them."""
    console.print(f"[bold]shot {run.shot.name}[/]: {len(run.ran)} of {len(run.stages)} stages ran "
                  f"({run.shot.root})")
    table = Table()
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("size")
    for s in run.stages:
        table.add_row(s.stage.partition(PROXY_MARK)[0], "ran" if s.ran else "up to date", f"{s.seconds:.1f}",
                      s.size or "")
    table.add_row("total", "", f"{run.seconds:.1f}", "", style="bold")
    console.print(table)
    outputs = run.outputs()
    if outputs:
        console.print("[bold]outputs[/]")
        width = max(len(label) for label in outputs)
        for label, path in outputs.items():
            console.print(f"  {label.ljust(width)}  {path}")
