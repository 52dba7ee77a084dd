"""How the background a removed structure uncovers looks in the comp (issue 18's measures).

The *uncovered region* of a frame is where the structure stood in the plate
(``mask.structure`` > :data:`STOOD`) and nothing synthetic covers it now (``mask.synthetic``
below :data:`CLEAR`, so a thin veil of dust or a flake's soft rim still counts as clear):
there the comp shows the background built for it.

* **Texture**: the mean Sobel gradient magnitude of the comp's display values over the
  uncovered region, over that of the plate in a ring around the structure's footprint
  (:data:`RING_PX` wide, starting :data:`RING_GAP_PX` out). A flat smear gives a small ratio.
* **Stability**: frame ``t+1`` of the comp warped back along the render's motion vectors of
  frame ``t`` (bilinear), then the mean absolute difference from frame ``t`` in 8-bit display
  codes over the pixels uncovered in both. The same figure over the plates' own ring says how
  much a real background changes under the same warp (noise and resampling).

Pure numpy and OpenCV on arrays the caller reads (:mod:`splatfx.render.layers`, the comp's frames).
"""

from __future__ import annotations

import cv2
import numpy as np

from splatfx.core.color import luminance
from splatfx.render.cleanfill import MATTE_EPS

STOOD = 0.5
CLEAR = 0.05
RING_GAP_PX = 4
RING_PX = 12


def uncovered(structure: np.ndarray, synthetic: np.ndarray) -> np.ndarray:
    """Where the structure stood and nothing synthetic covers the background now."""
    return (structure > STOOD) & (synthetic < CLEAR)


def ring(structure: np.ndarray) -> np.ndarray:
    """Plate pixels around the structure's footprint, clear of its soft edge."""
    stood = (structure > MATTE_EPS).astype(np.uint8)
    near = cv2.dilate(stood, np.ones((2 * RING_GAP_PX + 1,) * 2, np.uint8))
    far = cv2.dilate(stood, np.ones((2 * (RING_GAP_PX + RING_PX) + 1,) * 2, np.uint8))
    return (far > 0) & (near == 0)


def gradient(display: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of the luminance of display values (0–1)."""
    grey = np.ascontiguousarray(luminance(display.astype(np.float32, copy=False)))
    return np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))


def texture_ratio(comp: np.ndarray, plate: np.ndarray, structure: np.ndarray, synthetic: np.ndarray
                  ) -> float | None:
    """Mean gradient over the uncovered region of ``comp`` ÷ the plate's over the ring (display
    values); None when either region is empty."""
    region, around = uncovered(structure, synthetic), ring(structure)
    if not region.any() or not around.any():
        return None
    plate_texture = float(gradient(plate)[around].mean())
    return float(gradient(comp)[region].mean()) / max(plate_texture, 1e-6)


def warped_back(following: np.ndarray, motion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``following`` (H,W,C) sampled at each pixel's position in the next frame (its motion
    vector added), and where that position lies inside the frame."""
    height, width = motion.shape[:2]
    cols, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x, map_y = cols + motion[..., 0].astype(np.float32), rows + motion[..., 1].astype(np.float32)
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1) & \
        np.isfinite(map_x) & np.isfinite(map_y)
    map_x, map_y = np.where(inside, map_x, 0).astype(np.float32), np.where(inside, map_y, 0).astype(np.float32)
    warped = cv2.remap(np.ascontiguousarray(following, np.float32), map_x, map_y, cv2.INTER_LINEAR)
    return warped.reshape(following.shape), inside


def frame_change(current: np.ndarray, following: np.ndarray, motion: np.ndarray, region: np.ndarray,
                 region_next: np.ndarray) -> float | None:
    """Mean absolute difference (8-bit display codes) between ``current`` and ``following``
    warped back along ``motion``, over ``region`` pixels whose warped position lies in
    ``region_next``; None when there are none."""
    warped, inside = warped_back(following, motion)
    lands = warped_back(region_next.astype(np.float32)[..., None], motion)[0][..., 0] > 0.99
    both = region & inside & lands
    if both.sum() < 16:
        return None
    return float(np.abs(warped[both] - current[both]).mean() * 255.0)
