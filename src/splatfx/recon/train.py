"""Training a 3D Gaussian Splatting scene from posed images (the 3DGS recipe).

Read top to bottom, like gsplat's ``simple_trainer``:

1. **Data**: the capture's train split, loaded lazily at the working size (the plates' own, or
   smaller when the time budget asks for it: :mod:`splatfx.recon.working_size`) and kept in a
   small byte-bounded cache.
2. **Initialisation**: one Gaussian per SfM point (colour → SH DC, scale from the mean
   distance to the 3 nearest neighbours, opacity 0.1, identity rotation), or random points
   in the region the cameras look at when the capture has no points (NeRF-synthetic).
3. **Optimisation**: one camera per step, loss ``(1−λ)·L1 + λ·D-SSIM`` (λ = 0.2), one fused
   Adam with the 3DGS per-parameter learning rates (means decay exponentially from
   1.6e-4·extent to 1.6e-6·extent, the extent being the cameras' spread), SH degree raised
   every ``sh_degree_interval`` steps.
4. **Densification**: a strategy from :mod:`splatfx.recon.densify` (ADC or MCMC) after each step.
5. **Output**: ``scene.ply`` (INRIA layout), ``checkpoints/step_XXXXX.safetensors`` (the last
   few), and ``metrics.json`` with test PSNR/SSIM, steps, time and Gaussian count.

Everything random is drawn from one ``torch.Generator`` seeded by ``seed`` and saved in
checkpoints, and the camera order is a pure function of (seed, epoch), so a run is
reproducible and ``resume`` continues it exactly.
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
import dataclasses
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from rich.console import Console
from torch import Tensor

from splatfx.core.atomic import write_text_atomic
from splatfx.core.camera import Camera
from splatfx.io.checkpoint import (Checkpoint, gaussians_from_params, latest_checkpoint, load_checkpoint,
                                   save_checkpoint)
from splatfx.shot.config import TrainSection, check_ranges, redefault
from splatfx.io.dataset import DEFAULT_HOLDOUT_EVERY, Dataset, load_dataset
from splatfx.recon.densify import ADCStrategy, MCMCStrategy, Params, StepInfo, Strategy, strategy_fields
from splatfx.core.errors import ConfigError, InputError
from splatfx.recon.evaluate import evaluate_split
from splatfx.recon.exposure import EXPOSURE_FILE, apply_exposure, write_exposure
from splatfx.recon.recipe import FULL_GAUSSIANS, REFERENCE_STEPS, choose_recipe
from splatfx.recon.working_size import FLOOR_PX, Device, WorkingSize, choose_working_size
from splatfx.io.formats.ply import write_ply
from splatfx.core.gaussians import Gaussians
from splatfx.core.losses import photometric_loss
from splatfx.recon._cpu_loss import fused_photometric_loss
from splatfx.core.progress import make_progress
from splatfx.raster import rasterize
from splatfx.raster.views import camera_tensors, resolve_device
from splatfx.core.sh import num_sh_coeffs, rgb_to_sh
from splatfx.shot.folder import Shot
from splatfx.shot.runner import StageResult, run_stage

PARAM_NAMES = ("means", "quats", "scales", "opacities", "sh0", "shN")


@dataclass(frozen=True)
class TrainConfig(TrainSection):
    """Settings of one training run: the ``[train]`` table of shot.toml (its keys, defaults,
    meanings and ranges are declared there, once) and the recipe's further settings, whose
    defaults are the 3DGS recipe.

    Schedules (densification window, opacity resets, SH degree steps, means learning-rate
    decay) are laid out over ``max_steps`` by scaling the 3DGS 30k-step schedule, so a
    short CPU run densifies, resets and raises the SH degree in the same proportions.
    ``max_steps`` and ``max_gaussians`` may be "auto": :func:`splatfx.recon.recipe.choose_recipe`
    settles them for the machine and the budget, and the trainer works with the settled copy.
    """

    # a capture (outside a shot) without split files holds out every 8th image by default
    holdout_every: int = redefault(TrainSection, "holdout_every", DEFAULT_HOLDOUT_EVERY)
    sh_degree_interval: int | None = None  # None: 1000 steps per 30k, scaled
    # initialisation
    init_opacity: float = 0.1
    init_scale: float = 1.0  # × mean distance to the 3 nearest neighbours
    random_points: int = 100_000  # used when the capture has no SfM points
    random_extent: float = 0.35  # half-size of the random box, × the cameras' distance to it
    # learning rates (means: × scene extent)
    means_lr: float = 1.6e-4
    means_lr_final: float = 1.6e-6
    quats_lr: float = 1e-3
    scales_lr: float = 5e-3
    opacities_lr: float = 5e-2
    sh0_lr: float = 2.5e-3
    shN_lr: float = 2.5e-3 / 20
    # the per-plate colour matrices and offsets ([train] exposure); 1e-2 let them absorb the
    # scene's own errors early on and cost 1.5 dB on held-out plates (docs/train.md)
    exposure_lr: float = 1e-3
    # coarse to fine: the first share of the schedule trains at half the working size (each step
    # costs less while densification lays the scene out); 0 turns it off. Never below FLOOR_PX.
    coarse_share: float = 0.25
    # densification: start, stop and reset are steps of the 30k schedule, scaled to max_steps
    # unless scale_schedule is False; refine_every is never scaled (gradients must average
    # over several views)
    scale_schedule: bool = True
    refine_start: int = 500
    refine_stop: int = 15_000
    refine_every: int = 100
    reset_every: int = 3_000
    grow_grad2d: float = 2e-4
    absgrad: bool = False
    prune_opacity: float = 0.005
    mcmc_refine_stop: int = 25_000
    mcmc_noise_lr: float = 5e5
    mcmc_opacity_reg: float = 0.01
    mcmc_scale_reg: float = 0.01
    # bookkeeping
    checkpoint_every: int = 1_000
    keep_checkpoints: int = 3
    eval_split: str | None = "test"  # None: no evaluation after training
    seed: int = 0
    backend: Literal["auto", "cpu", "gsplat"] = "auto"
    device: str = "auto"  # "auto": CUDA when available
    threads: int | None = None  # torch CPU threads; None: 1 on the CPU (see resolve_threads)
    cache_mb: int = 512  # bound on the decoded images the dataset keeps in memory
    progress: bool = True

    def __post_init__(self) -> None:
        check_ranges(self, "train")  # the [train] keys, as declared in the table
        checks = [
            (0.0 < self.init_opacity < 1.0, "init_opacity", "must be in (0, 1)"),
            (self.random_points >= 1, "random_points", "must be at least 1"),
            (self.keep_checkpoints >= 1, "keep_checkpoints", "must be at least 1"),
            (0.0 <= self.coarse_share < 1.0, "coarse_share", "must be in [0, 1)"),
        ]
        for ok, key, problem in checks:
            if not ok:
                raise ConfigError(f"train {key}", f"{problem}, got {getattr(self, key)!r}")

    def scaled(self, steps: int) -> int:
        """A step count of the 30k-step 3DGS schedule, rescaled to ``max_steps`` (≥ 1)."""
        if not self.scale_schedule:
            return steps
        return max(1, round(steps * self.settled_steps / REFERENCE_STEPS))

    @property
    def settled_steps(self) -> int:
        """``max_steps`` as a number ("auto" before the recipe settles it: the 3DGS length)."""
        return REFERENCE_STEPS if self.max_steps == "auto" else int(self.max_steps)

    @property
    def settled_gaussians(self) -> int:
        """``max_gaussians`` as a number ("auto" before the recipe settles it: the 3DGS bound)."""
        return FULL_GAUSSIANS if self.max_gaussians == "auto" else int(self.max_gaussians)

    @property
    def sh_interval(self) -> int:
        return self.sh_degree_interval or self.scaled(1_000)


@dataclass
class TrainResult:
    """What a run produced: its outputs and its figures (also written to metrics.json)."""

    scene_path: Path
    metrics_path: Path
    metrics: dict[str, Any]
    gaussians: Gaussians


# --- data --------------------------------------------------------------------------------------


def open_split(data: str | os.PathLike[str], split: str, config: "TrainConfig", downscale: float = 1.0) -> Dataset:
    """A split of the capture at ``data``, shrunk by ``downscale`` and on the configured background."""
    return load_dataset(data, split=split, background=config.background, downscale=downscale,
                        holdout_every=config.holdout_every, cache_bytes=config.cache_mb << 20)


#: A short run's Gaussians, as a multiple of its initial points: densification roughly
#: doubles them in the first few thousand steps (the reference runs in docs/train.md).
EXPECTED_GROWTH = 2.0


def expected_gaussians(dataset: Dataset, config: "TrainConfig") -> int:
    """The Gaussian count a run mostly works with: twice its initial points, within the cap."""
    points = len(dataset.points) if dataset.points is not None and len(dataset.points) else config.random_points
    return int(min(config.settled_gaussians, EXPECTED_GROWTH * points))


def cost_device(device: torch.device) -> Device:
    """The machine the working-size cost model and the recipe plan for."""
    return "cuda" if device.type == "cuda" else "cpu"


def working_size_for(plates: Dataset, config: "TrainConfig", device: torch.device) -> WorkingSize:
    """The size to train ``plates`` (a split at the image files' size) at, from ``[train] downscale``:
    "auto" chooses from the plates and the time budget, a number forces that factor."""
    plate_size = max((f.source_size for f in plates.frames), key=lambda s: s[0] * s[1])
    return choose_working_size(plate_size, downscale=config.downscale, max_steps=config.settled_steps,
                               max_minutes=config.max_minutes, gaussians=expected_gaussians(plates, config),
                               plates=len(plates), device=cost_device(device))


def working_size_given(dataset: Dataset, config: "TrainConfig", device: torch.device) -> WorkingSize:
    """The working size of a dataset handed over already sized (tests, benchmarks)."""
    frame = max(dataset.frames, key=lambda f: f.source_size[0] * f.source_size[1])
    factor = frame.source_size[0] / frame.camera.width
    chosen = choose_working_size(frame.source_size, downscale=factor, max_steps=config.settled_steps,
                                 max_minutes=config.max_minutes, gaussians=expected_gaussians(dataset, config),
                                 plates=len(dataset), device=cost_device(device))
    return dataclasses.replace(chosen, size=(frame.camera.width, frame.camera.height),
                               reason="given: the dataset handed to the trainer")


def image_tensor(dataset: Dataset, index: int, device: torch.device) -> Tensor:
    """Frame ``index``'s pixels (H, W, 3) as a tensor (no copy on the CPU: the dataset caches them)."""
    return torch.from_numpy(dataset.image(index)).to(device)


def halved(image: Tensor) -> Tensor:
    """``image`` (H, W, 3) at half its size by 2×2 box averages (an odd last row or column dropped)."""
    return F.avg_pool2d(image.permute(2, 0, 1)[None], 2)[0].permute(1, 2, 0).contiguous()


def scene_extent(dataset: Dataset) -> float:
    """3DGS's scene radius (1.1 × the largest camera distance from their mean); 1 for one camera."""
    extent = dataset.camera_extent()
    return extent if extent > 0 else 1.0


def look_at_centre(cameras: list[Camera]) -> np.ndarray:
    """The point closest (least squares) to every camera's optical axis.

    A small pull towards the cameras' mean centre keeps it defined when the axes are
    parallel (forward-facing captures).
    """
    a, b = np.zeros((3, 3)), np.zeros(3)
    for cam in cameras:
        d = cam.forward / np.linalg.norm(cam.forward)
        proj = np.eye(3) - np.outer(d, d)
        a += proj
        b += proj @ cam.center
    centroid = np.mean([c.center for c in cameras], axis=0)
    ridge = 1e-6 * len(cameras)
    return np.linalg.solve(a + ridge * np.eye(3), b + ridge * centroid)


# --- initialisation ----------------------------------------------------------------------------


def init_from_points(points: np.ndarray, colours: np.ndarray, config: TrainConfig) -> Gaussians:
    """One Gaussian per point: SH DC from the colour, isotropic scale = RMS distance to the
    3 nearest neighbours (mean squared distance clamped at 1e-7, as 3DGS)."""
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if n < 2:
        dist = np.full(n, 0.01)  # a lone point has no neighbours to size it by
    else:
        d, _ = cKDTree(points).query(points, k=min(4, n))
        dist = np.sqrt(np.maximum(np.mean(d[:, 1:] ** 2, axis=1), 1e-7))
    rgb = torch.from_numpy(np.clip(np.asarray(colours, dtype=np.float32), 0.0, 1.0))
    sh = torch.zeros(n, num_sh_coeffs(config.sh_degree), 3)
    sh[:, 0] = rgb_to_sh(rgb)
    log_scale = torch.from_numpy(np.log(dist * config.init_scale)).float()[:, None].repeat(1, 3)
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    logit = math.log(config.init_opacity / (1.0 - config.init_opacity))
    return Gaussians(torch.from_numpy(points).float(), quats, log_scale, torch.full((n,), logit), sh,
                     source="initial points")


def random_points(cameras: list[Camera], config: TrainConfig, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points with random colours in a box around the point the cameras look at."""
    centre = look_at_centre(cameras)
    distance = float(np.median([np.linalg.norm(c.center - centre) for c in cameras]))
    half = config.random_extent * distance
    pts = (torch.rand(config.random_points, 3, generator=generator, dtype=torch.float64) * 2 - 1) * half
    colours = torch.rand(config.random_points, 3, generator=generator, dtype=torch.float64)
    return pts.numpy() + centre, colours.numpy()


def initial_gaussians(dataset: Dataset, config: TrainConfig, generator: torch.Generator) -> Gaussians:
    """Gaussians from the capture's SfM points, or random ones when it has none."""
    if dataset.points is None or len(dataset.points) == 0:
        points, colours = random_points(dataset.cameras, config, generator)
    else:
        points, colours = dataset.points.xyz, dataset.points.rgb.astype(np.float32) / 255.0
    if len(points) > config.settled_gaussians:  # keep the cap from the start
        keep = torch.randperm(len(points), generator=generator)[: config.settled_gaussians].numpy()
        points, colours = np.asarray(points)[keep], np.asarray(colours)[keep]
    return init_from_points(points, colours, config)


# --- parameters and optimiser ------------------------------------------------------------------


def params_from_gaussians(g: Gaussians, sh_degree: int, device: torch.device) -> Params:
    """Trainable tensors named as the strategies expect; SH padded to ``sh_degree``."""
    k = num_sh_coeffs(sh_degree)
    sh = F.pad(g.sh, (0, 0, 0, max(0, k - g.sh.shape[1])))[:, :k]
    values = {
        "means": g.means, "quats": g.quats, "scales": g.log_scales, "opacities": g.opacity_logits,
        "sh0": sh[:, :1], "shN": sh[:, 1:],
    }
    return {name: torch.nn.Parameter(v.detach().to(device).contiguous().clone()) for name, v in values.items()}


def make_optimizer(params: Params, config: TrainConfig, extent: float,
                   exposure: Tensor | None = None) -> torch.optim.Adam:
    """One Adam, a named param group per tensor with its 3DGS learning rate (fused on CPU/GPU),
    and one for the per-plate exposure when it is learnt."""
    lrs = {
        "means": config.means_lr * extent, "quats": config.quats_lr, "scales": config.scales_lr,
        "opacities": config.opacities_lr, "sh0": config.sh0_lr, "shN": config.shN_lr,
    }
    groups = [{"params": [params[name]], "lr": lrs[name], "name": name} for name in PARAM_NAMES]
    if exposure is not None:
        groups.append({"params": [exposure], "lr": config.exposure_lr, "name": EXPOSURE})
    return torch.optim.Adam(groups, eps=1e-15, fused=True)


# --- per-plate exposure ----------------------------------------------------------------------

EXPOSURE = "exposure"


def learns_exposure(config: TrainConfig, dataset: Dataset) -> bool:
    """``[train] exposure``: "auto" learns it for photographed captures, not rendered ones."""
    if config.exposure == "auto":
        return dataset.layout != "transforms"
    return config.exposure == "affine"


def identity_exposure(views: int, device: torch.device) -> Tensor:
    """One 3×4 affine colour transform per view (matrix | offset), all the identity."""
    eye = torch.eye(3, 4, device=device)
    return eye.expand(views, 3, 4).clone()


@torch.no_grad()
def anchor_exposure(exposure: Tensor) -> None:
    """Keep the plates' mean transform the identity, so the scene holds the mean exposure (the
    one held-out plates and renders see) and cannot drift against the per-plate transforms."""
    exposure -= exposure.mean(dim=0, keepdim=True) - torch.eye(3, 4, device=exposure.device)


def means_lr_at(at: float, config: TrainConfig, extent: float) -> float:
    """Exponential decay from ``means_lr`` to ``means_lr_final`` (× extent) over ``max_steps``,
    at schedule position ``at`` (the step, or where the clock puts it)."""
    t = min(at / config.settled_steps, 1.0)
    return extent * math.exp((1 - t) * math.log(config.means_lr) + t * math.log(config.means_lr_final))


def make_strategy(config: TrainConfig, clock: bool = False) -> Strategy:
    """The configured densification strategy with its schedule scaled to ``max_steps`` (with
    ``clock``, the nominal length of a schedule that follows the clock)."""
    s = config.scaled
    if config.strategy == "mcmc":
        return MCMCStrategy(
            cap_max=config.settled_gaussians, noise_lr=config.mcmc_noise_lr, refine_start=s(config.refine_start),
            refine_stop=s(config.mcmc_refine_stop), refine_every=config.refine_every, min_opacity=config.prune_opacity,
            opacity_reg=config.mcmc_opacity_reg, scale_reg=config.mcmc_scale_reg,
        )
    # An opacity reset must leave a few densification rounds to recover before the next one
    # (3DGS has 30); scaling alone would reset every few steps in a short run. On the clock,
    # where the nominal length undercounts the steps the run makes, two resets must still fit
    # in the densification window: without one, a random initialisation stays a fog of faint
    # Gaussians (lego in 2.5 minutes: 22.4 dB).
    reset_every = s(config.reset_every)
    if config.scale_schedule:
        floor = 3 * config.refine_every
        reset_every = max(reset_every, min(floor, s(config.refine_stop) // 3) if clock else floor)
    return ADCStrategy(
        prune_opacity=config.prune_opacity, grow_grad2d=config.grow_grad2d, refine_start=s(config.refine_start),
        refine_stop=s(config.refine_stop), refine_every=config.refine_every, reset_every=reset_every,
        absgrad=config.absgrad, max_gaussians=config.settled_gaussians,
    )


def training_loss(render: Tensor, target: Tensor, ssim_weight: float) -> tuple[Tensor, Tensor]:
    """The 3DGS loss (:func:`splatfx.core.losses.photometric_loss`): on the CPU in fused
    compiled kernels (same value and gradient, a third of the time), elsewhere in torch."""
    if render.device.type == "cpu":
        return fused_photometric_loss(render, target, ssim_weight)
    return photometric_loss(render, target, ssim_weight)


def camera_for_step(step: int, n_views: int, seed: int) -> int:
    """The view trained at ``step``: a fresh random permutation per epoch, a pure function
    of (seed, epoch) so a resumed run sees the same order."""
    epoch, pos = divmod(step, n_views)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return int(torch.randperm(n_views, generator=g)[pos])


def resolve_threads(threads: int | None, device: torch.device) -> int:
    """Torch's intra-op threads for training: as asked, else 1 on the CPU.

    On the CPU the rasterizer's numba kernels already run on every core from their own
    thread pool, and the remaining torch work per step (loss, Adam) is small; extra OpenMP
    threads then only spin-wait against the kernels. Measured on 2 cores under load: one
    torch thread made a training step 2.5× faster than two.
    """
    if threads is not None:
        return threads
    return 1 if device.type == "cpu" else torch.get_num_threads()


# --- the trainer ---------------------------------------------------------------------------------


class Trainer:
    """One training run: data, parameters, optimiser, strategy and their state."""

    def __init__(self, data: str | os.PathLike[str], out: str | os.PathLike[str], config: TrainConfig,
                 dataset: Dataset | None = None) -> None:
        self.config = config
        self.out = Path(out)
        self.device = resolve_device(config.device)
        torch.set_num_threads(resolve_threads(config.threads, self.device))
        self.data_path = Path(data)
        if dataset is None:
            plates = open_split(data, "train", config)
            if len(plates) == 0:
                raise InputError(self.data_path, "the train split has no images")
            self.working = working_size_for(plates, config, self.device)
            dataset = plates if self.working.downscale == 1 else plates.downscaled(self.working.downscale)
        elif len(dataset) == 0:
            raise InputError(self.data_path, "the train split has no images")
        else:
            self.working = working_size_given(dataset, config, self.device)
        self.recipe = choose_recipe(max_steps=config.max_steps, max_gaussians=config.max_gaussians,
                                    max_minutes=config.max_minutes, working=self.working,
                                    device=cost_device(self.device))
        config = self.config = dataclasses.replace(config, max_steps=self.recipe.max_steps,
                                                   max_gaussians=self.recipe.max_gaussians)
        self.dataset = dataset
        self.cameras = self.dataset.cameras
        self.viewmats, self.Ks = camera_tensors(self.cameras, self.device)
        self.extent = scene_extent(self.dataset)
        self.background = torch.from_numpy(self.dataset.background).to(self.device)
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)
        self.strategy = make_strategy(config, clock=self.recipe.clock)
        self.step = 0
        self.elapsed = 0.0
        self.previous_at: float | None = None  # the last step's schedule position
        init = initial_gaussians(self.dataset, config, self.generator)
        self.params = params_from_gaussians(init, config.sh_degree, self.device)
        self.exposure = (torch.nn.Parameter(identity_exposure(len(self.cameras), self.device))
                         if learns_exposure(config, self.dataset) else None)
        self.optimizer = make_optimizer(self.params, config, self.extent, self.exposure)
        self.state = self.strategy.initial_state(len(init), self.extent)

    # --- checkpoints ---------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    def save_checkpoint(self) -> Path:
        moments = {}
        for group in self.optimizer.param_groups:
            state = self.optimizer.state.get(group["params"][0], {})
            moments[group["name"]] = {k: v for k, v in state.items() if isinstance(v, Tensor)}
        params = dict(self.params) if self.exposure is None else {**self.params, EXPOSURE: self.exposure}
        ckpt = Checkpoint(
            step=self.step, params=params, moments=moments, strategy=self.state.tensors(),
            rng_state=self.generator.get_state(), elapsed_s=self.elapsed,
            extra={"config": asdict(self.config), "extent": self.extent},
        )
        return save_checkpoint(ckpt, self.checkpoint_dir, keep=self.config.keep_checkpoints)

    def restore(self, path: str | os.PathLike[str]) -> None:
        """Continue from a checkpoint: parameters, Adam state, strategy state, RNG and step."""
        ckpt = load_checkpoint(path)
        missing = [n for n in PARAM_NAMES if n not in ckpt.params]
        if missing:
            raise InputError(path, f"checkpoint lacks parameters {missing}")
        self.params = {n: torch.nn.Parameter(ckpt.params[n].to(self.device)) for n in PARAM_NAMES}
        if self.exposure is not None:
            if EXPOSURE not in ckpt.params or ckpt.params[EXPOSURE].shape != self.exposure.shape:
                raise InputError(path, f"checkpoint lacks the per-plate exposure of {len(self.cameras)} plates "
                                       "([train] exposure changed since it was written?)")
            self.exposure = torch.nn.Parameter(ckpt.params[EXPOSURE].to(self.device))
        self.optimizer = make_optimizer(self.params, self.config, self.extent, self.exposure)
        for group in self.optimizer.param_groups:
            saved = ckpt.moments.get(group["name"])
            if saved:
                self.optimizer.state[group["params"][0]] = {k: v.to(self.device) for k, v in saved.items()}
        self.state = self.strategy.state_from_tensors(
            {k: v.to(self.device) for k, v in ckpt.strategy.items()}, self.extent)
        if ckpt.rng_state is not None:
            self.generator.set_state(ckpt.rng_state)
        self.step = ckpt.step
        self.elapsed = ckpt.elapsed_s
        self.previous_at = None

    # --- one step ---------------------------------------------------------------------------
    def sh_degree_at(self, at: float) -> int:
        """The SH degree in use at schedule position ``at``."""
        return min(int(at // self.config.sh_interval), self.config.sh_degree)

    def schedule_at(self, elapsed: float) -> float:
        """Where the next step stands on the schedule, in steps of ``max_steps``: its number, or
        with a clock recipe the share of its span (``span × max_minutes``) spent, ``elapsed``
        seconds in all."""
        if not self.recipe.clock or self.config.max_minutes is None:
            return float(self.step)
        return self.config.max_steps * elapsed / (self.recipe.span * self.config.max_minutes * 60.0)

    def coarse_at(self, at: float) -> bool:
        """Whether the step at schedule position ``at`` trains at half the working size: inside
        ``coarse_share`` of the schedule, when half the size keeps the working size's floor
        (FLOOR_PX) on the long side."""
        cam = self.cameras[0]
        return (at < self.config.coarse_share * self.config.max_steps
                and max(cam.width, cam.height) // 2 >= FLOOR_PX)

    def render(self, view: int, sh_degree: int, background: Tensor, coarse: bool = False
               ) -> tuple[Tensor, Tensor, dict]:
        """Render training view ``view`` with the current parameters (differentiable); ``coarse``:
        at half its size, over the pixels a 2×2 box average of the plate keeps."""
        p = self.params
        k = num_sh_coeffs(sh_degree)
        features = p["sh0"] if k == 1 else torch.cat([p["sh0"], p["shN"][:, : k - 1]], dim=1)
        cam = self.cameras[view]
        Ks, width, height = self.Ks[view : view + 1], cam.width, cam.height
        if coarse:
            Ks = Ks * Ks.new_tensor([[0.5], [0.5], [1.0]])
            width, height = width // 2, height // 2
        return rasterize(
            p["means"], p["quats"], p["scales"].exp(), torch.sigmoid(p["opacities"]), features,
            self.viewmats[view : view + 1], Ks, width, height,
            backgrounds=background[None], sh_degree=sh_degree, absgrad=self.config.absgrad,
            backend=self.config.backend,
        )

    def train_step(self, at: float | None = None) -> dict[str, float]:
        """One optimisation step on one view, at schedule position ``at`` (default: the step's
        number); returns loss and the view's PSNR."""
        config, step = self.config, self.step
        at = float(step) if at is None else at
        view = camera_for_step(step, len(self.cameras), config.seed)
        target = image_tensor(self.dataset, view, self.device)
        background = self.background
        if config.random_background:
            background = torch.rand(3, generator=self.generator).to(self.device)
            target = self.target_on(view, target, background)
        coarse = self.coarse_at(at)
        if coarse:
            target = halved(target)
        means_lr = means_lr_at(at, config, self.extent)
        self.optimizer.param_groups[0]["lr"] = means_lr
        render, _, meta = self.render(view, self.sh_degree_at(at), background, coarse)
        info = StepInfo(meta, means_lr, at=at, before=self.previous_at)  # None after a start: at − 1
        self.strategy.before_backward(info)
        image = render[0] if self.exposure is None else apply_exposure(render[0], self.exposure[view])
        loss, l1_term = training_loss(image, target, config.ssim_weight)
        reg = self.strategy.regularizer(self.params)
        if reg is not None:
            loss = loss + reg
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.exposure is not None:
            anchor_exposure(self.exposure)
        self.strategy.after_step(self.params, self.optimizer, self.state, step, info, self.generator)
        self.step += 1
        self.previous_at = at
        with torch.no_grad():
            mse = torch.mean((image.detach().clamp(0, 1) - target) ** 2).item()
        return {"loss": float(loss.detach()), "psnr": -10.0 * math.log10(max(mse, 1e-10))}

    def target_on(self, view: int, target: Tensor, background: Tensor) -> Tensor:
        """The training image of ``view`` over another background: ``rgb + (new − old)·(1 − alpha)``."""
        alpha = self.dataset.alpha(view)
        if alpha is None:
            raise InputError(self.dataset.frames[view].image_path,
                             "random_background needs images with an alpha channel")
        transparency = 1.0 - torch.from_numpy(alpha).to(self.device)[..., None]
        return target + (background - self.background) * transparency

    # --- the loop ------------------------------------------------------------------------------
    def train(self, until: int | None = None, clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
        """Run until step ``until`` (default ``max_steps``) or the time budget; checkpoint on
        schedule and at the end.

        The budget counts this invocation's time, except with a clock recipe, whose schedule
        runs on the run's training time in all (a resumed run finishes it); there the step
        count is open, the budget alone ends the run, and the progress bar counts seconds."""
        config = self.config
        last = math.inf if self.recipe.clock else config.max_steps
        until = last if until is None else min(until, last)
        budget = None if config.max_minutes is None else config.max_minutes * 60.0
        start_step, elapsed_before = self.step, self.elapsed
        spent_before = elapsed_before if self.recipe.clock else 0.0
        t_start, run_elapsed = clock(), 0.0
        stopped_by_budget = budget is not None and spent_before >= budget
        loss_ema = psnr_ema = None
        with make_progress() if config.progress else _NoProgress() as progress:
            clocked = self.recipe.clock and budget is not None
            task = (progress.add_task("train (s)", total=round(budget), completed=round(spent_before), rate="")
                    if clocked else progress.add_task("train", total=config.max_steps, completed=self.step, rate=""))
            while self.step < until and not stopped_by_budget:
                figures = self.train_step(self.schedule_at(elapsed_before + run_elapsed))
                run_elapsed = clock() - t_start
                loss_ema = figures["loss"] if loss_ema is None else 0.9 * loss_ema + 0.1 * figures["loss"]
                psnr_ema = figures["psnr"] if psnr_ema is None else 0.9 * psnr_ema + 0.1 * figures["psnr"]
                if self.step % config.checkpoint_every == 0 and self.step < until:
                    self.elapsed = elapsed_before + run_elapsed
                    self.save_checkpoint()
                if self.step % 10 == 0 or self.step == until:
                    rate = (self.step - start_step) / max(run_elapsed, 1e-9)
                    done = round(spent_before + run_elapsed) if clocked else self.step
                    progress.update(task, completed=done, rate=(
                        f"loss {loss_ema:.4f}  psnr {psnr_ema:.2f}  {len(self.params['means']):,} G  {rate:.2f} it/s"))
                if budget is not None and spent_before + run_elapsed >= budget:
                    stopped_by_budget = True
        self.elapsed = elapsed_before + run_elapsed
        self.save_checkpoint()
        steps_run = self.step - start_step
        return {
            "steps": self.step,
            "stopped_by_time_budget": stopped_by_budget,
            "train_seconds": self.elapsed,
            "s_per_step": run_elapsed / steps_run if steps_run else None,
            "gaussians": len(self.params["means"]),
            "final_train_psnr_ema": psnr_ema,
        }


class _NoProgress:
    """A stand-in for a progress bar when none is wanted."""

    def __enter__(self) -> "_NoProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: object, **kwargs: object) -> int:
        return 0

    def update(self, *args: object, **kwargs: object) -> None:
        return None


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocations on a GPU, resident set size on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def learnt_exposure(trainer: Trainer) -> dict[str, np.ndarray] | None:
    """The per-plate colour transforms training learnt, by image name (their mean is the
    identity); None when it learnt none."""
    if trainer.exposure is None:
        return None
    return dict(zip(trainer.dataset.plate_names, trainer.exposure.detach().cpu().numpy()))


def train(data: str | os.PathLike[str], out: str | os.PathLike[str], config: TrainConfig | None = None,
          resume: bool = False) -> TrainResult:
    """Train a scene on ``data``'s train split into ``out``; evaluate on ``config.eval_split``.

    Writes ``out/scene.ply``, ``out/checkpoints/`` and ``out/metrics.json``. With ``resume``
    the newest checkpoint in ``out/checkpoints`` is continued (a fresh start if none).
    """
    config = config or TrainConfig()
    trainer = Trainer(data, out, config)
    trainer.dataset.validate()  # missing or odd-sized images fail now, not hours in
    working = trainer.working
    eval_views = open_split(data, config.eval_split, config, working.downscale) if config.eval_split else None
    if resume and (ckpt := latest_checkpoint(trainer.checkpoint_dir)) is not None:
        trainer.restore(ckpt)
    if config.progress:
        console = Console(stderr=True, highlight=False)
        console.print(working.line(config.max_minutes))
        console.print(trainer.recipe.line(config.strategy, config.max_minutes))
    figures = trainer.train()
    gaussians = gaussians_from_params(trainer.params)
    scene_path = trainer.out / "scene.ply"
    write_ply(gaussians, scene_path)
    metrics: dict[str, Any] = {**figures, "working_size": working.to_dict(), "recipe": trainer.recipe.to_dict(),
                               "strategy": config.strategy,
                               "extent": trainer.extent,
                               "strategy_settings": strategy_fields(trainer.strategy)}
    exposure = learnt_exposure(trainer)
    if exposure is not None:
        write_exposure(trainer.out / EXPOSURE_FILE, exposure)
        metrics["exposure"] = EXPOSURE_FILE
    if eval_views is not None:
        summary = evaluate_split(gaussians, eval_views, config.eval_split, backend=config.backend,
                                 device=trainer.device, progress=config.progress, exposure=exposure)
        if summary is not None:
            scores = summary.to_dict()
            metrics["per_view"] = scores.pop("per_view")
            metrics.update({f"{config.eval_split}_{k}": v for k, v in scores.items()})
    metrics["peak_memory_mb"] = peak_memory_mb(trainer.device)
    metrics["config"] = asdict(trainer.config)  # as the recipe settled it
    metrics_path = trainer.out / "metrics.json"
    write_text_atomic(metrics_path, json.dumps(metrics, indent=2) + "\n")
    return TrainResult(scene_path, metrics_path, metrics, gaussians)


def config_for_shot(shot: Shot) -> TrainConfig:
    """The TrainConfig of a shot: its ``[train]`` table as it is, ``[shot] seed``, and an
    evaluation on the held-out plates when ``holdout_every`` holds some out."""
    section = shot.config.train
    table = {f.name: getattr(section, f.name) for f in fields(TrainSection)}
    return TrainConfig(**table, seed=shot.config.shot.seed,
                       eval_split="test" if section.holdout_every > 0 else None)


def run_train(shot: Shot, *, force: bool = False, resume: bool = False,
              config: TrainConfig | None = None) -> StageResult:
    """The train stage of a shot: ``solve/`` (images and cameras) → ``scene/``.

    ``config`` defaults to :func:`config_for_shot` (a command's flags override it with
    :func:`splatfx.shot.config.override`). Skipped when the solve and the settings are
    unchanged since the last successful run; ``resume`` continues an interrupted run from
    its newest checkpoint.
    """
    config = config or config_for_shot(shot)
    if not shot.solve_dir.is_dir():
        raise InputError(shot.solve_dir, "has no camera solve yet (run `splatfx solve` first)")
    out = shot.scene_dir
    settings = {k: v for k, v in asdict(config).items() if k not in _RUN_ONLY}

    def work() -> dict[str, Any]:
        result = train(shot.solve_dir, out, config, resume=resume)
        return {k: v for k, v in result.metrics.items() if k not in ("per_view", "config")}

    return run_stage(shot, "train", settings, inputs={"solve": shot.solve_dir},
                     outputs=[out / "scene.ply", out / "metrics.json"], fn=work, force=force, seed=config.seed)


# Settings that change how a run is carried out, not what it produces (left out of the stage's fingerprint).
_RUN_ONLY = ("progress", "threads", "cache_mb", "checkpoint_every", "keep_checkpoints", "backend", "device")
