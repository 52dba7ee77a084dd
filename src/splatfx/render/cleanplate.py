"""The clean plate: the location without the destroyed structure.

Two renders of the *static* reconstruction per camera, limited to the rectangle the
structure covers (plus a margin):

* the **footprint** (``mask.structure``): the original scene with a feature that is 1 on the
  structure's Gaussians (the rows the effect removed) and 0 elsewhere, so it is the share of
  each pixel the structure occupied *in the plate*, held out by whatever real object stood
  in front of it;
* the **clean render** (``clean.R,G,B,A``): the scene with those rows removed, premultiplied,
  scene-linear. Where its alpha is low the reconstruction never saw what lies behind the
  structure: those are the holes (``mask.holes``: inside the footprint, alpha < 0.5).

:func:`fill_clean_plate` (used by the comp) turns that into the plate with the structure
removed: plate outside the (slightly grown, softened) footprint, the clean render inside,
and holes filled by classical inpainting (OpenCV ``cv2.inpaint``, Telea's method) from the
surrounding plate and clean render, on sRGB-encoded values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from splatfx.core.camera import Camera
from splatfx.core.color import linear_to_srgb, srgb_to_linear
from splatfx.core.gaussians import Gaussians
from splatfx.io.images import pack_layer
from splatfx.render.passes import NEAR, Crop, colours, render_canvas, render_features, to_linear_premultiplied

#: Matte values below this count as exactly 0 (keeps "outside the effect" bit-exact).
MATTE_EPS = 1.0 / 1024.0
#: The footprint is grown by this many pixels, then softened with a Gaussian of this sigma,
#: to cover the structure's anti-aliased fringe in the plate.
GROW_PX = 2
SOFTEN_SIGMA = 1.0
#: Clean-render alpha below which a footprint pixel counts as a hole (reported in mask.holes).
HOLE_ALPHA = 0.5
#: Clean-render alpha at or above which a pixel needs no inpainted backing.
SOLID_ALPHA = 0.95
#: Pixels of margin around the structure's projected extent in the clean renders.
CROP_MARGIN = 16
INPAINT_RADIUS = 5
#: Holes larger than this many pixels are inpainted on a shrunk image (see :func:`inpaint`).
INPAINT_BUDGET = 16384


@dataclass
class CleanPass:
    """The clean renders of one camera at the output size (zeros outside ``crop``)."""

    rgba: np.ndarray  # (H,W,4) premultiplied scene-linear render of the scene without the structure
    structure: np.ndarray  # (H,W) the structure's share of each plate pixel (held out)
    holes: np.ndarray  # (H,W) 1 inside the grown footprint where the clean render has alpha < HOLE_ALPHA
    crop: Crop | None  # where the renders were made (pinhole canvas pixels); None: nothing to render

    def channels(self) -> dict[str, np.ndarray]:
        """EXR channels: ``clean.R,G,B,A``, ``mask.structure``, ``mask.holes``."""
        return {**pack_layer("clean", self.rgba, ("R", "G", "B", "A")), "mask.structure": self.structure,
                "mask.holes": self.holes}


def structure_crop(structure: Gaussians, canvas: Camera, margin: int = CROP_MARGIN) -> Crop | None:
    """The rectangle of ``canvas`` (a pinhole camera) that the Gaussians' 3-sigma extents
    cover, grown by ``margin`` pixels; None when none is in front of the camera or on it."""
    if len(structure) == 0:
        return None
    p, z = canvas.project(structure.means.double().numpy())
    radius = 3.0 * structure.scales.max(dim=1).values.double().numpy() * max(canvas.fx, canvas.fy) / np.maximum(z, NEAR)
    front = z > NEAR
    if not front.any():
        return None
    lo = np.floor((p[front] - radius[front, None]).min(axis=0)) - margin
    hi = np.ceil((p[front] + radius[front, None]).max(axis=0)) + margin
    x0, y0 = int(max(lo[0], 0)), int(max(lo[1], 0))
    x1, y1 = int(min(hi[0], canvas.width)), int(min(hi[1], canvas.height))
    if x1 <= x0 or y1 <= y0:
        return None
    return Crop(x0, y0, x1 - x0, y1 - y0)


def render_clean_pass(scene: Gaussians, removed: np.ndarray, camera: Camera) -> CleanPass:
    """Footprint and clean render of ``scene`` without rows ``removed``, seen by ``camera``."""
    shape = (camera.height, camera.width)
    mask = np.zeros(len(scene), dtype=bool)
    mask[np.asarray(removed, dtype=np.int64)] = True
    crop = structure_crop(scene[torch.from_numpy(mask)], render_canvas(camera))
    if crop is None:
        return CleanPass(np.zeros(shape + (4,), np.float32), np.zeros(shape, np.float32), np.zeros(shape, np.float32),
                         None)
    flag = torch.from_numpy(mask.astype(np.float32))[:, None]
    structure = render_features(scene, flag, camera, crop=crop).channels[..., 0]
    structure = np.where(structure >= MATTE_EPS, np.clip(structure, 0.0, 1.0), 0.0).astype(np.float32)
    static = scene[torch.from_numpy(~mask)]
    clean = render_features(static, colours(static, camera), camera, crop=crop)
    rgba = np.concatenate([to_linear_premultiplied(clean.channels, clean.alpha), clean.alpha[..., None]], axis=2)
    holes = ((grow_footprint(structure) > 0) & (clean.alpha < HOLE_ALPHA)).astype(np.float32)
    return CleanPass(rgba.astype(np.float32), structure, holes, crop)


def grow_footprint(structure: np.ndarray) -> np.ndarray:
    """The footprint matte the comp uses: grown by :data:`GROW_PX`, softened by
    :data:`SOFTEN_SIGMA`, values below :data:`MATTE_EPS` set to exactly 0."""
    if not np.any(structure > 0):
        return np.zeros_like(structure, dtype=np.float32)
    size = 2 * GROW_PX + 1
    grown = cv2.dilate(structure.astype(np.float32), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
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
    h, w = hole.shape
    factor = max(1, math.ceil(math.sqrt(int(hole.sum()) / INPAINT_BUDGET)))
    encoded = linear_to_srgb(np.clip(linear, 0.0, None)) * np.float32(255.0)
    small, mask = encoded, hole
    if factor > 1:
        size = (max(1, w // factor), max(1, h // factor))
        small = cv2.resize(encoded, size, interpolation=cv2.INTER_AREA)
        mask = (cv2.resize(hole.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)
    filled = np.stack([cv2.inpaint(np.ascontiguousarray(small[..., k]), mask, max(2, radius // factor),
                                   cv2.INPAINT_TELEA) for k in range(small.shape[2])], axis=2)
    if factor > 1:
        filled = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.where(hole[..., None] > 0, srgb_to_linear(filled / np.float32(255.0)), linear).astype(np.float32)
