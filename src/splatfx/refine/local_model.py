"""Refining with any local diffusers image model: a pipeline folder, loaded offline (a hub
id's snapshot in the Hugging Face cache is such a folder: :mod:`splatfx.refine.hub`).

The folder is what ``DiffusionPipeline.save_pretrained`` writes (``model_index.json`` and
one sub-folder per component). Only the components refinement needs are loaded, each
from safetensors weights with ``local_files_only=True`` (nothing is downloaded, no code
from the folder is run):

* ``unet``: a ``UNet2DConditionModel`` (text-conditioned: Stable Diffusion 1.x/2.x and
  fine-tunes of them) or a ``UNet2DModel`` (unconditional); an inpainting UNet (latent +
  mask + masked-image channels) is fed its mask from the strength map;
* ``vae`` (optional): an ``AutoencoderKL``/``VQModel``; without one the model works on pixels;
* ``text_encoder`` + ``tokenizer`` (optional, from transformers): the prompt and, with
  ``guidance > 1``, classifier-free guidance against the negative prompt;
* ``scheduler``: its configuration (betas, prediction type) is kept, the sampler is DDIM.

Images go through the autoencoder's deterministic mode (no sampling), so equal frames give
equal latents.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from splatfx.core.errors import InputError
from splatfx.raster.views import resolve_device
from splatfx.refine.base import DIFFUSERS_INDEX, Refiner, denoise, read_json
from splatfx.refine.hub import hub_name

PathLike = str | os.PathLike[str]
# Libraries a model folder may name for its components (nothing else is imported).
_LIBRARIES = ("diffusers", "transformers")


@dataclass(frozen=True)
class LocalModelSettings:
    """How a local diffusers model is run."""

    prompt: str = ""  # what the frames show, for text-conditioned models
    negative_prompt: str = ""  # what to steer away from (with guidance > 1)
    guidance: float = 1.0  # classifier-free guidance scale; 1: none (one model call per step)
    device: str = "auto"  # "auto": CUDA when available, else the CPU
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: float16 on CUDA, float32 on the CPU


class LocalModelRefiner(Refiner):
    """A diffusers image model used for img2img refinement (see the module doc)."""

    def __init__(self, path: PathLike, components: dict[str, Any], settings: LocalModelSettings) -> None:
        from diffusers import DDIMScheduler

        self.path = Path(path)
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.dtype = _dtype(settings.dtype, self.device)
        self.unet = components["unet"].to(self.device).eval()
        self.vae = components.get("vae")
        if self.vae is not None:
            self.vae = self.vae.to(self.device).eval()
        self.text_encoder = components.get("text_encoder")
        if self.text_encoder is not None:
            self.text_encoder = self.text_encoder.to(self.device).eval()
        self.tokenizer = components.get("tokenizer")
        config = dict(components["scheduler"].config)
        config.setdefault("clip_sample", self.vae is None)  # latents are not bounded to [-1, 1]
        self.scheduler = DDIMScheduler.from_config(config)
        self.latent_channels = self.vae.config.latent_channels if self.vae is not None else 3
        self.inpainting = self.unet.config.in_channels == 2 * self.latent_channels + 1
        if not self.inpainting and self.unet.config.in_channels != self.latent_channels:
            raise InputError(self.path / "unet", f"takes {self.unet.config.in_channels} input channels, but the "
                                                 f"model's images have {self.latent_channels}")
        self.conditional = getattr(self.unet.config, "cross_attention_dim", None) is not None
        if self.conditional and (self.text_encoder is None or self.tokenizer is None):
            raise InputError(self.path, "the unet is text-conditioned but the folder has no text_encoder and tokenizer")
        self.noise_channels = self.latent_channels
        self.noise_scale = _vae_factor(self.vae)
        self.size_multiple = self.noise_scale * 2 ** (len(self.unet.config.block_out_channels) - 1)
        self._embeddings: Tensor | None = None

    # --- loading -----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: PathLike, settings: LocalModelSettings | None = None) -> "LocalModelRefiner":
        """Load the pipeline folder ``path`` offline (InputError naming what is missing or broken)."""
        folder = Path(path)
        index = read_json(folder / DIFFUSERS_INDEX)
        if "unet" not in index:
            raise InputError(folder / DIFFUSERS_INDEX, "names no unet: only UNet-based image models can refine "
                                                      "(transformer-based pipelines such as SD3 or Flux are not supported)")
        settings = settings or LocalModelSettings()
        dtype = _dtype(settings.dtype, resolve_device(settings.device))
        components = {}
        for name in ("unet", "vae", "vqvae", "text_encoder", "tokenizer", "scheduler"):
            entry = index.get(name)
            if isinstance(entry, list) and len(entry) == 2 and entry[1] is not None:
                components["vae" if name == "vqvae" else name] = _load_component(folder, name, entry, dtype)
        if "scheduler" not in components:
            raise InputError(folder / DIFFUSERS_INDEX, "names no scheduler")
        return cls(folder, components, settings)

    def describe(self) -> dict[str, Any]:
        return {"kind": "diffusers", "model": hub_name(self.path) or str(self.path), "unet": type(self.unet).__name__,
                "latent": self.vae is not None, "inpainting": self.inpainting, **asdict(self.settings),
                "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch.")}

    # --- refining -----------------------------------------------------------------------------
    def bytes_per_pixel(self) -> float:
        """An estimate: the autoencoder's full-resolution activations (about 24 tensors of its
        first width) and the UNet's at the latent grid (twice with guidance); attention's
        quadratic term is bounded by the tile size."""
        size = torch.finfo(self.dtype).bits // 8
        unet = 24 * self.unet.config.block_out_channels[0] * size / self.noise_scale ** 2 * (2 if self.guided else 1)
        vae = 24 * self.vae.config.block_out_channels[0] * size if self.vae is not None else 0
        return float(unet + vae + 64)

    def _refine(self, images: Tensor, strength: Tensor, noise: Tensor, steps: int) -> Tensor:
        pixels = images.to(self.device, self.dtype) * 2 - 1
        reference = self.encode(pixels)
        cells = strength.to(self.device, self.dtype)
        if self.noise_scale > 1:
            cells = torch.nn.functional.max_pool2d(cells, self.noise_scale)
        extra = self._inpainting_input(pixels, cells) if self.inpainting else None
        context = self._context(len(images))

        def predict(x: Tensor, t: Tensor) -> Tensor:
            return self._predict(x, t, extra, context)

        latents = denoise(reference, noise.to(self.device, self.dtype), cells, self.scheduler, steps, predict)
        return (self.decode(latents) + 1) / 2

    def encode(self, pixels: Tensor) -> Tensor:
        """Pixels in [-1, 1] to the model's clean space (latents, or the pixels themselves)."""
        if self.vae is None:
            return pixels
        encoded = self.vae.encode(pixels)
        latents = encoded.latent_dist.mode() if hasattr(encoded, "latent_dist") else encoded.latents
        return (latents - self._shift()) * self._scale()

    def decode(self, latents: Tensor) -> Tensor:
        if self.vae is None:
            return latents
        return self.vae.decode(latents / self._scale() + self._shift()).sample

    def _scale(self) -> float:
        return float(getattr(self.vae.config, "scaling_factor", 1.0) or 1.0)

    def _shift(self) -> float:
        return float(getattr(self.vae.config, "shift_factor", 0.0) or 0.0)

    def _inpainting_input(self, pixels: Tensor, cells: Tensor) -> Tensor:
        """An inpainting UNet's extra channels: the repaint mask and the latents of what is kept."""
        mask = (cells > 0).to(pixels.dtype)
        full = torch.nn.functional.interpolate(mask, size=pixels.shape[-2:], mode="nearest")
        return torch.cat([mask, self.encode(pixels * (1 - full))], dim=1)

    def _context(self, batch: int) -> Tensor | None:
        """Prompt embeddings for a batch, the negative prompt's first when guiding."""
        if not self.conditional:
            return None
        if self._embeddings is None:
            prompts = [self.settings.prompt]
            if self.guided:
                prompts.insert(0, self.settings.negative_prompt)
            tokens = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                    truncation=True, return_tensors="pt")
            self._embeddings = self.text_encoder(tokens.input_ids.to(self.device))[0].to(self.dtype)
        return self._embeddings.repeat_interleave(batch, dim=0)

    @property
    def guided(self) -> bool:
        return self.conditional and self.settings.guidance > 1.0

    def _predict(self, x: Tensor, t: Tensor, extra: Tensor | None, context: Tensor | None) -> Tensor:
        """The UNet's output for ``x`` at ``t``, with classifier-free guidance when asked."""
        inputs = x if extra is None else torch.cat([x, extra], dim=1)
        if not self.conditional:
            return self.unet(inputs, t).sample
        if not self.guided:
            return self.unet(inputs, t, encoder_hidden_states=context).sample
        uncond, cond = self.unet(torch.cat([inputs, inputs]), t, encoder_hidden_states=context).sample.chunk(2)
        return uncond + self.settings.guidance * (cond - uncond)


def _load_component(folder: Path, name: str, entry: list, dtype: torch.dtype) -> Any:
    """One component of a pipeline folder, offline and from safetensors only, in ``dtype``."""
    library, class_name = entry
    if library not in _LIBRARIES:
        raise InputError(folder / DIFFUSERS_INDEX, f"component {name!r} comes from {library!r}; "
                                                  f"only {' and '.join(_LIBRARIES)} components can be loaded")
    try:
        cls = getattr(importlib.import_module(library), class_name)
    except ImportError:
        raise InputError(folder / name, f"needs the {library!r} package (pip install {library})") from None
    except AttributeError:
        raise InputError(folder / DIFFUSERS_INDEX, f"{library} has no class {class_name!r} "
                                                  f"(component {name!r})") from None
    kwargs: dict[str, Any] = {"local_files_only": True}
    if name not in ("tokenizer", "scheduler"):
        kwargs["use_safetensors"] = True
        if library == "diffusers":
            kwargs.update(torch_dtype=dtype, low_cpu_mem_usage=False)
        else:
            kwargs["dtype"] = dtype
    try:
        return cls.from_pretrained(folder / name, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise InputError(folder / name, f"cannot load {class_name}: {' '.join(str(exc).split())}") from None


def _vae_factor(vae: Any) -> int:
    if vae is None:
        return 1
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)
