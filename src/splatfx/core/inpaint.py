"""Telea inpainting on a shrunk image: the fill every stage uses for what nothing saw.

OpenCV's Telea fill costs grow with the hole, and the fill of a large unseen region is smooth
anyway, so it runs on the image shrunk by an integer factor and is enlarged again.
"""

from __future__ import annotations

import cv2
import numpy as np


def shrunk_telea(values: np.ndarray, hole: np.ndarray, factor: int, radius: int) -> np.ndarray:
    """``values`` (H,W,C float32 on 0–255, where OpenCV's float Telea is stable) with the
    ``hole`` pixels (H,W, nonzero = fill) filled per channel by Telea's method (``radius``
    pixels of the shrunk image) on the image shrunk ``factor`` times, enlarged back to H×W.
    Every pixel of the result is the enlarged fill: the caller keeps its known pixels."""
    height, width = hole.shape
    small, mask = np.asarray(values, np.float32), (np.asarray(hole) > 0).astype(np.uint8)
    if factor > 1:
        size = (max(1, width // factor), max(1, height // factor))
        small = cv2.resize(small, size, interpolation=cv2.INTER_AREA)
        mask = (cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)
    if small.ndim == 2:
        small = small[..., None]
    filled = np.stack([cv2.inpaint(np.ascontiguousarray(small[..., c]), mask, radius, cv2.INPAINT_TELEA)
                       for c in range(small.shape[2])], axis=2)
    if factor > 1:
        filled = cv2.resize(filled, (width, height), interpolation=cv2.INTER_LINEAR)
        if filled.ndim == 2:
            filled = filled[..., None]
    return filled.astype(np.float32)
