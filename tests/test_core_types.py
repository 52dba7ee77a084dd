"""Gaussians and SH: validation, selection, and transforms that keep the look of a scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splatfx.core.errors import InputError
from splatfx.core.gaussians import Gaussians
from splatfx.core.rotation import quat_to_rotmat, rotmat_to_quat
from splatfx.core.sh import eval_sh, rotate_sh


def random_rotation(seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def random_gaussians(n: int = 50, degree: int = 3, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    return Gaussians(
        torch.randn(n, 3, generator=g), torch.randn(n, 4, generator=g), torch.randn(n, 3, generator=g) - 3,
        torch.randn(n, generator=g), torch.randn(n, k, 3, generator=g), {"id": torch.arange(n).float()},
    )


def test_validation_names_source_and_problem():
    good = random_gaussians(4)
    with pytest.raises(InputError, match=r"scene\.ply: means has 3 non-finite"):
        good.replace(means=torch.tensor([[np.nan, 0, 0], [np.inf, 0, 0], [0, 0, -np.inf], [0, 0, 0]]), source="scene.ply")
    with pytest.raises(InputError, match=r"quats has shape \(3, 4\), expected \(4, 4\)"):
        good.replace(quats=torch.ones(3, 4))
    with pytest.raises(InputError, match="not \\(d\\+1\\)²"):
        good.replace(sh=torch.zeros(4, 5, 3))
    with pytest.raises(InputError, match="zero-length quaternions"):
        good.replace(quats=torch.zeros(4, 4))


def test_slicing_and_concatenation_keep_rows_together():
    g = random_gaussians(20)
    mask = g.means[:, 0] > 0
    part = g[mask]
    assert len(part) == int(mask.sum())
    assert torch.equal(part.extras["id"], torch.nonzero(mask).squeeze(1).float())
    low = random_gaussians(5, degree=0, seed=1)
    both = Gaussians.cat([g[:3], low])
    assert len(both) == 8 and both.sh_degree == 3
    assert torch.equal(both.sh[3:, 0], low.sh[:, 0]) and not both.sh[3:, 1:].any()
    assert len(g[np.array([0, 2])]) == 2 and len(g[-1]) == 1


def test_rotation_conversions_round_trip():
    for seed in range(10):
        r = random_rotation(seed)
        assert np.allclose(quat_to_rotmat(rotmat_to_quat(r)), r, atol=1e-12)


def test_sh_rotation_turns_colour_with_the_object():
    sh = torch.randn(30, 16, 3, dtype=torch.float64)
    rot = random_rotation(3)
    dirs = torch.randn(30, 3, dtype=torch.float64)
    rotated = rotate_sh(sh, rot)
    # the rotated object seen along R·d looks like the original seen along d
    new = eval_sh(3, rotated, dirs @ torch.from_numpy(rot).T)
    assert torch.allclose(new, eval_sh(3, sh, dirs), atol=1e-10)


def test_similarity_transform_moves_every_attribute():
    g = random_gaussians(40)
    rot, t, s = random_rotation(7), np.array([1.0, -2.0, 0.5]), 2.5
    h = g.transform(rot, t, s)
    assert torch.allclose(h.means, torch.from_numpy((s * g.means.double().numpy() @ rot.T + t)).float(), atol=1e-5)
    assert torch.allclose(h.log_scales, g.log_scales + np.log(s), atol=1e-6)
    # orientation: R_new = R · R_old for every Gaussian
    before = quat_to_rotmat(g.quats.double().numpy())
    after = quat_to_rotmat(h.quats.double().numpy())
    assert np.allclose(after, rot @ before, atol=1e-5)
    dirs = torch.randn(40, 3)
    colour_before = eval_sh(3, g.sh, dirs)
    colour_after = eval_sh(3, h.sh, dirs @ torch.from_numpy(rot).float().T)
    assert torch.allclose(colour_after, colour_before, atol=1e-4)
    # the inverse transform brings the scene back
    back = h.transform(rot.T, -rot.T @ t / s, 1 / s)
    assert torch.allclose(back.means, g.means, atol=1e-4)
    assert torch.allclose(back.sh, g.sh, atol=1e-4)


def test_transform_rejects_non_rotations():
    with pytest.raises(ValueError, match="rotation"):
        random_gaussians(3).transform(np.diag([1.0, 1.0, -1.0]))
