"""The clean plate: the location without the destroyed structure.

Two renders of the *static* reconstruction per camera, limited to the rectangle the
structure covers (plus a margin):

* the **footprint** (``mask.structure``): the original scene with a feature that is 1 on the
  structure's Gaussians (the rows the effect removed) and 0 elsewhere, so it is the share of
  each pixel the structure occupied *in the plate*, held out by whatever real object stood
  in front of it;
* the **clean render** (``clean.R,G,B,A``): the scene with those rows (and the haze they
  hid) removed, premultiplied, scene-linear, over the backdrop painted behind the structure once
  (:mod:`splatfx.fx.backdrop`). Where its alpha is still low nothing saw or painted what lies
  behind the structure: those are the holes (``mask.holes``: inside the footprint,
  alpha < 0.5), which the comp inpaints.

The channels are named and written by :mod:`splatfx.render.layers`; what the comp and the
refiner build from them (the plate with the structure removed) is
:func:`splatfx.render.cleanfill.fill_clean_plate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from splatfx.core.camera import Camera
from splatfx.core.gaussians import Gaussians
from splatfx.render.cleanfill import MATTE_EPS, grow_footprint
from splatfx.render.layers import clean_channels
from splatfx.raster.views import sh_colours
from splatfx.render.passes import NEAR, Crop, render_canvas, render_features, to_linear_premultiplied

#: Clean-render alpha below which a footprint pixel counts as a hole (reported in mask.holes).
HOLE_ALPHA = 0.5
#: Pixels of margin around the structure's projected extent in the clean renders.
CROP_MARGIN = 16


@dataclass
class CleanPass:
    """The clean renders of one camera at the output size (zeros outside ``crop``)."""

    rgba: np.ndarray  # (H,W,4) premultiplied scene-linear render of the scene without the structure
    structure: np.ndarray  # (H,W) the structure's share of each plate pixel (held out)
    holes: np.ndarray  # (H,W) 1 inside the grown footprint where the clean render has alpha < HOLE_ALPHA
    crop: Crop | None  # where the renders were made (pinhole canvas pixels); None: nothing to render

    def channels(self) -> dict[str, np.ndarray]:
        """EXR channels: ``clean.R,G,B,A``, ``mask.structure``, ``mask.holes``."""
        return clean_channels(self.rgba, self.structure, self.holes)


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


def render_clean_pass(scene: Gaussians, removed: np.ndarray, camera: Camera, backdrop: Gaussians | None = None,
                      hidden: np.ndarray | None = None) -> CleanPass:
    """Footprint and clean render of ``scene`` without rows ``removed``, seen by ``camera``,
    over the ``backdrop`` painted behind them (:mod:`splatfx.fx.backdrop`) when there is one.
    Rows ``hidden`` (the haze the structure hid) are left out of the clean render too, but
    are not the structure's."""
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
    kept = ~mask
    if hidden is not None:
        kept[np.asarray(hidden, dtype=np.int64)] = False
    static = scene[torch.from_numpy(kept)]
    if backdrop is not None:
        static = Gaussians.cat([static, backdrop])
    clean = render_features(static, sh_colours(static, camera), camera, crop=crop)
    rgba = np.concatenate([to_linear_premultiplied(clean.channels, clean.alpha), clean.alpha[..., None]], axis=2)
    holes = ((grow_footprint(structure) > 0) & (clean.alpha < HOLE_ALPHA)).astype(np.float32)
    return CleanPass(rgba.astype(np.float32), structure, holes, crop)
