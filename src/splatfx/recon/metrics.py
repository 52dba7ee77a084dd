"""Image-quality metrics for evaluating a trained scene: PSNR and SSIM.

Both take images (H, W, C) in [0, 1] (renders are clamped first, as the 3DGS and gsplat
evaluation scripts do) and return plain floats. SSIM is the 3DGS variant from
:mod:`splatfx.core.losses` (11×11 Gaussian window, σ = 1.5), computed in float64 here so the
reported figure does not depend on summation order. LPIPS is not provided: it needs
network weights, which splatfx never downloads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from splatfx.core.losses import ssim as _ssim


def psnr(image: Tensor, reference: Tensor) -> float:
    """Peak signal-to-noise ratio in dB for a peak of 1 (``inf`` for identical images)."""
    if image.shape != reference.shape:
        raise ValueError(f"images differ in shape: {tuple(image.shape)} vs {tuple(reference.shape)}")
    mse = torch.mean((image.double().clamp(0, 1) - reference.double()) ** 2).item()
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def ssim(image: Tensor, reference: Tensor) -> float:
    """Mean SSIM (3DGS window) of a clamped render against its reference."""
    return float(_ssim(image.double().clamp(0, 1), reference.double()))


@dataclass
class MetricSummary:
    """Per-view PSNR/SSIM accumulated over a set of views, with their means.

    When the renders were scored at each plate's own exposure (:mod:`splatfx.recon.exposure`),
    ``mean_exposure_psnr`` keeps the PSNR of the same renders at the scene's mean exposure too,
    so the two can be told apart in the record."""

    names: list[str] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    mean_exposure_psnr: list[float] = field(default_factory=list)

    def add(self, name: str, image: Tensor, reference: Tensor,
            at_mean_exposure: Tensor | None = None) -> tuple[float, float]:
        """Score one view (and its render at the mean exposure, when given); returns (psnr, ssim)."""
        p, s = psnr(image, reference), ssim(image, reference)
        self.names.append(name)
        self.psnr.append(p)
        self.ssim.append(s)
        if at_mean_exposure is not None:
            self.mean_exposure_psnr.append(psnr(at_mean_exposure, reference))
        return p, s

    @property
    def mean_psnr(self) -> float:
        return float(sum(self.psnr) / len(self.psnr)) if self.psnr else math.nan

    @property
    def mean_ssim(self) -> float:
        return float(sum(self.ssim) / len(self.ssim)) if self.ssim else math.nan

    def to_dict(self) -> dict:
        """JSON-ready means and per-view figures."""
        figures = {"psnr": self.mean_psnr, "ssim": self.mean_ssim, "views": len(self.names)}
        per_view = [{"name": n, "psnr": p, "ssim": s} for n, p, s in zip(self.names, self.psnr, self.ssim)]
        if self.mean_exposure_psnr:
            figures["psnr_at_mean_exposure"] = float(sum(self.mean_exposure_psnr) / len(self.mean_exposure_psnr))
            for view, p in zip(per_view, self.mean_exposure_psnr):
                view["psnr_at_mean_exposure"] = p
        return {**figures, "per_view": per_view}
