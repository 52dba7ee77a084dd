"""Diffusion refinement of rendered frames (``splatfx refine``).

* :mod:`.pipeline`: the common :class:`~.pipeline.Refiner` interface (frames, per-pixel
  strength and noise in, refined frames out) and the shared DDIM loop;
* :mod:`.local_model`: any local diffusers image model folder, loaded offline;
* :mod:`.builtin`: the small per-scene conditional diffusion model, trained on the shot;
* :mod:`.noise_warp`: N(0,1) noise carried along the render's motion vectors;
* :mod:`.stage`: the stage on a shot folder (``render/`` → ``refine/``).

See ``docs/refine.md``.
"""

from splatfx.refine.noise_warp import NoiseWarper, warp_noise
from splatfx.refine.pipeline import Refiner, load_refiner

__all__ = ["NoiseWarper", "Refiner", "load_refiner", "warp_noise"]
