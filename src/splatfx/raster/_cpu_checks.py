"""Input checks for the rasterizer in one compiled pass per array (numba).

``rasterize`` checks every input for NaN/inf and the quaternions for zero rows on each
call; with numpy that took ≈ 0.1 ms per small render (a temporary boolean array per
test), which is noticeable beside a 5 ms render.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def count_nonfinite(values: np.ndarray) -> int:
    """Number of NaN or ±inf entries of a 1-D float32/float64 array."""
    bad = 0
    for k in range(values.shape[0]):
        x = values[k]
        bad += not (x - x == 0.0)  # NaN and ±inf give NaN
    return bad


@njit(nogil=True, cache=True)
def count_zero_rows(quats: np.ndarray) -> int:
    """Number of all-zero rows of an (N, 4) float32/float64 array."""
    zero = 0
    for k in range(quats.shape[0]):
        zero += (quats[k, 0] == 0.0) & (quats[k, 1] == 0.0) & (quats[k, 2] == 0.0) & (quats[k, 3] == 0.0)
    return zero
