"""The common interface of the refiners: a batch of frames, a strength map and noise in,
refined frames out.

Every refiner (a local diffusers model, :mod:`splatfx.refine.local_model`; the per-scene
model, :mod:`splatfx.refine.builtin`) is a :class:`Refiner`:

* ``images`` (B, 3, H, W): display-referred (sRGB-encoded) colour in [0, 1], as the
  models were trained on;
* ``strength`` (B, 1, H, W) in [0, 1]: how far each pixel may move away from its render
  (0: kept; the stage puts ``[refine] strength`` on synthetic pixels and 1 in holes to fill);
* ``noise`` (B, C, h, w) of :meth:`Refiner.noise_shape`: N(0,1) noise in the model's own
  space (latents, or pixels), usually warped along the motion (:mod:`.noise_warp`) so that
  the result is stable from frame to frame.

All refiners denoise with DDIM (``eta = 0``): deterministic given the noise, which is what
makes warped noise give temporally consistent frames (a stochastic sampler would inject
fresh noise at every step). :func:`denoise` is the one loop they share: img2img
(SDEdit) from the render, with a per-pixel strength as in *Differential Diffusion*
(Levin & Fried, 2024): a pixel is held to its noised render until the schedule reaches
its own strength, then released to the model.

:func:`splatfx.refine.pipeline.load_refiner` tells which kind a model folder holds and loads it.
"""

from __future__ import annotations

import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from splatfx.core.errors import InputError

PathLike = str | os.PathLike[str]
#: Marks a folder holding the built-in per-scene refiner (see :mod:`.builtin`).
BUILTIN_CONFIG = "refiner_config.json"
#: Marks a diffusers pipeline folder (``save_pretrained`` of any pipeline).
DIFFUSERS_INDEX = "model_index.json"

Predict = Callable[[Tensor, Tensor], Tensor]


class Refiner(ABC):
    """A diffusion model that refines rendered frames (see the module doc).

    Subclasses set ``noise_channels`` and ``noise_scale`` (frame pixels per noise cell:
    8 for a latent model with an 8× autoencoder, 1 in pixel space) and ``size_multiple``
    (frames are padded to a multiple of it), implement :meth:`_refine` on padded frames, and
    estimate their working memory (:meth:`bytes_per_pixel`).
    """

    noise_channels: int
    noise_scale: int
    size_multiple: int

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        m = self.size_multiple
        return math.ceil(height / m) * m, math.ceil(width / m) * m

    def noise_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of the noise one frame of ``height`` × ``width`` pixels needs."""
        ph, pw = self.padded_size(height, width)
        return self.noise_channels, ph // self.noise_scale, pw // self.noise_scale

    @torch.no_grad()
    def refine(self, images: Tensor, strength: Tensor, noise: Tensor, steps: int) -> Tensor:
        """Refined ``images`` (B, 3, H, W) in [0, 1], float32 on the CPU; ``steps`` DDIM steps
        are run on the pixels of the largest strength (fewer on weaker ones)."""
        b, c, h, w = images.shape
        if c != 3 or tuple(strength.shape) != (b, 1, h, w):
            raise ValueError(f"expected images (B, 3, H, W) and strength (B, 1, H, W), got "
                             f"{tuple(images.shape)} and {tuple(strength.shape)}")
        if tuple(noise.shape) != (b, *self.noise_shape(h, w)):
            raise ValueError(f"noise must be {(b, *self.noise_shape(h, w))} for {h}x{w} frames, "
                             f"got {tuple(noise.shape)}")
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        ph, pw = self.padded_size(h, w)
        out = self._refine(pad_frames(images.float(), ph, pw), pad_frames(strength.float(), ph, pw),
                           noise.float(), steps)
        return out[:, :, :h, :w].float().clamp(0, 1).cpu()

    def bytes_per_pixel(self) -> float:
        """Working memory of one model call per pixel of the frames (or tiles) in it, an
        estimate the stage fits its batch with (:func:`splatfx.refine.tiles.fit_batch`)."""
        return 2048.0

    @abstractmethod
    def _refine(self, images: Tensor, strength: Tensor, noise: Tensor, steps: int) -> Tensor:
        """:meth:`refine` on frames already padded to ``size_multiple``."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What the refiner is, for the manifest (kind, model folder, settings)."""


def pad_frames(frames: Tensor, height: int, width: int) -> Tensor:
    """(B, C, H, W) padded at the bottom and right to ``height`` × ``width`` by repeating the
    last row and column (a model sees no artificial edge; the padding is cropped off)."""
    h, w = frames.shape[-2:]
    if (h, w) == (height, width):
        return frames
    return F.pad(frames, (0, width - w, 0, height - h), mode="replicate")


def strength_steps(strength: Tensor, steps: int) -> Tensor:
    """How many of the ``steps`` each pixel is refined for: ``round(steps · s / max s)``."""
    top = float(strength.max())
    if top <= 0:
        return torch.zeros_like(strength, dtype=torch.long)
    return torch.round(steps * strength / top).long()


def strength_timesteps(scheduler: Any, steps: int, strength: float) -> Tensor:
    """The last ``steps`` timesteps of a DDIM schedule of ``ceil(steps / strength)`` steps:
    img2img that starts at noise level ``strength`` and runs exactly ``steps`` steps."""
    total_train = int(scheduler.config.num_train_timesteps)
    steps = min(steps, total_train)
    total = min(total_train, max(steps, math.ceil(steps / strength)))
    scheduler.set_timesteps(total)
    return scheduler.timesteps[-steps:]


def denoise(reference: Tensor, noise: Tensor, strength: Tensor, scheduler: Any, steps: int,
            predict: Predict) -> Tensor:
    """DDIM img2img from ``reference`` (B, C, h, w, the model's clean space) with per-pixel
    ``strength`` (B, 1, h, w): pixels are held to ``reference`` noised with ``noise`` until
    their last ``strength_steps`` steps; pixels of strength 0 come back as ``reference``.

    ``predict(x_t, t)`` returns the model output the scheduler's ``prediction_type`` expects.
    """
    top = float(strength.max())
    if top <= 0:
        return reference.clone()
    timesteps = strength_timesteps(scheduler, steps, top)
    steps = len(timesteps)
    own = strength_steps(strength, steps)
    batch = reference.shape[0]
    x = scheduler.add_noise(reference, noise, timesteps[:1].repeat(batch))
    for i, t in enumerate(timesteps):
        held = own < steps - i
        if bool(held.any()):
            x = torch.where(held, scheduler.add_noise(reference, noise, t.repeat(batch)), x)
        x = scheduler.step(predict(scheduler.scale_model_input(x, t), t), t, x).prev_sample
    return torch.where(own > 0, x, reference)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; InputError naming the file if it is missing or malformed."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"is not readable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InputError(path, "must hold a JSON object")
    return value
