"""splatfx: Gaussian-splatting visual effects from real footage.

Core types live in :mod:`splatfx.core.gaussians` and :mod:`splatfx.core.camera`; the one
differentiable renderer is :func:`splatfx.raster.rasterize`.
"""

import os as _os

# torch's OpenMP workers otherwise spin after every parallel op and steal the cores the
# CPU rasterizer's threads need (measured: 3-5x slower renders on 2 cores); users can
# still override it in their environment.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
