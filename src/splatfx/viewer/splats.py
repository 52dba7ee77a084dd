"""Gaussians as browser splats: viser's arrays (centres, covariances, colour, opacity) in the
display frame, and decimation to a display budget by opacity × volume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from splatfx.fx.animation import Similarity
from splatfx.core.gaussians import Gaussians
from splatfx.core.rotation import quat_to_rotmat
from splatfx.core.sh import SH_C0


@dataclass(frozen=True)
class SplatArrays:
    """What viser's splat renderer takes: centres (N,3), covariances (N,3,3), colours (N,3)
    in [0,1] and opacities (N,1), all float32 in the display frame."""

    centers: np.ndarray
    covariances: np.ndarray
    rgbs: np.ndarray
    opacities: np.ndarray

    def __len__(self) -> int:
        return len(self.centers)


def to_splats(gaussians: Gaussians, frame: Similarity | None = None) -> SplatArrays:
    """Display arrays of ``gaussians`` (view-independent colour from the SH DC term),
    mapped through ``frame`` (world = s·R·x + t) when given."""
    means = gaussians.means.detach().cpu().double().numpy()
    axes = quat_to_rotmat(gaussians.quats.detach().cpu().double().numpy())  # (N,3,3), normalised
    axes = axes * gaussians.log_scales.detach().cpu().double().exp().numpy()[:, None, :]  # R·diag(σ)
    if frame is not None:
        means = frame.to_world(means)
        axes = frame.scale * np.einsum("ij,njk->nik", frame.rotation, axes)
    covariances = axes @ axes.transpose(0, 2, 1)
    dc = gaussians.sh[:, 0].detach().cpu().numpy()
    return SplatArrays(
        centers=means.astype(np.float32),
        covariances=covariances.astype(np.float32),
        rgbs=np.clip(dc * SH_C0 + 0.5, 0.0, 1.0).astype(np.float32),
        opacities=gaussians.opacities.detach().cpu().numpy().astype(np.float32)[:, None],
    )


def display_importance(gaussians: Gaussians) -> np.ndarray:
    """How much each Gaussian contributes to a picture: opacity × ellipsoid volume (σx·σy·σz)."""
    log_volume = gaussians.log_scales.detach().cpu().double().sum(dim=1)
    return (gaussians.opacities.detach().cpu().double() * log_volume.exp()).numpy()


def display_rows(gaussians: Gaussians, budget: int) -> np.ndarray | None:
    """Rows (sorted) of the ``budget`` most important Gaussians (see :func:`display_importance`),
    or None when there are no more than ``budget`` (all are shown)."""
    if len(gaussians) <= budget:
        return None
    if budget <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.argpartition(-display_importance(gaussians), budget - 1)[:budget])


def decimate(gaussians: Gaussians, budget: int) -> Gaussians:
    """The ``budget`` most important Gaussians in their original order (``gaussians``
    itself when there are no more than ``budget``)."""
    rows = display_rows(gaussians, budget)
    return gaussians if rows is None else gaussians[torch.from_numpy(rows)]
