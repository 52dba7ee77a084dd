"""Diffusion refinement of rendered frames (``splatfx refine``).

* :mod:`.base`: the common :class:`~.base.Refiner` interface (frames, per-pixel
  strength and noise in, refined frames out) and the shared DDIM loop;
* :mod:`.pipeline`: :func:`~.pipeline.load_refiner`, whichever kind a model folder holds;
* :mod:`.local_model`: any local diffusers image model folder, loaded offline;
* :mod:`.builtin`: the small per-scene conditional diffusion model, trained on the shot;
* :mod:`.noise_warp`: N(0,1) noise carried along the render's motion vectors;
* :mod:`.stage`: the stage on a shot folder (``render/`` → ``refine/``).

See ``docs/refine.md``.
"""

from splatfx.refine.noise_warp import NoiseWarper, warp_noise
from splatfx.refine.base import Refiner
from splatfx.refine.pipeline import load_refiner

__all__ = ["NoiseWarper", "Refiner", "load_refiner", "warp_noise"]
