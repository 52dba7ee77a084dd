"""The built-in per-scene sharpening pass: a small conditional diffusion model trained on the
shot itself, which in practice acts as a learnt per-scene filter (one step, nearly deterministic).

**What it gains, measured** (``benchmarks/refine.py``, docs/refine.md "Quality"): a few tenths
of a dB on held-out views of lego, less on real captures (fern, south_building). It cleans
colours, edges and soft backgrounds; it cannot restore detail the reconstruction never had,
so it is named for what it does — *per-scene sharpening* — not "refinement", and its defaults
(:class:`TrainSettings`: 400 steps; one sampling step) keep its cost low. Held-out gains of a
dB or more need a pretrained generative model (``[refine] model``, docs/refine.md).

**Model.** A diffusers ``UNet2DModel`` whose input is the degraded render concatenated
with the noisy target (6 channels) and whose output is added to the render: the model
predicts the clean image ``x0 = render + unet([render, x_t], t)`` (``prediction_type =
"sample"``). Its last layer starts at zero, so an untrained model returns the render, and
so do the input weights of the noisy channels, so early training sees clean features.
Sampling is DDIM with "trailing" timesteps, so one step already starts from the noise
level ``[refine] strength`` asks for; a model trained from noised renders alone (the default)
runs that one step whatever ``[refine] steps`` asks (:attr:`BuiltinRefiner.sampling_steps`).

**Training pairs.** The reconstruction's renders of its own training views are worse than
the photos, and renders of views it was not trained on are worse still. The model learns
the way back from renders of the training views made by *degraded* reconstructions —
the scene as trained, its early checkpoints, the scene with Gaussians dropped, with
Gaussians jittered, rendered at reduced resolution — to the real images (:func:`make_pairs`).
Pairs that are real novel views (a second reconstruction trained without a quarter of the
training views, rendering those) were tried on lego and gained no more (+0.22 dB against
+0.28 dB) for a second reconstruction's cost, so they are not made.

**Training** (:class:`RefinerTrainer`) draws random patches (``patch`` pixels square, with
flips), a random timestep and noise, and minimises the error of ``x0`` (0.9 × squared error
+ 0.1 × D-SSIM: squared error alone trades SSIM for PSNR on soft reconstructions): a few
minutes on a 2-core CPU. Sampling starts from the *noised
render* (img2img, and the stage holds weak pixels to it), so by default every training
input is the render noised to the timestep (``render_start = 1``); ``render_start < 1``
noises the target instead for that share of samples, the classic diffusion objective that
later sampling steps see. Measured on lego with a few hundred CPU steps, half noisy targets
made the held-out views worse (−0.2 dB at strength 0.3: the model learns to copy its noisy
input at low noise levels, which is the render at inference) while render-started training
improved them; with a GPU and longer training the mixture is the choice for many-step sampling.

Everything random comes from one generator whose state is saved with the weights and Adam's
moments in ``checkpoint.safetensors``, so an interrupted run resumes exactly where it
stopped. The trained model is written with ``save_pretrained`` (safetensors) into a folder
that :meth:`BuiltinRefiner.from_pretrained` reads back.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from splatfx.core.atomic import atomic_path, write_text_atomic
from splatfx.core.camera import Camera
from splatfx.core.errors import InputError
from splatfx.core.gaussians import Gaussians
from splatfx.core.losses import dssim
from splatfx.core.progress import make_progress
from splatfx.raster.views import render_view, resolve_device
from splatfx.refine.base import BUILTIN_CONFIG, Refiner, denoise, read_json

PathLike = str | os.PathLike[str]
FORMAT = "splatfx-builtin-refiner-1"
CHECKPOINT = "checkpoint.safetensors"
TIMESTEPS = 1000


# --- the model ------------------------------------------------------------------------------------

def make_unet(channels: Sequence[int] = (16, 32, 64)) -> Any:
    """The refiner's UNet: render + noisy target in (6 channels), a correction out (3), no
    attention (fast on a CPU, memory linear in the frame size), the output layer zeroed so
    that it starts as the identity."""
    from diffusers import UNet2DModel

    unet = UNet2DModel(
        in_channels=6, out_channels=3, block_out_channels=tuple(channels), layers_per_block=1,
        down_block_types=("DownBlock2D",) * len(channels), up_block_types=("UpBlock2D",) * len(channels),
        norm_num_groups=8, time_embedding_type="positional", add_attention=False,
    )
    torch.nn.init.zeros_(unet.conv_out.weight)
    torch.nn.init.zeros_(unet.conv_out.bias)
    with torch.no_grad():  # the noisy input starts disconnected: early training sees clean features
        unet.conv_in.weight[:, 3:] = 0
    return unet


def make_scheduler() -> Any:
    """DDIM over 1000 cosine-schedule timesteps, predicting the clean image, trailing spacing."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=TIMESTEPS, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                         timestep_spacing="trailing", clip_sample=True)


class BuiltinRefiner(Refiner):
    """The per-scene sharpening pass (see the module doc); pixel space, noise of 3 channels."""

    noise_channels = 3
    noise_scale = 1

    def __init__(self, unet: Any, scheduler: Any, device: str = "auto", info: dict[str, Any] | None = None) -> None:
        self.device = resolve_device(device)
        self.unet = unet.to(self.device)
        self.scheduler = scheduler
        self.size_multiple = 2 ** (len(unet.config.block_out_channels) - 1)
        self.info = dict(info or {})
        self.path: Path | None = None

    @classmethod
    def create(cls, channels: Sequence[int] = (16, 32, 64), device: str = "auto") -> "BuiltinRefiner":
        return cls(make_unet(channels), make_scheduler(), device)

    def x0(self, render: Tensor, noisy: Tensor, t: Tensor | int) -> Tensor:
        """The clean image predicted from ``render`` and ``noisy`` (both in [-1, 1])."""
        return render + self.unet(torch.cat([render, noisy], dim=1), t).sample

    @property
    def sampling_steps(self) -> int | None:
        """The steps it runs whatever it is asked for: 1 for a model trained from noised renders
        alone (``render_start = 1``, the default): it is nearly deterministic, and 4 steps gave
        the same figures as 1 within ±0.003 dB at 4 times the cost (docs/refine.md). None (run
        what is asked) for a model trained on noisy targets too, made for many-step sampling."""
        render_start = self.info.get("training", {}).get("render_start", 1.0)
        return 1 if render_start >= 1 else None

    def _refine(self, images: Tensor, strength: Tensor, noise: Tensor, steps: int) -> Tensor:
        self.unet.eval()
        render = images.to(self.device) * 2 - 1
        steps = min(steps, self.sampling_steps or steps)
        out = denoise(render, noise.to(self.device), strength.to(self.device), self.scheduler, steps,
                      lambda x, t: self.x0(render, x, t))
        return (out + 1) / 2

    def bytes_per_pixel(self) -> float:
        """Measured: 1.0-1.3 KB per pixel for widths 16/32/64 on 512-4096 px square inputs
        (activations at full resolution dominate; they scale with the first width)."""
        return 84.0 * self.unet.config.block_out_channels[0]

    def describe(self) -> dict[str, Any]:
        return {"kind": "builtin", "pass": "per-scene sharpening",
                "model": None if self.path is None else str(self.path),
                "channels": list(self.unet.config.block_out_channels), "sampling_steps": self.sampling_steps,
                **self.info}

    # --- saving and loading -------------------------------------------------------------------
    def save_pretrained(self, folder: PathLike) -> None:
        """Write ``folder`` (unet/, scheduler/, refiner_config.json) whole: it is built beside
        the target and swapped in, so a reader never sees half a model."""
        target = Path(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp.", dir=target.parent))
        try:
            self.unet.save_pretrained(staging / "unet", safe_serialization=True)
            self.scheduler.save_pretrained(staging / "scheduler")
            config = {"format": FORMAT, **self.info}
            (staging / BUILTIN_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            _swap_folder(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.path = target

    @classmethod
    def from_pretrained(cls, folder: PathLike, device: str = "auto") -> "BuiltinRefiner":
        """Load a model written by :meth:`save_pretrained` (local files only, safetensors)."""
        from diffusers import DDIMScheduler, UNet2DModel

        folder = Path(folder)
        info = read_json(folder / BUILTIN_CONFIG)
        if info.get("format") != FORMAT:
            raise InputError(folder / BUILTIN_CONFIG, f"is not a {FORMAT} model (format {info.get('format')!r})")
        try:
            unet = UNet2DModel.from_pretrained(folder / "unet", local_files_only=True, use_safetensors=True,
                                               low_cpu_mem_usage=False)
            scheduler = DDIMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
        except (OSError, ValueError) as exc:
            raise InputError(folder, f"cannot load the built-in sharpening pass: {' '.join(str(exc).split())}") from None
        info.pop("format")
        model = cls(unet, scheduler, device, info)
        model.path = folder
        return model


def _swap_folder(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` (renames only; the old folder is removed last)."""
    old = target.with_name(f".{target.name}.old.{os.getpid()}")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


# --- training pairs -------------------------------------------------------------------------------

@dataclass
class TrainingPairs:
    """Degraded renders and the real images they should become: (3, H, W) in [0, 1], display-referred."""

    degraded: list[Tensor] = field(default_factory=list)
    targets: list[Tensor] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def add(self, name: str, degraded: Tensor, target: Tensor) -> None:
        if degraded.shape != target.shape or degraded.ndim != 3 or degraded.shape[0] != 3:
            raise ValueError(f"pair {name}: degraded {tuple(degraded.shape)} and target {tuple(target.shape)} "
                             "must both be (3, H, W)")
        self.degraded.append(degraded.float().contiguous())
        self.targets.append(target.float().contiguous())
        self.names.append(name)

    def __len__(self) -> int:
        return len(self.degraded)


@dataclass(frozen=True)
class PairSettings:
    """Which degraded reconstructions the training pairs are rendered from."""

    views: int = 64  # training views used at most (evenly spaced)
    drop: float = 0.3  # fraction of Gaussians dropped
    jitter: float = 0.5  # position noise, as a multiple of each Gaussian's size
    lowres: float = 2.0  # render at 1/lowres of the size, then upsample
    degraded_per_view: int = 1  # degraded renders per view, besides the scene as trained


def degrade(scene: Gaussians, kind: str, settings: PairSettings, generator: torch.Generator) -> Gaussians:
    """``scene`` with Gaussians dropped (``"drop"``) or jittered (``"jitter"``), else as is."""
    if kind == "drop":
        keep = torch.rand(len(scene), generator=generator) >= settings.drop
        return scene[keep]
    if kind == "jitter":
        size = scene.log_scales.exp().mean(dim=1, keepdim=True)
        offset = torch.randn(scene.means.shape, generator=generator) * size * settings.jitter
        return scene.replace(means=scene.means + offset)
    return scene


def make_pairs(scene: Gaussians, dataset: Any, settings: PairSettings | None = None, *,
               early: Sequence[Gaussians] = (), seed: int = 0, backend: str = "auto",
               progress: bool = True) -> TrainingPairs:
    """Training pairs from ``dataset``'s views (a :class:`splatfx.io.dataset.Dataset`): each view
    rendered by ``scene`` as trained plus ``degraded_per_view`` degraded renders (drop,
    jitter, reduced resolution, and the ``early`` reconstructions in turn), against its image."""
    settings = settings or PairSettings()
    generator = torch.Generator().manual_seed(seed)
    kinds = ["drop", "jitter", "lowres", *[f"early{i}" for i in range(len(early))]]
    views = _spread(len(dataset), settings.views)
    background = torch.from_numpy(dataset.background)
    pairs = TrainingPairs()
    jobs = [(v, "scene") for v in views]
    jobs += [(v, kinds[(j * len(views) + n) % len(kinds)]) for j in range(settings.degraded_per_view)
             for n, v in enumerate(views)]
    bar = make_progress() if progress else None
    task = bar.add_task("refine pairs", total=len(jobs), rate="") if bar else None
    with bar if bar else contextlib.nullcontext():
        for view, kind in jobs:
            camera: Camera = dataset.frames[view].camera
            target = torch.from_numpy(dataset.image(view)).permute(2, 0, 1)
            gaussians = early[int(kind[5:])] if kind.startswith("early") else degrade(scene, kind, settings, generator)
            if kind == "lowres":
                small = camera.scaled(1.0 / settings.lowres)
                image = render_view(gaussians, small, background, backend).permute(2, 0, 1)
                image = F.interpolate(image[None], size=target.shape[-2:], mode="bilinear", align_corners=False)[0]
            else:
                image = render_view(gaussians, camera, background, backend).permute(2, 0, 1)
            pairs.add(f"{dataset.frames[view].name}:{kind}", image.clamp(0, 1).cpu(), target)
            if bar:
                bar.advance(task)
    return pairs


def _spread(n: int, most: int) -> list[int]:
    """At most ``most`` indices of ``range(n)``, evenly spaced."""
    if n <= most:
        return list(range(n))
    return sorted({round(i * (n - 1) / (most - 1)) for i in range(most)}) if most > 1 else [0]


# --- training -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainSettings:
    """How the built-in per-scene sharpening pass is trained."""

    max_steps: int = 400  # most of the gain in half the time: lego +0.21 dB, +0.28 at 800 steps (docs/refine.md)
    max_minutes: float | None = None  # stop cleanly (and save) after this much training time
    patch: int = 64  # side of the square training patches, pixels
    batch: int = 8  # patches per step
    lr: float = 2e-3  # Adam's learning rate (after a 50-step warm-up, cosine decay to 10 %)
    channels: tuple[int, ...] = (16, 32, 64)  # UNet widths per level
    render_start: float = 1.0  # share of samples noised from the render (what sampling starts from), not the target
    ssim_weight: float = 0.1  # loss: (1-w)·squared error + w·D-SSIM of the clean image
    checkpoint_every: int = 100
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.patch < 8 or self.batch < 1 or self.lr <= 0 or self.checkpoint_every < 1:
            raise ValueError(f"invalid refiner training settings: {self}")


class RefinerTrainer:
    """One training run of the built-in refiner on ``pairs``, checkpointed into ``folder``."""

    def __init__(self, pairs: TrainingPairs, folder: PathLike, settings: TrainSettings | None = None,
                 device: str = "auto", key: str = "") -> None:
        if len(pairs) == 0:
            raise ValueError("no training pairs")
        self.pairs = pairs
        self.key = key  # what the pairs were made from: a checkpoint with another key is not resumed
        self.folder = Path(folder)
        self.settings = settings or TrainSettings()
        self.device = resolve_device(device)
        with torch.random.fork_rng(devices=[]):  # the UNet's initial weights follow the seed
            torch.manual_seed(self.settings.seed)
            self.model = BuiltinRefiner.create(self.settings.channels, str(self.device))
        self.model.info = {"training": self._settings_dict()}  # how it samples (sampling_steps) while it trains
        self.scheduler = self.model.scheduler
        self.alphas = self.scheduler.alphas_cumprod.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.unet.parameters(), lr=self.settings.lr)
        self.generator = torch.Generator().manual_seed(self.settings.seed)
        self.step = 0
        self.elapsed = 0.0
        self.patch = self._patch_size()

    def _settings_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.settings).items()}

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / CHECKPOINT

    def _patch_size(self) -> int:
        smallest = min(min(d.shape[-2:]) for d in self.pairs.degraded)
        m = self.model.size_multiple
        return max(m, min(self.settings.patch, smallest) // m * m)

    def lr_at(self, step: int) -> float:
        """Linear warm-up over 50 steps, then cosine decay to 10 % at ``max_steps``."""
        base, total = self.settings.lr, self.settings.max_steps
        if step < 50:
            return base * (step + 1) / 50
        progress = min(1.0, (step - 50) / max(1, total - 50))
        return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    def sample_batch(self) -> tuple[Tensor, Tensor]:
        """Random patches (with flips) of random pairs: degraded and target, (B, 3, p, p) in [-1, 1]."""
        g, p = self.generator, self.patch
        degraded, targets = [], []
        for _ in range(self.settings.batch):
            i = int(torch.randint(len(self.pairs), (1,), generator=g))
            d, t = self.pairs.degraded[i], self.pairs.targets[i]
            y = int(torch.randint(d.shape[1] - p + 1, (1,), generator=g))
            x = int(torch.randint(d.shape[2] - p + 1, (1,), generator=g))
            flips = [dim for dim, f in zip((1, 2), torch.rand(2, generator=g).tolist()) if f < 0.5]
            crop_d, crop_t = d[:, y:y + p, x:x + p], t[:, y:y + p, x:x + p]
            if flips:
                crop_d, crop_t = crop_d.flip(flips), crop_t.flip(flips)
            degraded.append(crop_d)
            targets.append(crop_t)
        return torch.stack(degraded) * 2 - 1, torch.stack(targets) * 2 - 1

    def loss(self, predicted: Tensor, target: Tensor) -> Tensor:
        """Squared error of the clean image in [0, 1] units, plus a D-SSIM term when weighted."""
        a, b = (predicted + 1) / 2, (target + 1) / 2
        mse = F.mse_loss(a, b)
        w = self.settings.ssim_weight
        if w <= 0:
            return mse
        return (1 - w) * mse + w * dssim(a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1))

    def train_step(self) -> float:
        """One Adam step on a batch; returns the loss (mean squared error of x0, in [-1, 1] units)."""
        degraded, target = self.sample_batch()
        b = degraded.shape[0]
        t = torch.randint(TIMESTEPS, (b,), generator=self.generator)
        noise = torch.randn(target.shape, generator=self.generator)
        from_render = torch.rand(b, generator=self.generator) < self.settings.render_start
        degraded, target, noise, t, from_render = (v.to(self.device) for v in (degraded, target, noise, t, from_render))
        a = self.alphas[t].view(b, 1, 1, 1).float()
        clean = torch.where(from_render.view(b, 1, 1, 1), degraded, target)
        noisy = a.sqrt() * clean + (1 - a).sqrt() * noise
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.model.unet.train()
        loss = self.loss(self.model.x0(degraded, noisy, t), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def train(self) -> dict[str, Any]:
        """Train until ``max_steps`` or the time budget, checkpointing on schedule and at the end."""
        s = self.settings
        budget = None if s.max_minutes is None else s.max_minutes * 60.0
        start_step, before = self.step, self.elapsed
        t0 = time.perf_counter()
        ema = None
        stopped_by_budget = False
        bar = make_progress() if s.progress else None
        task = bar.add_task("refine train", total=s.max_steps, completed=self.step, rate="") if bar else None
        with bar if bar else contextlib.nullcontext():
            while self.step < s.max_steps:
                loss = self.train_step()
                ema = loss if ema is None else 0.95 * ema + 0.05 * loss
                run = time.perf_counter() - t0
                if self.step % s.checkpoint_every == 0:
                    self.elapsed = before + run
                    self.save_checkpoint()
                if bar and (self.step % 10 == 0 or self.step == s.max_steps):
                    rate = (self.step - start_step) / max(run, 1e-9)
                    bar.update(task, completed=self.step, rate=f"loss {ema:.4f}  {rate:.2f} it/s")
                if budget is not None and run >= budget:
                    stopped_by_budget = True
                    break
        self.elapsed = before + time.perf_counter() - t0
        self.save_checkpoint()
        self.model.info = {"steps": self.step, "train_seconds": round(self.elapsed, 1), "pairs": len(self.pairs),
                           "training": self._settings_dict()}
        return {"steps": self.step, "train_seconds": self.elapsed, "loss_ema": ema,
                "stopped_by_time_budget": stopped_by_budget, "pairs": len(self.pairs), "patch": self.patch}

    # --- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Weights, Adam's moments, the generator's state and the step, atomically."""
        tensors = {f"param/{n}": p.detach() for n, p in self.model.unet.named_parameters()}
        names = {id(p): n for n, p in self.model.unet.named_parameters()}
        for param, state in self.optimizer.state.items():
            for key, value in state.items():
                tensors[f"adam/{names[id(param)]}/{key}"] = torch.as_tensor(value).detach()
        tensors["rng/generator"] = self.generator.get_state()
        tensors = {k: v.cpu().contiguous().clone() for k, v in tensors.items()}
        meta = {"format": FORMAT, "step": str(self.step), "elapsed_s": repr(self.elapsed),
                "settings": json.dumps(asdict(self.settings)), "key": self.key}
        with atomic_path(self.checkpoint_path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return self.checkpoint_path

    def restore(self, path: PathLike | None = None) -> bool:
        """Continue from a checkpoint (default: this folder's); False when there is none or it
        was made from other pairs (another ``key``), in which case training starts afresh.

        InputError if it is unreadable or was made for a model of another shape."""
        path = Path(path) if path is not None else self.checkpoint_path
        if not path.is_file():
            return False
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as exc:
            raise InputError(path, f"unreadable refiner checkpoint: {exc}") from None
        if meta.get("format") != FORMAT:
            raise InputError(path, f"is not a {FORMAT} checkpoint")
        if meta.get("key", "") != self.key:
            return False
        saved = json.loads(meta.get("settings", "{}"))
        if list(saved.get("channels", [])) != list(self.settings.channels):
            raise InputError(path, f"was made for UNet widths {saved.get('channels')}, not {list(self.settings.channels)}")
        params = dict(self.model.unet.named_parameters())
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(tensors[f"param/{name}"].to(p.device))
        self.optimizer.state.clear()
        for name, p in params.items():
            state = {k.rsplit("/", 1)[1]: v for k, v in tensors.items() if k.startswith(f"adam/{name}/")}
            if state:
                self.optimizer.state[p] = {k: v if k == "step" else v.to(p.device) for k, v in state.items()}
        self.generator.set_state(tensors["rng/generator"])
        self.step = int(meta["step"])
        self.elapsed = float(meta["elapsed_s"])
        return True


def train_refiner(pairs: TrainingPairs, model_dir: PathLike, checkpoint_dir: PathLike,
                  settings: TrainSettings | None = None, *, resume: bool = True, key: str = "",
                  device: str = "auto") -> tuple[BuiltinRefiner, dict[str, Any]]:
    """Train (resuming ``checkpoint_dir``'s checkpoint of the same ``key`` when asked) and
    save the model to ``model_dir``."""
    trainer = RefinerTrainer(pairs, checkpoint_dir, settings, device, key)
    resumed_from = trainer.step if resume and trainer.restore() else None
    figures = trainer.train()
    figures["resumed_from"] = resumed_from
    trainer.model.save_pretrained(model_dir)
    write_text_atomic(Path(checkpoint_dir) / "train.json", json.dumps(figures, indent=2) + "\n")
    return trainer.model, figures
