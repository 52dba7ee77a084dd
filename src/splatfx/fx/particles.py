"""Particles as Gaussians: the shared state, integration and wind for debris, dust and snow.

Particle systems are simulated in the physics frame (z-up, metres) and cached as plain
per-frame arrays. Wind turbulence is curl noise: the curl of a smooth random vector
potential, so the flow is divergence-free and particles swirl without bunching up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


_REQUIRED = ("positions", "velocities", "alive", "sizes", "opacities", "colors_dc")
#: Optional looks: per-frame colours (T,P,3 SH DC, light baked in), per-particle axis
#: ratios (P,3, multiplying ``sizes``) and orientations (P,4 wxyz, physics frame).
OPTIONAL = ("colors", "axes", "quats")


@dataclass
class ParticleCache:
    """Per-frame particle state: positions (T,P,3), alive (T,P), sizes (T,P) in metres
    (the Gaussians' standard deviation), opacities (T,P), and per-particle colours (P,3)
    as SH DC coefficients. ``velocities`` (T,P,3) in m/s give exact motion vectors.
    Optional: ``colors`` (T,P,3) per-frame SH DC with the light baked in (replaces
    ``colors_dc`` when drawn), ``axes`` (P,3) per-axis size ratios and ``quats`` (P,4)
    orientations of anisotropic particles (flat flakes, chips)."""

    positions: np.ndarray
    velocities: np.ndarray
    alive: np.ndarray
    sizes: np.ndarray
    opacities: np.ndarray
    colors_dc: np.ndarray
    colors: np.ndarray | None = None
    axes: np.ndarray | None = None
    quats: np.ndarray | None = None

    @property
    def count(self) -> int:
        return self.positions.shape[1]

    def colors_at(self, t: int) -> np.ndarray:
        """(P,3) SH DC colours of frame ``t`` (the baked lighting when there is one)."""
        return self.colors_dc if self.colors is None else self.colors[t]

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        names = _REQUIRED + tuple(n for n in OPTIONAL if getattr(self, n) is not None)
        return {f"{prefix}.{name}": getattr(self, name) for name in names}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> "ParticleCache":
        optional = {name: arrays.get(f"{prefix}.{name}") for name in OPTIONAL}
        return cls(*(arrays[f"{prefix}.{name}"] for name in _REQUIRED), **optional)

    @classmethod
    def empty(cls, frames: int) -> "ParticleCache":
        return cls(np.zeros((frames, 0, 3), np.float32), np.zeros((frames, 0, 3), np.float32),
                   np.zeros((frames, 0), bool), np.zeros((frames, 0), np.float32),
                   np.zeros((frames, 0), np.float32), np.zeros((0, 3), np.float32))


def random_quats(count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` uniformly random unit quaternions (wxyz)."""
    q = rng.normal(size=(count, 4))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def power_law_sizes(count: int, smallest: float, largest: float, exponent: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Sizes with ``N(size > s) ∝ s^−exponent`` between ``smallest`` and ``largest``
    (a truncated Pareto law, as fragmentation gives: many small chips, few large chunks)."""
    u = rng.uniform(size=count)
    if largest <= smallest:
        return np.full(count, smallest)
    ratio = (smallest / largest) ** exponent
    return smallest * (1.0 - u * (1.0 - ratio)) ** (-1.0 / exponent)


class CurlNoise:
    """A smooth, divergence-free random velocity field ``v(x) = ∇ × ψ(x)``.

    ``ψ`` is a sum of ``octaves`` random plane waves per component with wavelengths around
    ``scale`` metres; its curl is computed analytically, so the field is exact and cheap.
    """

    def __init__(self, scale: float, strength: float, seed: int = 0, waves: int = 6) -> None:
        rng = np.random.default_rng(seed)
        self.k = rng.normal(size=(3, waves, 3)) * (2 * np.pi / scale)  # per potential component
        self.phase = rng.uniform(0, 2 * np.pi, size=(3, waves))
        self.amp = strength / (np.linalg.norm(self.k, axis=2) * np.sqrt(waves))  # |v| ≈ strength

    def __call__(self, x: np.ndarray, t: float = 0.0) -> np.ndarray:
        # ψ_c(x) = Σ_w a sin(k·x + φ + t);  ∂ψ_c/∂x_j = Σ_w a cos(...) k_j
        grad = np.zeros((len(x), 3, 3))  # grad[:, c, j] = ∂ψ_c/∂x_j
        for c in range(3):
            arg = x @ self.k[c].T + self.phase[c] + t
            grad[:, c, :] = (np.cos(arg) * self.amp[c]) @ self.k[c]
        return np.stack([grad[:, 2, 1] - grad[:, 1, 2], grad[:, 0, 2] - grad[:, 2, 0], grad[:, 1, 0] - grad[:, 0, 1]], axis=1)


def bounce_on_ground(pos: np.ndarray, vel: np.ndarray, radius: np.ndarray, restitution: float, friction: float,
                     ground: np.ndarray | float = 0.0) -> None:
    """In place: particles below ``ground + radius`` are put back on it, their vertical
    velocity reflected with ``restitution`` and horizontal velocity damped by ``friction``."""
    floor = ground + radius
    below = pos[:, 2] < floor
    if np.any(below):
        pos[below, 2] = floor[below] if np.ndim(floor) else floor
        vel[below, 2] = np.abs(vel[below, 2]) * restitution
        vel[below, :2] *= 1.0 - friction
