"""Densification strategies: how the set of Gaussians grows, shrinks and moves while training.

Two strategies, each a small configuration object with its running state kept apart in
an explicit state object (so checkpoints can save and restore it):

- :class:`ADCStrategy`, the adaptive density control of the 3DGS paper: Gaussians whose
  screen-space position gradient (averaged over the views that saw them) is large are
  cloned when small and split in two when large; nearly transparent or huge ones are
  pruned; opacities are periodically reset so that occluders can be re-learned.
- :class:`MCMCStrategy`, from "3D Gaussian Splatting as Markov Chain Monte Carlo":
  dead (transparent) Gaussians are relocated onto live ones drawn in proportion to
  opacity, with opacity and scale corrected so the rendered image stays the same; new
  ones are added the same way up to a cap; every step positions are perturbed with noise
  shaped by each Gaussian's covariance and gated by its transparency; opacity and scale
  are regularised.

Parameters live in a ``dict[str, torch.nn.Parameter]`` with the keys ``means`` (N,3),
``quats`` (N,4), ``scales`` (N,3, log), ``opacities`` (N, logits), ``sh0`` (N,1,3) and
``shN`` (N,K-1,3), optimised by one Adam whose param groups are named after them. The
functions here change the parameters and the Adam moments together; moments of new or
moved Gaussians start at zero. All randomness comes from a ``torch.Generator`` the caller
owns, so a run is reproducible and resumable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable, Protocol

import torch
from torch import Tensor

Params = dict[str, torch.nn.Parameter]

# --- parameter surgery ---------------------------------------------------------------------


def _group(optimizer: torch.optim.Optimizer, name: str) -> dict:
    for group in optimizer.param_groups:
        if group.get("name") == name:
            return group
    raise KeyError(f"optimizer has no param group named {name!r}")


@torch.no_grad()
def update_params(
    params: Params,
    optimizer: torch.optim.Optimizer,
    param_fn: Callable[[str, Tensor], Tensor],
    moment_fn: Callable[[Tensor], Tensor],
    names: list[str] | None = None,
) -> None:
    """Replace ``params[name]`` by ``param_fn(name, value)`` and each Adam moment by ``moment_fn``.

    The new tensors become fresh leaf Parameters registered in the optimizer's group of
    the same name; Adam's step counter is kept.
    """
    for name in names or list(params):
        old = params[name]
        new = torch.nn.Parameter(param_fn(name, old.detach()), requires_grad=old.requires_grad)
        params[name] = new
        group = _group(optimizer, name)
        group["params"] = [new]
        state = optimizer.state.pop(old, None)
        if state:
            optimizer.state[new] = {k: (v if k == "step" else moment_fn(v)) for k, v in state.items()}


def append_gaussians(params: Params, optimizer: torch.optim.Optimizer, new: dict[str, Tensor]) -> None:
    """Add Gaussians (values per parameter name) at the end, with zero Adam moments."""
    n_new = next(iter(new.values())).shape[0]

    def moments(v: Tensor) -> Tensor:
        return torch.cat([v, v.new_zeros((n_new, *v.shape[1:]))])

    update_params(params, optimizer, lambda name, p: torch.cat([p, new[name].to(p)]), moments)


def keep_gaussians(params: Params, optimizer: torch.optim.Optimizer, keep: Tensor) -> None:
    """Keep only the Gaussians selected by the boolean mask or index tensor ``keep``."""
    update_params(params, optimizer, lambda name, p: p[keep], lambda v: v[keep])


def reset_moments(params: Params, optimizer: torch.optim.Optimizer, index: Tensor) -> None:
    """Zero the Adam moments of the Gaussians at ``index`` (in place)."""
    for name, p in params.items():
        for key, v in optimizer.state.get(p, {}).items():
            if key != "step":
                v[index] = 0


def rotation_matrices(quats: Tensor) -> Tensor:
    """Rotation matrices (N,3,3) of wxyz quaternions (N,4), normalised first."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)


# --- the strategy interface -------------------------------------------------------------------


@dataclass
class StepInfo:
    """What a training step tells a strategy: the renderer's meta, the means' learning rate and
    where the step stands on the schedule.

    Schedules (``refine_start``, ``refine_stop``, ``reset_every``) are in schedule steps. A
    step-counted run stands at its own number; a run whose schedule follows the clock
    (:mod:`splatfx.recon.recipe`) stands where the time spent puts it, ``at``, having stood at
    ``before`` one step earlier, so an event fires when the run crosses its position. The
    refinement cadence (``refine_every``) always counts real steps: gradient statistics must
    average over several views.
    """

    meta: dict
    means_lr: float
    at: float | None = None  # None: the step's own number
    before: float | None = None  # None: one step earlier

    def position(self, step: int) -> tuple[float, float]:
        """(before, at) of step ``step`` on the schedule."""
        at = float(step) if self.at is None else self.at
        return (at - 1.0 if self.before is None else self.before), at


def crossed(before: float, at: float, every: int) -> bool:
    """Whether moving from ``before`` to ``at`` passes a positive multiple of ``every``
    (for whole steps: ``at % every == 0``)."""
    return at >= every and math.floor(at / every) > math.floor(before / every)


class StrategyState(Protocol):
    def tensors(self) -> dict[str, Tensor]: ...


class Strategy(Protocol):
    """A densification strategy: configuration only; its running state is separate."""

    def initial_state(self, n: int, scene_scale: float) -> "StrategyState": ...

    def state_from_tensors(self, tensors: dict[str, Tensor], scene_scale: float) -> "StrategyState": ...

    def regularizer(self, params: Params) -> Tensor | None: ...

    def before_backward(self, info: StepInfo) -> None: ...

    def after_step(self, params: Params, optimizer: torch.optim.Optimizer, state: "StrategyState", step: int,
                   info: StepInfo, generator: torch.Generator) -> dict[str, int]: ...


def _retain_means2d_grad(info: StepInfo) -> None:
    means2d = info.meta["means2d"]
    if means2d.requires_grad:
        means2d.retain_grad()


# --- adaptive density control (3DGS) ----------------------------------------------------------


@dataclass
class ADCState:
    """Running sums of the normalised screen-space gradient norm and of how often each was seen."""

    grad2d: Tensor
    count: Tensor
    scene_scale: float

    def tensors(self) -> dict[str, Tensor]:
        return {"grad2d": self.grad2d, "count": self.count}


@dataclass
class ADCStrategy:
    """3DGS adaptive density control (clone, split, prune, opacity reset).

    Gradients of the 2D means are normalised to NDC units (× width/2, × height/2, × the
    number of cameras in the batch) as gsplat does, so ``grow_grad2d`` = 2e-4 means the
    same at any resolution. With ``absgrad`` the per-pixel absolute gradients are summed
    instead (AbsGS); use a larger threshold then (≈ 8e-4). Growth stops at
    ``max_gaussians``: when more candidates qualify than fit, those with the largest
    gradient go first. Steps count from 0; events fire where the schedule crosses them
    (:class:`StepInfo`; for a step-counted run at ``step % every == 0``).
    """

    prune_opacity: float = 0.005
    grow_grad2d: float = 0.0002
    grow_scale3d: float = 0.01
    prune_scale3d: float = 0.1
    refine_start: int = 500
    refine_stop: int = 15_000
    refine_every: int = 100
    reset_every: int = 3_000
    pause_after_reset: int = 0
    absgrad: bool = False
    max_gaussians: int = 1_000_000

    def initial_state(self, n: int, scene_scale: float) -> ADCState:
        return ADCState(torch.zeros(n), torch.zeros(n), scene_scale)

    def state_from_tensors(self, tensors: dict[str, Tensor], scene_scale: float) -> ADCState:
        return ADCState(tensors["grad2d"].clone(), tensors["count"].clone(), scene_scale)

    def regularizer(self, params: Params) -> Tensor | None:
        return None

    def before_backward(self, info: StepInfo) -> None:
        _retain_means2d_grad(info)

    @torch.no_grad()
    def after_step(self, params: Params, optimizer: torch.optim.Optimizer, state: ADCState, step: int,
                   info: StepInfo, generator: torch.Generator) -> dict[str, int]:
        """Accumulate gradient statistics; grow, prune and reset on schedule. Returns counts."""
        before, at = info.position(step)
        if at >= self.refine_stop:
            return {}
        self.accumulate(state, info.meta)
        report: dict[str, int] = {}
        if (at > self.refine_start and step % self.refine_every == 0
                and at % self.reset_every >= self.pause_after_reset):
            report["cloned"], report["split"] = self.grow(params, optimizer, state, generator)
            report["pruned"] = self.prune(params, optimizer, state, prune_large=at > self.reset_every)
            state.grad2d.zero_()
            state.count.zero_()
        if crossed(before, at, self.reset_every):
            reset_opacity(params, optimizer, 2.0 * self.prune_opacity)
            report["reset"] = 1
        return report

    def accumulate(self, state: ADCState, meta: dict) -> None:
        """Add this step's normalised 2D-mean gradient norms of the visible Gaussians."""
        means2d = meta["means2d"]
        grads = means2d.absgrad if self.absgrad else means2d.grad
        if grads is None:
            raise RuntimeError("the renderer left no gradient on means2d (absgrad needs a backend that fills it)")
        n_cams = meta.get("n_cameras", grads.shape[0])
        scale = grads.new_tensor([meta["width"] / 2.0 * n_cams, meta["height"] / 2.0 * n_cams])
        visible = (meta["radii"] > 0).all(dim=-1)  # (C, N)
        cam_ids, gauss_ids = torch.nonzero(visible, as_tuple=True)
        norms = (grads[cam_ids, gauss_ids] * scale).norm(dim=-1)
        state.grad2d.index_add_(0, gauss_ids, norms)
        state.count.index_add_(0, gauss_ids, torch.ones_like(norms))

    def grow(self, params: Params, optimizer: torch.optim.Optimizer, state: ADCState,
             generator: torch.Generator) -> tuple[int, int]:
        """Clone small and split large Gaussians whose mean gradient exceeds the threshold."""
        grads = state.grad2d / state.count.clamp_min(1)
        candidates = grads > self.grow_grad2d
        budget = max(0, self.max_gaussians - len(params["means"]))
        if int(candidates.sum()) > budget:  # keep the strongest candidates that fit under the cap
            ranked = torch.where(candidates, grads, torch.full_like(grads, -1.0))
            chosen = torch.zeros_like(candidates)
            chosen[torch.topk(ranked, budget).indices] = True
            candidates &= chosen
        small = params["scales"].exp().amax(dim=-1) <= self.grow_scale3d * state.scene_scale
        clone, split = candidates & small, candidates & ~small
        n_clone, n_split = int(clone.sum()), int(split.sum())
        if n_clone:
            append_gaussians(params, optimizer, {k: v[clone] for k, v in params.items()})
            state.grad2d = torch.cat([state.grad2d, state.grad2d[clone]])
            state.count = torch.cat([state.count, state.count[clone]])
            split = torch.cat([split, split.new_zeros(n_clone)])
        if n_split:
            split_gaussians(params, optimizer, split, generator)
            keep = ~split
            state.grad2d = torch.cat([state.grad2d[keep], state.grad2d[split].repeat(2)])
            state.count = torch.cat([state.count[keep], state.count[split].repeat(2)])
        return n_clone, n_split

    def prune(self, params: Params, optimizer: torch.optim.Optimizer, state: ADCState, prune_large: bool) -> int:
        """Remove nearly transparent Gaussians (and, after the first reset, huge ones)."""
        remove = torch.sigmoid(params["opacities"]) < self.prune_opacity
        if prune_large:
            remove |= params["scales"].exp().amax(dim=-1) > self.prune_scale3d * state.scene_scale
        n = int(remove.sum())
        if n:
            keep = ~remove
            keep_gaussians(params, optimizer, keep)
            state.grad2d, state.count = state.grad2d[keep], state.count[keep]
        return n


@torch.no_grad()
def split_gaussians(params: Params, optimizer: torch.optim.Optimizer, mask: Tensor, generator: torch.Generator) -> None:
    """Replace each selected Gaussian by two, drawn from it, with scales divided by 1.6 (3DGS)."""
    sel = torch.nonzero(mask).squeeze(1)
    scales = params["scales"][sel].exp()
    noise = torch.randn((2, len(sel), 3), generator=generator, device=scales.device)
    offsets = torch.einsum("nij,nj,bnj->bni", rotation_matrices(params["quats"][sel]), scales, noise)
    keep = ~mask

    def split_param(name: str, p: Tensor) -> Tensor:
        if name == "means":
            children = (p[sel][None] + offsets).reshape(-1, 3)
        elif name == "scales":
            children = torch.log(scales / 1.6).repeat(2, 1)
        else:
            children = p[sel].repeat(2, *[1] * (p.dim() - 1))
        return torch.cat([p[keep], children])

    def split_moment(v: Tensor) -> Tensor:
        return torch.cat([v[keep], v.new_zeros((2 * len(sel), *v.shape[1:]))])

    update_params(params, optimizer, split_param, split_moment)


@torch.no_grad()
def reset_opacity(params: Params, optimizer: torch.optim.Optimizer, value: float) -> None:
    """Clamp every opacity to at most ``value`` and zero the opacity moments (3DGS reset)."""
    cap = math.log(value / (1.0 - value))
    update_params(params, optimizer, lambda name, p: p.clamp(max=cap), torch.zeros_like, names=["opacities"])


# --- MCMC ----------------------------------------------------------------------------------


@dataclass
class MCMCState:
    """MCMC keeps no per-Gaussian statistics; only the scene scale (for the interface)."""

    scene_scale: float

    def tensors(self) -> dict[str, Tensor]:
        return {}


@dataclass
class MCMCStrategy:
    """3DGS-MCMC: relocate dead Gaussians, add new ones up to ``cap_max``, noise positions.

    Relocation and addition draw source Gaussians with probability ∝ opacity; a source
    drawn ``n−1`` times becomes ``n`` identical copies whose opacity ``1 − (1 − o)^(1/n)``
    and scale (the paper's binomial correction) keep the rendered result unchanged. The
    noise added to the means after every optimiser step is ``lr·noise_lr · Σ · ε`` with
    ``ε ~ N(0, I)``, gated by ``sigmoid(100·((1 − o) − 0.995))`` so that only nearly
    transparent Gaussians wander.
    """

    cap_max: int = 1_000_000
    noise_lr: float = 5e5
    refine_start: int = 500
    refine_stop: int = 25_000
    refine_every: int = 100
    min_opacity: float = 0.005
    grow_factor: float = 1.05
    opacity_reg: float = 0.01
    scale_reg: float = 0.01
    max_copies: int = 51

    def initial_state(self, n: int, scene_scale: float) -> MCMCState:
        return MCMCState(scene_scale)

    def state_from_tensors(self, tensors: dict[str, Tensor], scene_scale: float) -> MCMCState:
        return MCMCState(scene_scale)

    def regularizer(self, params: Params) -> Tensor | None:
        """``opacity_reg·mean(o) + scale_reg·mean(s)``: pushes unneeded Gaussians to die."""
        terms = []
        if self.opacity_reg > 0:
            terms.append(self.opacity_reg * torch.sigmoid(params["opacities"]).mean())
        if self.scale_reg > 0:
            terms.append(self.scale_reg * params["scales"].exp().mean())
        return sum(terms) if terms else None  # type: ignore[return-value]

    def before_backward(self, info: StepInfo) -> None:
        return None

    @torch.no_grad()
    def after_step(self, params: Params, optimizer: torch.optim.Optimizer, state: MCMCState, step: int,
                   info: StepInfo, generator: torch.Generator) -> dict[str, int]:
        """Relocate and add on schedule, then perturb positions. Returns counts."""
        report: dict[str, int] = {}
        _, at = info.position(step)
        if self.refine_start < at < self.refine_stop and step % self.refine_every == 0:
            report["relocated"] = self.relocate(params, optimizer, generator)
            report["added"] = self.add(params, optimizer, generator)
        self.add_noise(params, info.means_lr, generator)
        return report

    def relocate(self, params: Params, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> int:
        """Move every dead Gaussian onto a live one drawn by opacity; returns how many moved."""
        opacities = torch.sigmoid(params["opacities"])
        dead = opacities <= self.min_opacity
        n_dead = int(dead.sum())
        alive = torch.nonzero(~dead).squeeze(1)
        if n_dead == 0 or len(alive) == 0:
            return 0
        dead_ids = torch.nonzero(dead).squeeze(1)
        sources = alive[torch.multinomial(opacities[alive], n_dead, replacement=True, generator=generator)]
        self._share(params, sources)
        for name, p in params.items():
            p.data[dead_ids] = p.data[sources]
        reset_moments(params, optimizer, torch.cat([sources, dead_ids]))
        return n_dead

    def add(self, params: Params, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> int:
        """Grow by ``grow_factor`` (at most to ``cap_max``) with copies of Gaussians drawn by opacity."""
        n = len(params["means"])
        n_new = max(0, min(self.cap_max, int(self.grow_factor * n)) - n)
        if n_new == 0:
            return 0
        opacities = torch.sigmoid(params["opacities"])
        sources = torch.multinomial(opacities, n_new, replacement=True, generator=generator)
        self._share(params, sources)
        reset_moments(params, optimizer, sources)
        append_gaussians(params, optimizer, {k: v[sources] for k, v in params.items()})
        return n_new

    def _share(self, params: Params, sources: Tensor) -> None:
        """Correct opacity and scale of sources that will gain copies (in place)."""
        copies = (torch.bincount(sources)[sources] + 1).clamp(max=self.max_copies)
        opacities = torch.sigmoid(params["opacities"][sources])
        new_opacity, scale_factor = relocation_correction(opacities, copies, self.max_copies)
        eps = torch.finfo(torch.float32).eps
        new_opacity = new_opacity.clamp(min=self.min_opacity, max=1.0 - eps)
        params["opacities"].data[sources] = torch.logit(new_opacity)
        params["scales"].data[sources] = params["scales"].data[sources] + torch.log(scale_factor)[:, None]

    def add_noise(self, params: Params, lr: float, generator: torch.Generator) -> None:
        """Perturb means by covariance-shaped noise, mostly for nearly transparent Gaussians."""
        opacities = torch.sigmoid(params["opacities"])
        gate = torch.sigmoid(100.0 * ((1.0 - opacities) - 0.995))
        m = rotation_matrices(params["quats"]) * params["scales"].exp()[:, None, :]  # R S
        noise = torch.randn(params["means"].shape, generator=generator, device=m.device)
        noise = noise * (gate * lr * self.noise_lr)[:, None]
        params["means"].data += torch.einsum("nij,nkj,nk->ni", m, m, noise)  # (R S)(R S)ᵀ ε


@torch.no_grad()
def relocation_correction(opacities: Tensor, copies: Tensor, max_copies: int = 51) -> tuple[Tensor, Tensor]:
    """Opacity and scale factor of each of ``n`` copies that together render like the original.

    From 3DGS-MCMC (eq. 9): ``o' = 1 − (1 − o)^(1/n)`` and scales multiplied by
    ``o / Σ_{i=1..n} Σ_{k=0..i−1} C(i−1, k) (−1)^k o'^(k+1) / sqrt(k+1)``. The double sum is a
    polynomial in ``o'`` whose coefficients depend only on ``n``; they are tabulated once
    and evaluated in float64 (the alternating binomial sums cancel badly in float32).
    """
    coeffs = _relocation_coefficients(max_copies).to(opacities.device)
    o = opacities.double()
    n = copies.long()
    new_o = 1.0 - torch.pow(1.0 - o, 1.0 / n.double())
    powers = new_o[:, None] ** torch.arange(1, max_copies + 1, device=o.device, dtype=torch.float64)[None]
    denom = (coeffs[n] * powers).sum(dim=1)
    return new_o.float(), (o / denom).float()


_COEFFS: dict[int, Tensor] = {}


def _relocation_coefficients(max_copies: int) -> Tensor:
    """Table (max_copies+1, max_copies): row n holds ``Σ_{i=k+1..n} C(i−1, k) (−1)^k / sqrt(k+1)``,
    i.e. ``C(n, k+1) (−1)^k / sqrt(k+1)`` (hockey-stick identity)."""
    if max_copies not in _COEFFS:
        table = torch.zeros(max_copies + 1, max_copies, dtype=torch.float64)
        for n in range(1, max_copies + 1):
            for k in range(n):
                table[n, k] = math.comb(n, k + 1) * (-1) ** k / math.sqrt(k + 1)
        _COEFFS[max_copies] = table
    return _COEFFS[max_copies]


def strategy_fields(strategy: object) -> dict:
    """The configuration of a strategy as a plain dict (for metadata and manifests)."""
    return {f.name: getattr(strategy, f.name) for f in fields(strategy)}  # type: ignore[arg-type]
