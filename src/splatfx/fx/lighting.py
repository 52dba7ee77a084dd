"""The shot's key light, and light baked into the particles of the effects.

Dust, debris and snow are new matter in a photographed scene, so they must be lit like it.
:func:`estimate_key_light` reads the light off the reconstruction itself: the Gaussians
of its surfaces are nearly flat, so each one's shortest axis is a surface normal, and
their colours are the plates' shading of those surfaces. Binned by normal (the median
luminance per bin, so brick and grass average out), the shading is fitted with a
Lambertian sun plus a sky/ground ambient term, ``Y(n) = sky·(1+n_z)/2 + ground·(1−n_z)/2 +
sun·max(0, n·l)``, by searching the light direction ``l`` over the upper hemisphere.
The sky's colour is the colour of the reconstruction's bright upper Gaussians.

:func:`optical_depth` is the density of a particle cloud integrated toward the light (a
light-space density grid, summed from the light's side): ``exp(−τ)``, with weaker octaves
for the light scattered on inside the cloud, is how much light reaches each particle, so
a puff's far side and the puffs behind it fall into shadow. :func:`dust_light` and
:func:`chip_light` give the light on dust and on debris chips, which
:func:`splatfx.fx.debris.light_collapse` bakes into per-frame colours, so the renderer
draws them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

from splatfx.core.color import REC709_LUMA
from splatfx.core.rotation import quat_to_rotmat
from splatfx.core.sh import SH_C0

#: Used when there is nothing to estimate from: sun high in the south-west, 60 % of the light.
DEFAULT_DIRECTION = np.array([-0.45, -0.45, 0.77])


@dataclass(frozen=True)
class KeyLight:
    """A sun and a sky. ``direction``: unit vector toward the sun (world frame, z up);
    ``sun`` and ``sky``: RGB tints of luminance 1; ``key``: the sun's share of the light
    on a surface facing it (0–1); ``source``: where it came from (for the manifest)."""

    direction: np.ndarray
    sun: np.ndarray
    sky: np.ndarray
    key: float
    source: str

    def figures(self) -> dict:
        return {"light_direction": [round(float(v), 4) for v in self.direction], "light_key": round(self.key, 3),
                "light_sky": [round(float(v), 3) for v in self.sky], "light_source": self.source}


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def fibonacci_directions(count: int, min_z: float = -1.0) -> np.ndarray:
    """``count`` nearly evenly spread unit vectors with z ≥ ``min_z``."""
    i = np.arange(count) + 0.5
    z = 1.0 - (1.0 - min_z) * i / count
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    phi = np.pi * (1.0 + 5 ** 0.5) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def surface_normals(quats: np.ndarray, log_scales: np.ndarray, means: np.ndarray, viewpoints: np.ndarray,
                    rotation: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each Gaussian's shortest axis (a unit normal, turned by ``rotation`` into the frame
    of ``means`` and to face the nearest of ``viewpoints``, the cameras that saw it) and its
    flatness (shortest / middle scale)."""
    rot = quat_to_rotmat(np.asarray(quats, np.float64))
    order = np.argsort(log_scales, axis=1)
    normals = np.take_along_axis(rot, order[:, None, :1], axis=2)[..., 0]
    if rotation is not None:
        normals = normals @ np.asarray(rotation, np.float64).T
    scales = np.exp(np.take_along_axis(np.asarray(log_scales, np.float64), order, axis=1))
    flatness = scales[:, 0] / np.maximum(scales[:, 1], 1e-12)
    if len(viewpoints):
        nearest = np.empty_like(means)
        for start in range(0, len(means), 65536):  # bounded memory on large scenes
            chunk = means[start:start + 65536]
            nearest[start:start + 65536] = viewpoints[np.argmin(((chunk[:, None] - viewpoints[None]) ** 2).sum(-1), 1)]
        flip = ((nearest - means) * normals).sum(axis=1) < 0
        normals[flip] *= -1.0
    return normals, flatness


def fit_lambertian(normals: np.ndarray, luminance: np.ndarray, bins: int = 384, candidates: int = 4000,
                   min_count: int = 3) -> tuple[np.ndarray, np.ndarray, float]:
    """The sun direction that best explains ``luminance`` over ``normals`` (see the module
    docstring). Returns the direction, the fitted (sky, ground, sun) coefficients and the
    relative RMS residual of the fit over the normal bins."""
    centres = fibonacci_directions(bins)
    which = np.argmax(normals @ centres.T, axis=1)
    counts = np.bincount(which, minlength=bins)
    used = np.nonzero(counts >= min_count)[0]
    if len(used) < 6:
        raise ValueError(f"too few surface orientations to fit a light ({len(used)} normal bins)")
    order = np.argsort(which, kind="stable")
    groups = np.split(luminance[order], np.cumsum(counts)[:-1])
    y = np.array([np.median(groups[b]) for b in used])
    n = centres[used]
    w = np.sqrt(counts[used].astype(np.float64))

    def fit(dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cos = np.clip(dirs @ n.T, 0.0, None)  # (C, B)
        design = np.stack([np.broadcast_to((1 + n[:, 2]) / 2, cos.shape), np.broadcast_to((1 - n[:, 2]) / 2, cos.shape),
                           cos], axis=2) * w[None, :, None]
        target = y * w
        gram = np.einsum("cbi,cbj->cij", design, design) + 1e-9 * np.eye(3)
        coef = np.linalg.solve(gram, np.einsum("cbi,b->ci", design, target)[..., None])[..., 0]
        coef = np.clip(coef, 0.0, None)
        residual = ((np.einsum("cbi,ci->cb", design, coef) - target) ** 2).sum(axis=1)
        return coef, residual

    dirs = fibonacci_directions(candidates, min_z=0.0)
    coef, residual = fit(dirs)
    best = dirs[np.argmin(residual)]
    # refine in a small cone around the best candidate
    local = fibonacci_directions(800, min_z=np.cos(np.radians(5.0)))
    z = unit(best)
    x = unit(np.cross(z, [0.0, 1.0, 0.0] if abs(z[0]) > 0.9 else [1.0, 0.0, 0.0]))
    frame = np.stack([x, np.cross(z, x), z], axis=1)
    fine = local @ frame.T
    fine = fine[fine[:, 2] >= 0.0]
    coef_f, residual_f = fit(fine)
    k = int(np.argmin(residual_f))
    rms = float(np.sqrt(residual_f[k] / (w ** 2).sum()) / max(float(np.average(y, weights=w ** 2)), 1e-9))
    return unit(fine[k]), coef_f[k], rms


def sky_colour(points: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """The colour of the reconstruction's bright upper Gaussians (the sky, or what the sky
    lights), as a tint of luminance 1; a pale blue-grey when there is none."""
    top = np.percentile(points[:, 2], 90) if len(points) else 0.0
    upper = rgb[points[:, 2] >= top] if len(points) else np.zeros((0, 3))
    if len(upper) < 10:
        return unit_luma(np.array([0.85, 0.92, 1.0]))
    luma = upper @ REC709_LUMA
    bright = upper[luma >= np.percentile(luma, 75)]
    return unit_luma(np.median(bright, axis=0))


def unit_luma(rgb: np.ndarray) -> np.ndarray:
    rgb = np.clip(np.asarray(rgb, np.float64), 1e-3, None)
    return rgb / float(rgb @ REC709_LUMA)


def estimate_key_light(means: np.ndarray, quats: np.ndarray, log_scales: np.ndarray, opacities: np.ndarray,
                       colors_dc: np.ndarray, viewpoints: np.ndarray, rotation: np.ndarray | None = None
                       ) -> tuple[KeyLight, float]:
    """The key light of a reconstruction from its flat, opaque Gaussians' normals and
    colours. ``means`` and ``viewpoints`` (the plate cameras' centres) are in the world
    frame (z up); ``rotation`` turns the Gaussians' axes into it. Also returns the fit's
    relative RMS residual."""
    rgb = np.clip(SH_C0 * np.asarray(colors_dc, np.float64) + 0.5, 0.0, None)
    normals, flatness = surface_normals(quats, log_scales, means, viewpoints, rotation)
    lo, hi = np.percentile(means, 2, axis=0), np.percentile(means, 98, axis=0)
    inside = np.all((means >= lo) & (means <= hi), axis=1)
    keep = inside & (np.asarray(opacities) > 0.5) & (flatness < 0.5)
    if keep.sum() < 50:
        keep = inside & (np.asarray(opacities) > 0.2)
    direction, coef, rms = fit_lambertian(normals[keep], rgb[keep] @ REC709_LUMA)
    sky_c, ground_c, sun_c = coef
    key = float(sun_c / max(sun_c + sky_c, 1e-9))
    lit = keep & ((normals @ direction) > 0.7)
    shade = keep & ((normals @ direction) < 0.1) & (normals[:, 2] > -0.2)
    sun = unit_luma(np.median(rgb[lit], axis=0) / np.maximum(np.median(rgb[shade], axis=0), 1e-3)) \
        if lit.sum() > 10 and shade.sum() > 10 else unit_luma(np.array([1.0, 0.97, 0.92]))
    light = KeyLight(direction, sun, sky_colour(means[inside], rgb[inside]), key, "estimated")
    return light, rms


# --- light through particle clouds -------------------------------------------------------------------
def extinction(opacities: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each Gaussian particle's optical cross-section (m²): ``−ln(1−α) · 2πσ²``, the
    optical depth through its centre spread over its footprint."""
    alpha = np.clip(np.asarray(opacities, np.float64), 0.0, 0.99)
    return -np.log1p(-alpha) * 2.0 * np.pi * np.asarray(sizes, np.float64) ** 2


def optical_depth(positions: np.ndarray, cross_sections: np.ndarray, sizes: np.ndarray, direction: np.ndarray,
                  query: np.ndarray | None = None, max_cells: int = 72) -> np.ndarray:
    """Optical depth from each of ``query`` (default: the particles themselves) toward a
    light along ``direction``, through the cloud of Gaussian particles (positions,
    cross-sections in m², sizes = standard deviations in m).

    The cloud is splatted into a light-aligned grid (cells about the median particle size,
    at most ``max_cells`` a side), blurred by the particles' footprint, and summed from the
    light's side; a particle counts half of its own cell, so a lone puff shades its far side.
    """
    query = positions if query is None else query
    if len(positions) == 0 or len(query) == 0:
        return np.zeros(len(query))
    w = unit(direction)
    u = unit(np.cross(w, [1.0, 0.0, 0.0] if abs(w[0]) < 0.9 else [0.0, 1.0, 0.0]))
    basis = np.stack([u, np.cross(w, u), w], axis=1)
    p, q = positions @ basis, query @ basis
    pad = 3.0 * float(np.max(sizes))
    lo = np.minimum(p.min(axis=0), q.min(axis=0)) - pad
    hi = np.maximum(p.max(axis=0), q.max(axis=0)) + pad
    cell = max(float(np.median(sizes)) * 0.75, float((hi - lo).max()) / max_cells, 1e-6)
    shape = np.minimum(np.ceil((hi - lo) / cell).astype(int) + 1, max_cells + 2)
    cell = float(((hi - lo) / (shape - 1)).max())
    grid = np.zeros(shape)
    idx = np.clip(np.rint((p - lo) / cell).astype(int), 0, shape - 1)
    np.add.at(grid, tuple(idx.T), cross_sections / cell ** 2)
    blur = float(np.median(sizes)) / cell
    grid = gaussian_filter(grid, sigma=(blur, blur, 0.5 * blur), mode="constant")
    ahead = np.cumsum(grid[..., ::-1], axis=2)[..., ::-1] - 0.5 * grid  # toward +w (the light)
    return map_coordinates(ahead, ((q - lo) / cell).T, order=1, mode="nearest")


def dust_light(positions: np.ndarray, opacities: np.ndarray, sizes: np.ndarray, light: KeyLight,
               gain: float = 1.3) -> np.ndarray:
    """(P,3) light reaching each dust particle: the sun through the cloud toward it, plus the
    sky through the cloud above it (soft: half the optical depth, and never below
    :data:`SKY_FLOOR`, as skylight comes from the whole dome), normalised so an unshadowed
    particle gets ``gain``."""
    sections = extinction(opacities, sizes)
    sun = scattered(optical_depth(positions, sections, sizes, light.direction))
    sky = SKY_FLOOR + (1.0 - SKY_FLOOR) * scattered(0.5 * optical_depth(positions, sections, sizes,
                                                                         np.array([0.0, 0.0, 1.0])))
    return gain * (light.key * sun[:, None] * light.sun + (1.0 - light.key) * sky[:, None] * light.sky)


#: Multiple scattering as octaves of ever weaker extinction (Wrenninge's approximation)
#: and a diffuse tail: dust is bright matter, so light scattered inside the cloud keeps
#: its shadowed core from going black while its far side still falls off.
_OCTAVES = ((0.55, 1.0), (0.25, 0.25))
_DIFFUSE = (0.2, 0.1)
#: Skylight comes from the whole dome and the bright ground: the cloud's core keeps this much.
SKY_FLOOR = 0.6


def scattered(tau: np.ndarray) -> np.ndarray:
    """Light reaching a point at optical depth ``tau``, single plus multiple scattering (1 at 0)."""
    weight, rate = _DIFFUSE
    return sum(w * np.exp(-reach * tau) for w, reach in _OCTAVES) + weight / (1.0 + rate * tau)


def chip_light(normals: np.ndarray, shadow: np.ndarray, light: KeyLight) -> np.ndarray:
    """(P,3) light on solid chips with facet ``normals``, ``shadow`` = transmittance of the
    dust toward the sun: Lambert sun plus a sky term that favours up-facing facets,
    normalised so a random facet in the open gets 1 on average."""
    cos = np.clip(normals @ light.direction, 0.0, None)
    sky = 0.75 + 0.25 * normals[:, 2]  # the ground and the dust bounce light up from below
    lit = light.key * 2.0 * cos[:, None] * shadow[:, None] * light.sun + (1.0 - light.key) * sky[:, None] * light.sky
    return lit


def rgb_to_dc(rgb: np.ndarray) -> np.ndarray:
    return ((np.asarray(rgb, np.float64) - 0.5) / SH_C0).astype(np.float32)


def dc_to_rgb(dc: np.ndarray) -> np.ndarray:
    return np.clip(SH_C0 * np.asarray(dc, np.float64) + 0.5, 0.0, None)
