"""Warped noise (splatfx.refine.noise_warp): it follows the motion and stays i.i.d. N(0,1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from splatfx.refine.noise_warp import NoiseWarper, motion_at, upsample_noise, warp_noise


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # these tensors are tiny


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_upsampled_noise_sums_back_to_each_pixel_and_is_standard_normal():
    noise = torch.randn(2, 40, 40, generator=_generator(1))
    sub = upsample_noise(noise, 4, _generator(2))
    assert sub.shape == (2, 160, 160)
    block_sums = sub.reshape(2, 40, 4, 40, 4).sum(dim=(2, 4)) / 4
    torch.testing.assert_close(block_sums, noise, atol=1e-5, rtol=0)
    # Sub-samples of one pixel are uncorrelated although they share the pixel's value.
    a, b = sub[:, 0::4, 0::4].flatten(), sub[:, 1::4, 2::4].flatten()
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.05
    assert abs(float(sub.var()) - 1) < 0.02


def test_whole_pixel_motion_carries_noise_exactly_and_fills_what_enters_fresh():
    noise = torch.randn(3, 32, 32, generator=_generator(3))
    motion = torch.zeros(32, 32, 2)
    motion[..., 0], motion[..., 1] = 3.0, -2.0  # right 3, up 2
    out = warp_noise(noise, motion, _generator(4))
    torch.testing.assert_close(out[:, :30, 3:], noise[:, 2:, :29], atol=1e-5, rtol=0)
    entered = torch.cat([out[:, :, :3].flatten(), out[:, 30:, 3:].flatten()])
    assert not torch.isin(entered, noise).any()


def test_zero_motion_keeps_the_noise():
    warper = NoiseWarper((4, 16, 24), seed=5)
    first = warper.noise.clone()
    torch.testing.assert_close(warper.step(torch.zeros(16, 24, 2)), first, atol=1e-5, rtol=0)


def test_sub_pixel_motion_mixes_the_sources_by_overlap():
    noise = torch.randn(4, 64, 64, generator=_generator(6))
    motion = torch.zeros(64, 64, 2)
    motion[..., 0] = 0.25
    out = warp_noise(noise, motion, _generator(7))
    # Pixel x receives 12 of the 16 samples of pixel x and 4 of pixel x-1's: correlations
    # 12/16 and 4/16 with the two sources.
    own = float(torch.corrcoef(torch.stack([out[:, :, 1:].flatten(), noise[:, :, 1:].flatten()]))[0, 1])
    left = float(torch.corrcoef(torch.stack([out[:, :, 1:].flatten(), noise[:, :, :-1].flatten()]))[0, 1])
    assert own == pytest.approx(0.75, abs=0.03)
    assert left == pytest.approx(0.25, abs=0.03)
    assert float(out.var()) == pytest.approx(1.0, abs=0.03)


def _scene(frame: int, size: int) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int], tuple[int, int]]:
    """A bouncing 12-pixel square (depth 2, whole-pixel steps) over a background panning by a
    sub-pixel amount (depth 10): motion to the next frame, depth, the square's corner and step."""
    side, travel = 12, size - 12
    def corner(f: int) -> tuple[int, int]:
        x, y = (2 * f) % (2 * travel), f % (2 * travel)
        return (x if x < travel else 2 * travel - x), (y if y < travel else 2 * travel - y)
    (x0, y0), (x1, y1) = corner(frame), corner(frame + 1)
    motion = torch.zeros(size, size, 2)
    motion[..., 0], motion[..., 1] = 0.37, 0.11
    depth = torch.full((size, size), 10.0)
    motion[y0:y0 + side, x0:x0 + side, 0] = x1 - x0
    motion[y0:y0 + side, x0:x0 + side, 1] = y1 - y0
    depth[y0:y0 + side, x0:x0 + side] = 2.0
    return motion, depth, (x0, y0), (x1 - x0, y1 - y0)


def test_long_sequence_with_occlusions_stays_iid_standard_normal_and_follows_the_surfaces():
    size, frames, channels = 40, 120, 4
    warper = NoiseWarper((channels, size, size), seed=8)
    sequence = [warper.noise.clone()]
    carried = []
    for f in range(frames - 1):
        motion, depth, (x0, y0), (dx, dy) = _scene(f, size)
        before = warper.noise.clone()
        after = warper.step(motion, depth)
        sequence.append(after.clone())
        # The square moves by whole pixels and is in front: its noise is carried exactly.
        carried.append(float((after[:, y0 + dy + 1:y0 + dy + 11, x0 + dx + 1:x0 + dx + 11]
                              - before[:, y0 + 1:y0 + 11, x0 + 1:x0 + 11]).abs().max()))
    assert max(carried) < 1e-4

    noise = torch.stack(sequence)  # (frames, C, H, W)
    n = channels * size * size
    means = noise.mean(dim=(1, 2, 3))
    variances = noise.var(dim=(1, 2, 3))
    assert float(means.abs().max()) < 5 / math.sqrt(n)
    assert float((variances - 1).abs().max()) < 5 * math.sqrt(2 / n)
    # Normal in shape too (frame by frame: consecutive frames share noise by design).
    assert min(stats.kstest(frame.flatten().numpy(), "norm").pvalue for frame in noise) > 1e-4

    def corr(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])

    # Unrelated pixels: neighbours across x and y, other channels, far-apart pixels; pooled
    # over frames 20 apart (consecutive frames share their noise, so they are not pooled).
    spaced = noise[::20]
    limit = 5 / math.sqrt(spaced.numel())
    assert abs(corr(spaced[..., 1:], spaced[..., :-1])) < limit
    assert abs(corr(spaced[..., 1:, :], spaced[..., :-1, :])) < limit
    assert abs(corr(spaced[:, 1:], spaced[:, :-1])) < limit
    assert abs(corr(spaced[..., :20], spaced[..., 20:])) < limit
    for frame in noise:  # and in every single frame
        assert abs(corr(frame[..., 1:], frame[..., :-1])) < 5 / math.sqrt(frame.numel())
    # Along the flow the noise is correlated: the background pans by (0.37, 0.11) px per
    # frame, so a background pixel keeps 12 of its 16 sub-samples from frame to frame...
    same_place = corr(noise[1:, :, 2:-2, 2:-2], noise[:-1, :, 2:-2, 2:-2])
    assert same_place > 0.5
    # ...while frames far apart are unrelated.
    assert abs(corr(noise[60:], noise[:60])) < 0.05


def test_disoccluded_pixels_get_fresh_noise_and_occluded_ones_take_the_front_surface():
    size = 24
    noise = torch.randn(2, size, size, generator=_generator(9))
    motion = torch.zeros(size, size, 2)
    depth = torch.full((size, size), 10.0)
    motion[8:16, 4:12, 0] = 4.0  # an 8x8 square moves right by 4 over a still background
    depth[8:16, 4:12] = 1.0
    out = warp_noise(noise, motion, _generator(10), depth=depth)
    # Where the square now is: its own noise (the background there is hidden).
    torch.testing.assert_close(out[:, 8:16, 8:16], noise[:, 8:16, 4:12], atol=1e-5, rtol=0)
    # The strip it uncovered: nothing lands there, so fresh values unrelated to either frame.
    revealed = out[:, 8:16, 4:8].flatten()
    assert not torch.isin(revealed, noise).any()
    # The background elsewhere is unchanged.
    torch.testing.assert_close(out[:, :8], noise[:, :8], atol=1e-5, rtol=0)
    # Without depth, the background the square slid over mixes both surfaces' samples.
    mixed = warp_noise(noise, motion, _generator(10))
    expected = (noise[:, 8:16, 8:12] * 4 + noise[:, 8:16, 12:16] * 4) / math.sqrt(32)
    torch.testing.assert_close(mixed[:, 8:16, 12:16], expected, atol=1e-5, rtol=0)


def test_a_seed_gives_one_sequence():
    motion = torch.full((20, 30, 2), 0.6)
    first, second = NoiseWarper((3, 20, 30), seed=11), NoiseWarper((3, 20, 30), seed=11)
    for _ in range(3):
        torch.testing.assert_close(first.step(motion), second.step(motion), atol=0, rtol=0)
    assert not torch.equal(NoiseWarper((3, 20, 30), seed=12).noise, NoiseWarper((3, 20, 30), seed=11).noise)


def test_motion_on_a_latent_grid_is_averaged_and_scaled_to_cells():
    motion = torch.zeros(60, 60, 2)
    motion[..., 0], motion[..., 1] = 8.0, -16.0
    depth = torch.full((60, 60), 5.0)
    depth[0, 0] = 1.0
    cells, cell_depth = motion_at(motion, (8, 8), 8, depth)  # padded to 64 x 64, as the refiners do
    assert cells.shape == (8, 8, 2) and cell_depth.shape == (8, 8)
    torch.testing.assert_close(cells[..., 0], torch.ones(8, 8))
    torch.testing.assert_close(cells[..., 1], torch.full((8, 8), -2.0))
    assert float(cell_depth[0, 0]) == 1.0 and float(cell_depth[1, 1]) == 5.0
    with pytest.raises(ValueError, match="does not cover"):
        motion_at(motion, (7, 7), 8)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="motion"):
        warp_noise(torch.zeros(3, 8, 8), torch.zeros(8, 9, 2), _generator())
    with pytest.raises(ValueError, match="depth"):
        warp_noise(torch.zeros(3, 8, 8), torch.zeros(8, 8, 2), _generator(), depth=torch.zeros(7, 8))
    assert np.isfinite(warp_noise(torch.zeros(1, 4, 4), torch.full((4, 4, 2), float("nan")), _generator()).numpy()).all()
