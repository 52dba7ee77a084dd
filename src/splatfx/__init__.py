"""splatfx: Gaussian-splatting visual effects from real footage.

Core types live in :mod:`splatfx.gaussians` and :mod:`splatfx.camera`; the one
differentiable renderer is :func:`splatfx.raster.rasterize`.
"""

__version__ = "0.1.0"
