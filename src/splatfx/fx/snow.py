"""Snowfall: small white Gaussians falling through the visible volume with wind and
turbulence, settling on the scene's surfaces and accumulating there over the shot.

Flakes are flat (a third as thick as wide), turned at random and of varied sizes, so each
projects to a small ellipse that the shutter streaks. :func:`lens_look` then gives them
the plate camera's eye: a flake near the lens is out of focus (its Gaussian grows by the
circle of confusion of a lens focused on the scene, and its opacity falls so that it keeps
its brightness: a large, faint blur, never an opaque disc), and a flake smaller than a
pixel far away fades instead of being drawn as a whole bright pixel (the renderer's
0.3 px² low-pass, compensated as Mip-Splatting does).

Surfaces come from the reconstruction's occupancy: a height map of the highest opaque
Gaussian in each ground cell (the ground plane z = 0 where there is none). A flake
that reaches the height map under it stops there for the rest of the shot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splatfx.fx.particles import CurlNoise, ParticleCache, random_quats
from splatfx.core.sh import SH_C0


@dataclass(frozen=True)
class SnowSettings:
    density: float = 40.0  # flakes born per square metre per second
    size: float = 0.012  # metres (Gaussian standard deviation)
    speed: float = 1.0  # m/s fall speed
    speed_jitter: float = 0.25  # relative spread of fall speeds
    wind: tuple[float, float, float] = (0.4, 0.1, 0.0)  # m/s
    turbulence: float = 0.3  # m/s curl-noise strength
    opacity: float = 0.8
    settle: bool = True
    max_flakes: int = 200_000
    size_jitter: float = 0.4  # log-normal spread of flake sizes
    thickness: float = 0.3  # a flake's thickness / its width


#: The renderer's low-pass: added to every projected covariance (pixels²).
EPS2D = 0.3
#: Flakes nearer the plate camera than this (metres) are not drawn: so far out of focus that
#: they would only lay a faint veil over the whole frame (and touch every pixel of the comp).
LENS_CLEARANCE = 1.0


@dataclass(frozen=True)
class Lens:
    """The plate cameras as a lens sees the flakes: their centres (K,3, physics frame),
    one per frame when ``per_frame`` (else the nearest is used), focal length in pixels,
    focus distance (metres) and ``defocus``: the circle of confusion (diameter, pixels) of
    a point 1 m from the lens."""

    centres: np.ndarray
    focal: float
    focus: float
    defocus: float
    per_frame: bool = False

    def distance(self, points: np.ndarray, frame: int) -> np.ndarray:
        if self.per_frame:
            return np.linalg.norm(points - self.centres[min(frame, len(self.centres) - 1)], axis=1)
        d = np.full(len(points), np.inf)
        for centre in self.centres:
            d = np.minimum(d, np.linalg.norm(points - centre, axis=1))
        return d

    def pixels(self, size: np.ndarray | float, distance: np.ndarray | float) -> np.ndarray:
        """Projected standard deviation (pixels) of a Gaussian of std ``size`` at ``distance``."""
        return self.focal * np.asarray(size) / np.maximum(distance, 1e-6)


def lens_look(lens: Lens, positions: np.ndarray, sizes: np.ndarray, opacities: np.ndarray, frame: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Sizes and opacities of flakes as the plate camera of ``frame`` sees them: grown by
    the lens's blur out of focus, opacity scaled so each keeps its integrated brightness."""
    z = np.maximum(lens.distance(positions, frame), 0.05)
    sharp = lens.pixels(sizes, z)
    coc = lens.defocus * np.abs(1.0 / z - 1.0 / lens.focus) / max(1.0 - 1.0 / lens.focus, 1e-3)
    blur = coc / 2.0  # a disc of diameter c has a standard deviation of about c/2.35; err on soft
    grown = np.sqrt(sharp ** 2 + blur ** 2)
    keep = sharp ** 2 / (grown ** 2 + EPS2D)
    keep[z < LENS_CLEARANCE] = 0.0  # on the lens itself: a frame-wide faint veil, never a flake
    return (grown * z / lens.focal).astype(np.float32), (opacities * keep).astype(np.float32)


class TooManyFlakes(ValueError):
    """The settings need more flakes than ``max_flakes`` allows (the stage names the setting).

    ``fraction``: the share of the current density that fits, so that even a draw three
    standard deviations above the expected (Poisson) flake count stays within the limit."""

    def __init__(self, needed: int, max_flakes: int, expected: float) -> None:
        super().__init__(f"snow would need {needed} flakes (more than max_flakes={max_flakes}): "
                         "lower the density or raise max_flakes")
        self.needed = needed
        self.max_flakes = max_flakes
        fitting_mean = ((np.sqrt(9.0 + 4.0 * max_flakes) - 3.0) / 2.0) ** 2  # mean + 3 sqrt(mean) = max_flakes
        self.fraction = min(fitting_mean / expected, 1.0) if expected > 0 else 1.0


#: The snow volume is at least this wide along x and y (metres).
MIN_SPAN = 1.0


@dataclass(frozen=True)
class Volume:
    """The axis-aligned box (physics frame) snow falls through."""

    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def around(cls, points: np.ndarray, margin: float = 0.1, headroom: float = 0.3) -> "Volume":
        """A box over the central 96% of the scene points, widened by ``margin`` of its
        size (and to at least :data:`MIN_SPAN` across, so a scene of a few points still
        gets snow around them), from the ground to ``headroom`` above the top.

        ``points`` must hold at least one point (ValueError otherwise: the stage says
        which scene is empty)."""
        points = np.asarray(points, np.float64).reshape(-1, 3)
        if len(points) == 0:
            raise ValueError("snow needs at least one scene point to fall around")
        lo, hi = np.percentile(points, 2, axis=0), np.percentile(points, 98, axis=0)
        size = hi - lo
        lo = lo - margin * size
        hi = hi + margin * size
        widen = np.maximum(MIN_SPAN - (hi[:2] - lo[:2]), 0.0) / 2.0
        lo[:2], hi[:2] = lo[:2] - widen, hi[:2] + widen
        lo[2], hi[2] = 0.0, max(hi[2], 1.0) * (1.0 + headroom)
        return cls(lo, hi)

    @property
    def area(self) -> float:
        return float((self.hi[0] - self.lo[0]) * (self.hi[1] - self.lo[1]))


class HeightMap:
    """Highest opaque surface above each ground cell (cell size ``cell`` metres)."""

    def __init__(self, points: np.ndarray, volume: Volume, cell: float) -> None:
        self.lo, self.cell = volume.lo[:2], cell
        self.shape = np.maximum(np.ceil((volume.hi[:2] - volume.lo[:2]) / cell).astype(int), 1)
        self.height = np.zeros(self.shape)
        ij = self._cells(points[:, :2])
        ok = np.all((ij >= 0) & (ij < self.shape), axis=1) & (points[:, 2] > 0)
        np.maximum.at(self.height, (ij[ok, 0], ij[ok, 1]), points[ok, 2])

    def _cells(self, xy: np.ndarray) -> np.ndarray:
        return np.floor((xy - self.lo) / self.cell).astype(int)

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        ij = np.clip(self._cells(xy), 0, self.shape - 1)
        return self.height[ij[:, 0], ij[:, 1]]


def simulate_snow(frames: int, fps: float, volume: Volume, surfaces: HeightMap | None,
                  settings: SnowSettings = SnowSettings(), seed: int = 0, substeps: int = 2,
                  lens: Lens | None = None) -> ParticleCache:
    """Simulate snowfall for ``frames`` frames. At frame 0 the volume is already filled with
    falling flakes at the steady-state density; new flakes are born at the top. With a
    ``lens``, sizes and opacities are those the plate cameras see (:func:`lens_look`)."""
    rng = np.random.default_rng(seed)
    height = float(volume.hi[2] - volume.lo[2])
    prefill_mean = settings.density * volume.area * height / settings.speed
    frame_mean = settings.density * volume.area / fps
    prefill = rng.poisson(prefill_mean)
    per_frame = rng.poisson(frame_mean, size=frames)
    per_frame[0] = 0
    total = prefill + int(per_frame.sum())
    if total > settings.max_flakes:
        raise TooManyFlakes(total, settings.max_flakes, prefill_mean + frame_mean * (frames - 1))
    birth = np.concatenate([np.zeros(prefill, int), np.repeat(np.arange(frames), per_frame)])
    pos = rng.uniform(volume.lo, volume.hi, size=(total, 3))
    pos[prefill:, 2] = volume.hi[2]
    fall = settings.speed * (1.0 + settings.speed_jitter * rng.uniform(-1, 1, total))
    wind = np.asarray(settings.wind, dtype=np.float64)
    noise = CurlNoise(scale=3.0, strength=settings.turbulence, seed=seed + 7)
    settled = np.zeros(total, dtype=bool)
    vel = np.zeros((total, 3))
    size = (settings.size * np.exp(rng.normal(0.0, settings.size_jitter, total))).astype(np.float32)
    axes = np.stack([np.ones(total), rng.uniform(0.7, 1.0, total), np.full(total, settings.thickness)],
                    axis=1).astype(np.float32)
    quats = random_quats(total, rng)
    strength = rng.uniform(0.6, 1.0, total)
    white = np.full((total, 3), (1.0 - 0.5) / SH_C0, dtype=np.float32)
    out = {k: np.zeros((frames, total, 3), np.float32) for k in ("positions", "velocities")}
    alive = np.zeros((frames, total), bool)
    dt = 1.0 / (fps * substeps)
    span = volume.hi[:2] - volume.lo[:2]
    for frame in range(frames):
        live = birth <= frame
        if frame > 0:
            for step in range(substeps):
                t = (frame - 1 + step / substeps) / fps
                moving = live & ~settled
                vel[:] = 0.0
                vel[moving] = wind + noise(pos[moving], t)
                vel[moving, 2] -= fall[moving]
                pos[moving] += vel[moving] * dt
                pos[moving, :2] = volume.lo[:2] + np.mod(pos[moving, :2] - volume.lo[:2], span)  # wrap sideways
                floor = surfaces(pos[:, :2]) if surfaces is not None else np.zeros(total)
                landed = moving & (pos[:, 2] <= floor + settings.thickness * size)
                if settings.settle:
                    pos[landed, 2] = floor[landed] + settings.thickness * size[landed]
                    settled |= landed
                else:  # flakes that land melt away and are reborn at the top
                    pos[landed, 2] = volume.hi[2]
        vel[settled] = 0.0
        out["positions"][frame] = pos
        out["velocities"][frame] = vel
        alive[frame] = live
    opacities = np.where(alive, settings.opacity * strength, 0.0).astype(np.float32)
    sizes = np.broadcast_to(size, alive.shape).copy()
    if lens is not None:
        for frame in range(frames):
            sizes[frame], opacities[frame] = lens_look(lens, out["positions"][frame], sizes[frame],
                                                       opacities[frame], frame)
        opacities[~alive] = 0.0
    return ParticleCache(out["positions"], out["velocities"], alive, sizes, opacities, white, axes=axes, quats=quats)
