"""The clean-plate fill: what a consumer of the render's clean pass builds from it.

The render (:mod:`splatfx.render.cleanplate`) writes the clean pass (``CLEAN``, ``STRUCTURE``,
``HOLES`` in :mod:`splatfx.render.layers`); the comp and the refiner turn it into the plate with
the structure removed: plate outside the (slightly grown, softened) footprint
(:func:`grow_footprint`), the clean render inside, and holes filled by classical inpainting
(OpenCV ``cv2.inpaint``, Telea's method) from the surrounding plate and clean render, on
sRGB-encoded values (:func:`fill_clean_plate`). A contract between stages: numpy, OpenCV and
core only, no renderer.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from splatfx.core.color import linear_to_srgb, srgb_to_linear
from splatfx.core.inpaint import shrunk_telea

#: Matte values below this count as exactly 0 (keeps "outside the effect" bit-exact).
MATTE_EPS = 1.0 / 1024.0
#: The footprint is grown by this many pixels, then softened with a Gaussian of this sigma,
#: to cover the structure's anti-aliased fringe in the plate.
GROW_PX = 2
SOFTEN_SIGMA = 1.0
#: The structure's matte is multiplied by this first: where the reconstruction drew it half
#: transparent the plate still showed it whole, and would otherwise ghost through.
FOOTPRINT_GAIN = 2.0
#: Clean-render alpha at or above which a pixel needs no inpainted backing.
SOLID_ALPHA = 0.95
INPAINT_RADIUS = 5
#: Holes larger than this many pixels are inpainted on a shrunk image (see :func:`inpaint`).
INPAINT_BUDGET = 16384


def grow_footprint(structure: np.ndarray) -> np.ndarray:
    """The footprint matte the comp uses: times :data:`FOOTPRINT_GAIN` (clipped at 1), grown
    by :data:`GROW_PX`, softened by :data:`SOFTEN_SIGMA`, values below :data:`MATTE_EPS` set
    to exactly 0."""
    if not np.any(structure > 0):
        return np.zeros_like(structure, dtype=np.float32)
    size = 2 * GROW_PX + 1
    boosted = np.clip(structure.astype(np.float32) * FOOTPRINT_GAIN, 0.0, 1.0)
    grown = cv2.dilate(boosted, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    soft = cv2.GaussianBlur(grown, (0, 0), SOFTEN_SIGMA)
    return np.where(soft >= MATTE_EPS, np.clip(soft, 0.0, 1.0), 0.0).astype(np.float32)


def fill_clean_plate(plate: np.ndarray, clean_rgba: np.ndarray, region: np.ndarray,
                     radius: int = INPAINT_RADIUS) -> np.ndarray:
    """The plate (H,W,3, scene-linear) with the structure removed inside ``region`` (the
    grown footprint, H,W): the clean render over an inpainted backing where it is not
    solid, the plate itself outside ``region``."""
    inside = region > 0
    out = plate.astype(np.float32, copy=True)
    if not inside.any():
        return out
    rows, cols = np.nonzero(inside)
    pad = 3 * radius + 2
    y0, y1 = max(rows.min() - pad, 0), min(rows.max() + pad + 1, plate.shape[0])
    x0, x1 = max(cols.min() - pad, 0), min(cols.max() + pad + 1, plate.shape[1])
    win = (slice(y0, y1), slice(x0, x1))
    alpha = clean_rgba[win][..., 3]
    premult = clean_rgba[win][..., :3]
    inner = inside[win]
    solid = inner & (alpha >= SOLID_ALPHA)
    context = np.where(solid[..., None], premult / np.maximum(alpha, 1e-6)[..., None], plate[win]).astype(np.float32)
    hole = (inner & ~solid).astype(np.uint8)
    backing = inpaint(context, hole, radius) if hole.any() else context
    filled = premult + (1.0 - alpha)[..., None] * backing
    out[win] = np.where(inner[..., None], filled, plate[win])
    return out


def inpaint(linear: np.ndarray, hole: np.ndarray, radius: int = INPAINT_RADIUS) -> np.ndarray:
    """Fill the ``hole`` pixels (H,W uint8, 1 = fill) of scene-linear RGB by Telea's method.

    It runs per channel on sRGB-encoded values scaled to 0-255 (OpenCV's float Telea is only
    stable on that range; display values also spread more evenly than linear ones), on an
    image shrunk so the hole has at most :data:`INPAINT_BUDGET` pixels (the fill of a large
    unseen region is smooth anyway), then enlarged again; known pixels are kept as they are.
    """
    factor = max(1, math.ceil(math.sqrt(int(hole.sum()) / INPAINT_BUDGET)))
    encoded = linear_to_srgb(np.clip(linear, 0.0, None)) * np.float32(255.0)
    filled = shrunk_telea(encoded, hole, factor, max(2, radius // factor))
    return np.where(hole[..., None] > 0, srgb_to_linear(filled / np.float32(255.0)), linear).astype(np.float32)
