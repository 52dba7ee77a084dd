"""What the fx settings cost in memory, estimated before a simulation starts.

The caches are kept whole until they are written, so their size is known from the settings
and the shot's frame count: a particle holds position and velocity (3 float32 each), an
alive flag, a size and an opacity (float32) per frame, plus its float64 state and
neighbour look-ups while it is simulated. The estimates are deliberately generous;
:func:`splatfx.core.memory.require_memory` compares them with the memory available.
"""

from __future__ import annotations

from splatfx.core.memory import MemoryCost, require_memory
from splatfx.fx.snow import SnowSettings, Volume
from splatfx.shot.config import CollapseSection

PARTICLE_FRAME_BYTES = 33  # positions, velocities (3 × float32 each), alive (bool), size, opacity (float32)
PARTICLE_WORK_BYTES = 512  # float64 state, curl noise and colour look-ups while simulating
FRAGMENT_FRAME_BYTES = 57  # position (3 × float64), rotation (4 × float64), visible (bool)
FRAGMENT_BYTES = 64 * 1024  # hull, MuJoCo mesh, welds and contacts of one body
FILL_BYTES = 1024  # one fill Gaussian, and the face samples it is chosen from
FLAKE_FRAME_BYTES = 45  # a particle's per-frame arrays, the opacities made in float64 first
FLAKE_WORK_BYTES = 512


def require_collapse_memory(section: CollapseSection, frames: int, where: str, selected: int = 0) -> float:
    """The collapse's estimated bytes; ConfigError naming the ``[fx.collapse]`` setting
    (``where`` is its table label) and its largest value that fits, if they do not fit."""
    particle = PARTICLE_FRAME_BYTES * frames + PARTICLE_WORK_BYTES
    costs = [MemoryCost(f"{where} debris", section.debris, particle),
             MemoryCost(f"{where} dust", section.dust, particle),
             MemoryCost(f"{where} fragments", min(section.fragments, max(selected, 1)),
                        FRAGMENT_FRAME_BYTES * frames + FRAGMENT_BYTES)]
    if section.fill:
        costs.append(MemoryCost(f"{where} fill_max", section.fill_max, FILL_BYTES))
    return require_memory(costs, what="the collapse")


def require_snow_memory(density: float, settings: SnowSettings, volume: Volume, frames: int, fps: float,
                        where: str) -> float:
    """The snow's estimated bytes for ``[fx.snow] density`` (``settings``: the particle
    settings made from it); ConfigError naming it and the largest density that fits."""
    height = float(volume.hi[2] - volume.lo[2])
    # the expected flake count of simulate_snow: the volume filled at frame 0, then births per frame
    flakes = settings.density * volume.area * (height / settings.speed + (frames - 1) / fps)
    per_flake = FLAKE_FRAME_BYTES * frames + FLAKE_WORK_BYTES
    per_density = flakes / density * per_flake if density > 0 else 0.0
    return require_memory([MemoryCost(f"{where} density", density, per_density)], what="the snow")
