"""Debris and dust emitted by a collapse.

Both are driven by the rigid simulation's events. Debris: small opaque chips thrown from
breaks and crumbling supports, ballistic under gravity, bouncing and coming to rest on the
ground or on the tops of the static boxes the pieces land on. Dust: large, soft,
low-opacity puffs born where supports crumble and where pieces hit the ground, rising,
spreading and drifting on curl-noise wind, then fading.
Both take their colour from the broken material.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from splatfx.fx.animation import RigidCache
from splatfx.fx.colliders import FloorMap
from splatfx.fx.particles import CurlNoise, ParticleCache, bounce_on_ground
from splatfx.fx.rigid import GRAVITY
from splatfx.core.rotation import quat_to_rotmat
from splatfx.core.sh import SH_C0

_EVENT_WEIGHT = {"crumble": 6.0, "impact": 2.0, "break": 1.0}


@dataclass(frozen=True)
class DebrisSettings:
    count: int = 4000
    size: float = 0.04  # metres (Gaussian standard deviation)
    speed: float = 2.5  # m/s initial spread
    restitution: float = 0.3
    friction: float = 0.4


@dataclass(frozen=True)
class DustSettings:
    count: int = 1500
    size_start: float = 0.25  # metres
    size_end: float = 1.6
    opacity: float = 0.35
    lifetime: tuple[float, float] = (2.0, 5.0)  # seconds
    rise: float = 0.8  # m/s initial upward speed
    spread: float = 1.2  # m/s initial sideways speed
    wind: tuple[float, float, float] = (0.3, 0.0, 0.0)  # m/s steady wind
    turbulence: float = 0.6  # m/s curl-noise strength
    grey: float = 0.6  # how much dust is lightened toward neutral grey (0 = material colour)


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
    sizes = np.clip(rng.lognormal(np.log(settings.size), 0.5, n), 0.3 * settings.size, 4 * settings.size)
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
                         colors.astype(np.float32))


def simulate_dust(cache: RigidCache, points: np.ndarray, labels: np.ndarray, colors_dc: np.ndarray,
                  settings: DustSettings = DustSettings(), seed: int = 0, substeps: int = 2) -> ParticleCache:
    """Rising, spreading, drifting and fading dust puffs, born at crumbles and ground impacts."""
    rng = np.random.default_rng(seed + 1)
    frames = cache.frames
    birth, pos, _, outward = emission_sources(cache, points, labels, ("crumble", "impact"), settings.count, rng)
    n = len(birth)
    if n == 0:
        return ParticleCache.empty(frames)
    pos[:, 2] = np.maximum(pos[:, 2] * rng.uniform(0.0, 0.5, n), settings.size_start)  # dust starts low
    base = material_colour(points, colors_dc, pos)
    grey_dc = (0.55 - 0.5) / SH_C0
    colors = (1.0 - settings.grey) * base + settings.grey * grey_dc
    vel = outward * settings.spread * rng.uniform(0.3, 1.0, (n, 1))
    vel[:, 2] = settings.rise * rng.uniform(0.5, 1.5, n)
    life = rng.uniform(*settings.lifetime, n)
    wind = np.asarray(settings.wind, dtype=np.float64)
    noise = CurlNoise(scale=4.0, strength=settings.turbulence, seed=seed)
    out = _allocate(frames, n)
    dt = 1.0 / (cache.fps * substeps)
    for frame in range(frames):
        age = (frame - birth) / cache.fps
        live = (age >= 0) & (age <= life)
        if frame > 0:
            for step in range(substeps):
                t = (frame - 1 + step / substeps) / cache.fps
                air = wind + noise(pos, t)
                vel[live] += (air[live] - vel[live]) * (0.8 * dt)  # drag toward the moving air
                vel[live, 2] += 0.4 * np.exp(-age[live]) * dt  # warm air rises, less as it cools
                pos[live] += vel[live] * dt
                bounce_on_ground(pos, vel, np.full(n, settings.size_start), 0.0, 0.2)
        fraction = np.clip(age / life, 0.0, 1.0)
        sizes = settings.size_start + (settings.size_end - settings.size_start) * np.sqrt(fraction)
        fade_in = np.clip(age / 0.3, 0.0, 1.0)
        opacity = np.where(live, settings.opacity * fade_in * (1.0 - fraction) ** 1.5, 0.0)
        _record(out, frame, pos, vel, live, sizes, opacity)
    return ParticleCache(out["positions"], out["velocities"], out["alive"], out["sizes"], out["opacities"],
                         colors.astype(np.float32))


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
