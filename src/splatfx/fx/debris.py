"""Debris and dust emitted by a collapse.

Both are driven by the rigid simulation's events. Debris: opaque chips thrown from breaks
and crumbling supports, their sizes drawn from a power law (many small chips, a few large
chunks), flat and randomly turned, ballistic under gravity, bouncing and coming to rest on
the ground or on the tops of the static boxes the pieces land on. Dust: soft puffs born
low where supports crumble and where pieces hit the ground, rolling out along the ground
(a gravity current, slowed by drag) much faster than they rise, billowing on curl-noise
turbulence, growing and thinning out over seconds. Sizes and speeds scale with the
structure's height (Froude scaling: speeds with √(g·height)), so a shed and a tower
both make a cloud of their own size.

Both take their colour from the broken material, and :func:`light_collapse` bakes the
shot's key light into them (:mod:`splatfx.fx.lighting`): dust shadows itself and the chips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from splatfx.fx.animation import RigidCache
from splatfx.fx.colliders import FloorMap
from splatfx.fx.lighting import (KeyLight, chip_light, dc_to_rgb, dust_light, extinction, optical_depth, rgb_to_dc,
                                 scattered)
from splatfx.fx.particles import CurlNoise, ParticleCache, bounce_on_ground, power_law_sizes, random_quats
from splatfx.fx.rigid import GRAVITY
from splatfx.core.rotation import quat_to_rotmat
from splatfx.core.sh import SH_C0

_EVENT_WEIGHT = {"crumble": 6.0, "impact": 2.0, "break": 1.0}


@dataclass(frozen=True)
class DebrisSettings:
    count: int = 4000
    size: float = 0.04  # metres (Gaussian standard deviation) of the smallest chips
    size_max: float | None = None  # the largest chunks (None: 10 × size)
    exponent: float = 2.5  # N(size > s) ∝ s^−exponent
    speed: float = 2.5  # m/s initial spread
    restitution: float = 0.3
    friction: float = 0.4

    @property
    def largest(self) -> float:
        return 10.0 * self.size if self.size_max is None else max(self.size_max, self.size)


@dataclass(frozen=True)
class DustSettings:
    count: int = 1500
    height: float = 10.0  # metres: the collapsing structure's height (sizes and speeds scale with it)
    opacity: float = 0.55
    lifetime: tuple[float, float] = (3.6, 8.4)  # seconds: each puff lives a uniform draw from this range
    spread: float = 0.35  # initial speed along the ground, × √(g·height)
    rise: float = 0.05  # initial upward speed, × √(g·height)
    size_start: float = 0.04  # × height (standard deviation at birth)
    size_end: float = 0.18  # × height (at the end of its life)
    wind: tuple[float, float, float] = (0.3, 0.0, 0.0)  # m/s steady wind
    turbulence: float = 0.12  # curl-noise strength, × √(g·height)
    drag: float = 0.5  # 1/s: how fast the rolling front slows toward the air's speed
    grey: float = 0.6  # how much dust is lightened toward neutral grey (0 = material colour)

    @property
    def speed_scale(self) -> float:
        return float(np.sqrt(GRAVITY * max(self.height, 0.1)))


def emission_sources(cache: RigidCache, points: np.ndarray, labels: np.ndarray, kinds: tuple[str, ...],
                     count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distribute ``count`` particles over the cache's events of the given kinds.

    Returns birth frames (P,), birth positions (P,3), source fragment (P,), and the unit
    outward direction from the structure's centre (P,3). Crumbling supports emit from
    their own points (posed at the event frame), other events from the event position.
    """
    events = [e for e in cache.events if e["kind"] in kinds]
    if not events or count <= 0:
        return np.zeros(0, int), np.zeros((0, 3)), np.zeros(0, int), np.zeros((0, 3))
    weights = np.array([_EVENT_WEIGHT[e["kind"]] * (1.0 + e["speed"]) for e in events])
    per_event = rng.multinomial(count, weights / weights.sum())
    centre = cache.centroids.mean(axis=0)
    frames, positions, fragments = [], [], []
    for event, n in zip(events, per_event):
        if n == 0:
            continue
        f = event["fragment"]
        if event["kind"] == "crumble" and f >= 0:
            own = points[labels == f]
            pick = own[rng.integers(0, len(own), n)]
            rot = quat_to_rotmat(cache.quats[event["frame"], f])
            pos = (pick - cache.centroids[f]) @ rot.T + cache.positions[event["frame"], f]
        else:
            pos = np.asarray(event["position"]) + rng.normal(scale=0.15, size=(n, 3))
        frames.append(np.full(n, event["frame"]))
        positions.append(pos)
        fragments.append(np.full(n, f))
    pos = np.concatenate(positions)
    outward = pos - centre
    outward[:, 2] = 0.0
    outward /= np.maximum(np.linalg.norm(outward, axis=1, keepdims=True), 1e-6)
    return np.concatenate(frames), pos, np.concatenate(fragments), outward


def material_colour(points: np.ndarray, colors_dc: np.ndarray, query: np.ndarray, k: int = 6) -> np.ndarray:
    """Mean SH DC colour of the ``k`` nearest material points (rest pose) to ``query``."""
    if not len(query):
        return np.zeros((0, 3))
    kk = min(k, len(points))
    idx = cKDTree(points).query(query, k=kk)[1].reshape(len(query), kk)
    return colors_dc[idx].mean(axis=1)


def simulate_debris(cache: RigidCache, points: np.ndarray, labels: np.ndarray, colors_dc: np.ndarray,
                    settings: DebrisSettings = DebrisSettings(), seed: int = 0, substeps: int = 4,
                    floor: FloorMap | None = None) -> ParticleCache:
    """Ballistic debris born at breaks and crumbles, bouncing and settling on the ground
    (or on the tops of ``floor``'s static boxes)."""
    rng = np.random.default_rng(seed)
    frames = cache.frames
    birth, pos, _, outward = emission_sources(cache, points, labels, ("crumble", "break"), settings.count, rng)
    n = len(birth)
    if n == 0:
        return ParticleCache.empty(frames)
    colors = material_colour(points, colors_dc, pos)
    direction = outward + rng.normal(scale=0.6, size=(n, 3))
    direction[:, 2] = np.abs(direction[:, 2]) + 0.3
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    vel = direction * settings.speed * rng.uniform(0.3, 1.0, (n, 1))
    sizes = power_law_sizes(n, settings.size, settings.largest, settings.exponent, rng)
    axes = np.stack([np.ones(n), rng.uniform(0.5, 1.0, n), rng.uniform(0.25, 0.6, n)], axis=1)  # flat, irregular
    quats = random_quats(n, rng)
    out = _allocate(frames, n)
    dt = 1.0 / (cache.fps * substeps)
    reach = 30.0 * dt  # how far below a box top a chip (at most ~30 m/s) can get in one step
    for frame in range(frames):
        live = birth <= frame
        if frame > 0:
            for _ in range(substeps):
                moving = live & (np.linalg.norm(vel, axis=1) > 0)
                before = pos[:, :2].copy()
                vel[moving, 2] -= GRAVITY * dt
                pos[moving] += vel[moving] * dt
                if floor is not None:  # a chip that flew into a box's side bounces back off it
                    wall = floor.inside(pos, reach)
                    pos[wall, :2] = before[wall]
                    vel[wall, :2] *= -settings.restitution
                ground = 0.0 if floor is None else floor(pos, reach)
                bounce_on_ground(pos, vel, sizes, settings.restitution, settings.friction, ground)
                resting = (pos[:, 2] <= ground + sizes + 1e-6) & (np.linalg.norm(vel, axis=1) < 0.15)
                vel[resting] = 0.0
        _record(out, frame, pos, vel, live, sizes, np.where(live, 0.97, 0.0))
    return ParticleCache(out["positions"], out["velocities"], out["alive"], out["sizes"], out["opacities"],
                         colors.astype(np.float32), axes=axes.astype(np.float32), quats=quats)


def simulate_dust(cache: RigidCache, points: np.ndarray, labels: np.ndarray, colors_dc: np.ndarray,
                  settings: DustSettings = DustSettings(), seed: int = 0, substeps: int = 2) -> ParticleCache:
    """Dust puffs born low at crumbles and ground impacts (over a short burst after each),
    rolling out along the ground, rising slowly, billowing, growing and thinning out."""
    rng = np.random.default_rng(seed + 1)
    frames = cache.frames
    birth, pos, _, outward = emission_sources(cache, points, labels, ("crumble", "impact"), settings.count, rng)
    n = len(birth)
    if n == 0:
        return ParticleCache.empty(frames)
    height, u = max(settings.height, 0.1), settings.speed_scale
    birth = birth + np.floor(rng.exponential(0.4 * cache.fps, n)).astype(int)  # the burst goes on a while
    size_start, size_end = settings.size_start * height, settings.size_end * height
    scale = np.exp(np.clip(rng.normal(0.0, 0.55, n), -1.2, 1.2))  # billows of many sizes
    pos[:, 2] = np.minimum(pos[:, 2], size_start) * rng.uniform(0.3, 1.0, n)  # born at the base
    base = material_colour(points, colors_dc, pos)
    grey_dc = (0.7 - 0.5) / SH_C0  # fine mineral dust is bright
    colors = (1.0 - settings.grey) * base + settings.grey * grey_dc
    angle = rng.uniform(0, 2 * np.pi, n)
    radial = np.stack([np.cos(angle), np.sin(angle), np.zeros(n)], axis=1)
    direction = outward + 0.8 * radial
    direction[:, 2] = 0.0
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-6)
    vel = direction * settings.spread * u * rng.uniform(0.4, 1.0, (n, 1))
    vel[:, 2] = settings.rise * u * rng.uniform(0.3, 1.2, n)
    life = rng.uniform(*settings.lifetime, n)
    wind = np.asarray(settings.wind, dtype=np.float64)
    noise = CurlNoise(scale=0.4 * height, strength=settings.turbulence * u, seed=seed)
    out = _allocate(frames, n)
    dt = 1.0 / (cache.fps * substeps)
    for frame in range(frames):
        age = (frame - birth) / cache.fps
        live = (age >= 0) & (age <= life)
        fraction = np.clip(age / life, 0.0, 1.0)
        sizes = scale * (size_start + (size_end - size_start) * np.sqrt(fraction))
        if frame > 0:
            for step in range(substeps):
                t = (frame - 1 + step / substeps) / cache.fps
                air = noise(pos, t)
                air[:, 2] *= 0.4  # a dense current near the ground is stratified: it churns more than it lifts
                air += wind
                vel[live] += (air[live] - vel[live]) * (settings.drag * dt)  # drag toward the moving air
                vel[live, 2] += 0.05 * u * np.exp(-age[live] / 1.5) * dt  # warm air rises, less as it cools
                pos[live] += vel[live] * dt
                floor = 0.5 * sizes  # rolls along the ground (no friction: it is air), growing upward
                below = pos[:, 2] < floor
                pos[below, 2] = floor[below]
                vel[below, 2] = np.maximum(vel[below, 2], 0.0)
        fade_in = np.clip(age / 0.3, 0.0, 1.0)
        opacity = np.where(live, settings.opacity * fade_in * (1.0 - fraction) ** 1.5, 0.0)
        _record(out, frame, pos, vel, live, sizes, opacity)
    return ParticleCache(out["positions"], out["velocities"], out["alive"], out["sizes"], out["opacities"],
                         colors.astype(np.float32))


def light_collapse(debris: ParticleCache, dust: ParticleCache, light: KeyLight) -> None:
    """Bake ``light`` into per-frame colours of ``dust`` (sun through the cloud, sky through
    the cloud above) and ``debris`` (Lambert on each chip's flat face, in the dust's shadow)."""
    frames = dust.positions.shape[0] if dust.count else debris.positions.shape[0]
    dust_rgb, chip_rgb = dc_to_rgb(dust.colors_dc), dc_to_rgb(debris.colors_dc)
    dust_out = np.repeat(dust.colors_dc[None], frames, axis=0).astype(np.float32)
    chip_out = np.repeat(debris.colors_dc[None], frames, axis=0).astype(np.float32)
    if debris.count:
        from splatfx.core.rotation import quat_to_rotmat
        faces = quat_to_rotmat(debris.quats.astype(np.float64))[:, :, 2]  # the flat face's normal
        faces *= np.where(faces @ light.direction < 0, -1.0, 1.0)[:, None] * np.where(
            np.arange(debris.count) % 3 == 0, -1.0, 1.0)[:, None]  # most faces turned to the light, some away
    for t in range(frames):
        live = dust.alive[t] & (dust.opacities[t] > 1e-3) if dust.count else np.zeros(0, bool)
        if live.any():
            pos, op, size = dust.positions[t][live], dust.opacities[t][live], dust.sizes[t][live]
            dust_out[t, live] = rgb_to_dc(dust_rgb[live] * dust_light(pos, op, size, light))
        if debris.count:
            chips = debris.alive[t]
            shadow = np.ones(int(chips.sum()))
            if live.any() and chips.any():
                shadow = scattered(optical_depth(pos, extinction(op, size), size, light.direction,
                                                 query=debris.positions[t][chips]))
            if chips.any():
                chip_out[t, chips] = rgb_to_dc(chip_rgb[chips] * chip_light(faces[chips], shadow, light))
    dust.colors = dust_out
    debris.colors = chip_out


def _allocate(frames: int, n: int) -> dict[str, np.ndarray]:
    return {"positions": np.zeros((frames, n, 3), np.float32), "velocities": np.zeros((frames, n, 3), np.float32),
            "alive": np.zeros((frames, n), bool), "sizes": np.zeros((frames, n), np.float32),
            "opacities": np.zeros((frames, n), np.float32)}


def _record(out: dict[str, np.ndarray], frame: int, pos: np.ndarray, vel: np.ndarray, live: np.ndarray,
            sizes: np.ndarray, opacity: np.ndarray) -> None:
    out["positions"][frame] = pos
    out["velocities"][frame] = vel
    out["alive"][frame] = live
    out["sizes"][frame] = sizes
    out["opacities"][frame] = opacity
