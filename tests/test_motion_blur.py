"""Motion blur like a film camera: the streak of a moving splat is its motion × the shutter's
share of the frame, pixels nothing moving reaches stay bit for bit the unblurred render,
motion and depth stay those of the frame's centre, and the same inputs give the same frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from splatfx.core.camera import Camera
from splatfx.core.gaussians import Gaussians
from splatfx.core.rotation import quat_to_rotmat
from splatfx.core.sh import rgb_to_sh
from splatfx.fx.animation import ELEMENTS, Fragments, RigidCache, ShotAnimation, Similarity, slerp
from splatfx.fx.particles import ParticleCache
from splatfx.render.passes import Shutter, blur_samples, render_exposure, render_passes, shutter_offsets

W, H, FX = 160, 96, 100.0
FPS = 24.0
Z = 5.0  # the moving splat's depth (m); the camera sits at the origin looking along +z
PX_PER_FRAME = 40.0  # its motion on screen, pixels per frame
SPEED = PX_PER_FRAME * Z * FPS / FX  # m/s


def camera() -> Camera:
    return Camera(W, H, FX, FX, W / 2, H / 2)


def wall() -> Gaussians:
    """Opaque static blobs at z = 10 over the left third of the image (x < −3 m)."""
    xs, ys = np.meshgrid(np.arange(-8.0, -3.0, 0.2), np.arange(-5.0, 5.0, 0.2))
    n = xs.size
    means = np.column_stack([xs.ravel(), ys.ravel(), np.full(n, 10.0)])
    sh = np.zeros((n, 1, 3), np.float32)
    sh[:, 0] = rgb_to_sh(torch.as_tensor(np.random.default_rng(1).uniform(0.1, 0.9, (n, 3)), dtype=torch.float32)).numpy()
    return Gaussians.from_arrays({"means": means, "quats": np.tile([1.0, 0, 0, 0], (n, 1)),
                                  "log_scales": np.full((n, 3), np.log(0.12)), "opacity_logits": np.full(n, 5.0),
                                  "sh": sh})


def moving_splat(frames: int = 3, start_x: float = -0.2) -> ParticleCache:
    """One small debris chip at depth Z moving right at SPEED (x at frame t: start + SPEED·t/FPS)."""
    t = np.arange(frames, dtype=np.float64)[:, None]
    positions = np.zeros((frames, 1, 3))
    positions[:, 0, 0] = start_x + SPEED * t[:, 0] / FPS - SPEED / FPS  # frame index 1 at start_x
    positions[:, 0, 2] = Z
    velocities = np.tile([[SPEED, 0.0, 0.0]], (frames, 1, 1))
    return ParticleCache(positions.astype(np.float32), velocities.astype(np.float32), np.ones((frames, 1), bool),
                         np.full((frames, 1), 0.01, np.float32), np.full((frames, 1), 0.99, np.float32),
                         rgb_to_sh(torch.tensor([[0.9, 0.5, 0.2]])).numpy())


def animation(particles: dict[str, ParticleCache] | None = None, frames: int = 3) -> ShotAnimation:
    return ShotAnimation(wall(), Similarity(), frames, FPS, particles=particles or {})


def streak_length(matte: np.ndarray) -> float:
    """The streak's extent along x: where its row-summed coverage is above half its plateau
    (linear interpolation of the two crossings)."""
    profile = matte.sum(axis=0).astype(np.float64)
    plateau = np.median(profile[profile > 0.25 * profile.max()])
    half = 0.5 * plateau
    above = np.nonzero(profile >= half)[0]
    first, last = above[0], above[-1]
    left = first - (profile[first] - half) / (profile[first] - profile[first - 1])
    right = last + (profile[last] - half) / (profile[last] - profile[last + 1])
    return float(right - left)


@pytest.mark.parametrize("degrees", [180.0, 90.0, 270.0])
def test_streak_length_is_motion_times_the_shutter_share(degrees: float) -> None:
    anim = animation({"debris": moving_splat()})
    _, passes, exposure = render_exposure(anim, 1, camera(), camera(), camera(), Shutter(degrees, max_samples=64))
    expected = PX_PER_FRAME * degrees / 360.0  # = SPEED · (degrees / 360) / FPS in metres, on screen
    assert exposure.samples >= expected  # samples at most 1 px apart
    assert exposure.streak_px == pytest.approx(expected, rel=1e-3)
    assert streak_length(passes.mattes["debris"]) == pytest.approx(expected, abs=1.0)
    # colour and matte blur together: the colour's alpha is the debris matte where nothing else is
    right = slice(W // 2 - 5, None)
    np.testing.assert_allclose(passes.rgba[:, right, 3], passes.mattes["debris"][:, right], atol=1e-6)
    np.testing.assert_allclose(passes.synthetic, passes.mattes["debris"], atol=1e-6)
    # the chip's coverage is spread, not lost or gained: its integral stays that of the sharp chip
    sharp = render_passes(anim.at(1), camera(), camera())
    assert passes.mattes["debris"].sum() == pytest.approx(sharp.mattes["debris"].sum(), rel=0.02)
    assert passes.mattes["debris"].max() < 0.5 * sharp.mattes["debris"].max()


def test_the_streak_is_centred_on_the_frame_and_follows_the_motion() -> None:
    anim = animation({"debris": moving_splat()})
    _, passes, _ = render_exposure(anim, 1, camera(), camera(), camera(), Shutter(180.0, max_samples=64))
    profile = passes.mattes["debris"].sum(axis=0)
    centre = (profile * np.arange(W)).sum() / profile.sum()
    x_centre = W / 2 + FX * (-0.2) / Z  # where the chip is at the frame's centre (pixel centres at +0.5)
    assert centre + 0.5 == pytest.approx(x_centre, abs=0.5)


def test_motion_and_depth_stay_at_the_frame_centre_and_far_pixels_are_bit_identical() -> None:
    anim = animation({"debris": moving_splat()})
    sharp = render_passes(anim.at(1), camera(), camera())
    _, blurred, _ = render_exposure(anim, 1, camera(), camera(), camera(), Shutter(180.0))
    assert np.array_equal(blurred.motion, sharp.motion)
    assert np.array_equal(blurred.depth, sharp.depth)
    # the wall (left third) and the empty top and bottom rows: nothing moving reaches them
    for a, b in [(blurred.rgba, sharp.rgba), (blurred.fx, sharp.fx), (blurred.synthetic, sharp.synthetic),
                 (blurred.element_id, sharp.element_id), *((blurred.mattes[k], sharp.mattes[k]) for k in sharp.mattes)]:
        assert np.array_equal(a[:, :W // 3], b[:, :W // 3])
        assert np.array_equal(a[:H // 2 - 8], b[:H // 2 - 8])
    assert not np.array_equal(blurred.rgba, sharp.rgba)  # the chip itself did blur


def test_a_static_scene_is_bit_identical_with_and_without_blur() -> None:
    anim = animation()
    cam, nxt = camera(), camera().with_pose(np.eye(3), np.array([0.05, 0.0, 0.0]))
    sharp = render_passes(anim.at(1), cam, nxt)
    _, blurred, exposure = render_exposure(anim, 1, cam, cam, nxt, Shutter(360.0))
    assert exposure.samples == 1
    for name in ("rgba", "depth", "motion", "synthetic", "fx", "element_id"):
        assert np.array_equal(getattr(blurred, name), getattr(sharp, name)), name


def test_shutter_zero_is_the_unblurred_render() -> None:
    anim = animation({"debris": moving_splat()})
    sharp = render_passes(anim.at(1), camera(), camera())
    _, closed, exposure = render_exposure(anim, 1, camera(), camera(), camera(), Shutter(0.0))
    assert exposure.samples == 1
    for k, v in sharp.channels().items():
        assert np.array_equal(closed.channels()[k], v), k


def test_the_same_inputs_give_the_same_frames_bit_for_bit() -> None:
    anim = animation({"debris": moving_splat(), "dust": moving_splat(start_x=0.4)})
    shutter = Shutter(180.0)
    first = render_exposure(anim, 1, camera(), camera(), camera(), shutter)[1].channels()
    second = render_exposure(animation({"debris": moving_splat(), "dust": moving_splat(start_x=0.4)}), 1,
                             camera(), camera(), camera(), shutter)[1].channels()
    assert first.keys() == second.keys()
    for k in first:
        assert np.array_equal(first[k], second[k]), k


def test_samples_follow_the_motion_on_screen() -> None:
    shutter = Shutter(180.0, max_samples=16, spacing_px=1.0)
    assert blur_samples(0.2, shutter) == 1
    assert blur_samples(5.0, shutter) == 5
    assert blur_samples(500.0, shutter) == 16
    offsets = shutter_offsets(4, 0.5)
    np.testing.assert_allclose(offsets, [-0.1875, -0.0625, 0.0625, 0.1875])


# --- sub-frame evaluation of the animation -----------------------------------------------------------
def test_particles_between_frames_are_lerped_and_a_wrap_is_not_streaked() -> None:
    cache = moving_splat(frames=3)
    anim = animation({"snow": cache})
    x = [anim.at_time(t).gaussians.means[-1, 0].item() for t in (1.0, 1.25, 1.5, 2.0)]
    step = SPEED / FPS
    np.testing.assert_allclose(np.diff(x), [0.25 * step, 0.25 * step, 0.5 * step], rtol=1e-5)
    # a flake that wraps around between frames 1 and 2 moves on with its velocity, not across the volume
    cache.positions[2, 0, 0] = -50.0
    x_wrap = anim.at_time(1.25).gaussians.means[-1, 0].item()
    assert x_wrap == pytest.approx(x[1], rel=1e-5)
    # before the first and after the last frame the first / last interval is extrapolated
    assert anim.at_time(-0.5).gaussians.means[-1, 0].item() == pytest.approx(
        cache.positions[0, 0, 0] - 0.5 * step, rel=1e-5)


def test_rigid_pieces_between_frames_turn_by_slerp_and_move_by_lerp() -> None:
    g = wall()[torch.arange(4)]
    frames = 3
    angles = np.radians([0.0, 0.0, 60.0])  # turns 60° about z between frames 1 and 2
    quats = np.stack([[np.cos(a / 2), 0, 0, np.sin(a / 2)] for a in angles])[:, None]
    positions = np.array([[[0.0, 0, 10]], [[0.0, 0, 10]], [[1.0, 0, 10]]])
    cache = RigidCache(FPS, np.array([[0.0, 0, 10]]), positions, quats, np.ones((frames, 1), bool), np.ones(1))
    anim = ShotAnimation(wall(), Similarity(), frames, FPS, removed=np.arange(4),
                         fragments=Fragments(g, np.zeros(4, np.int64), np.full(4, ELEMENTS["fragment"], np.int8),
                                             np.arange(4), cache))
    half = anim.at_time(1.5)
    rows = half.source_index >= 0
    rows &= np.isin(half.source_index, np.arange(4))
    rot = quat_to_rotmat(slerp(quats[1, 0], quats[2, 0], 0.5))
    np.testing.assert_allclose(np.degrees(np.arctan2(rot[1, 0], rot[0, 0])), 30.0, atol=1e-6)
    expected = (g.means.double().numpy() - [0, 0, 10]) @ rot.T + [0.5, 0, 10]
    np.testing.assert_allclose(half.gaussians.means[torch.from_numpy(rows)].double().numpy(), expected, atol=1e-5)
    assert np.all(half.element[rows] == ELEMENTS["fragment"])  # moved by then: the piece is synthetic


def test_few_samples_still_give_one_continuous_streak_of_the_right_length() -> None:
    """Capped samples: each sample's Gaussians are drawn out over the gap to the next, so
    4 samples of a 20 px streak give one streak of about 20 px, not 4 separate chips."""
    anim = animation({"debris": moving_splat()})
    _, passes, exposure = render_exposure(anim, 1, camera(), camera(), camera(), Shutter(180.0, max_samples=4))
    assert exposure.samples == 4
    matte = passes.mattes["debris"]
    assert streak_length(matte) == pytest.approx(PX_PER_FRAME / 2, abs=1.5)
    profile = matte.sum(axis=0)
    inside = profile[int(W / 2 + FX * -0.2 / Z - 7):int(W / 2 + FX * -0.2 / Z + 7)]
    assert inside.min() > 0.6 * inside.max()  # no gaps between the samples
    sharp = render_passes(anim.at(1), camera(), camera())
    assert matte.sum() == pytest.approx(sharp.mattes["debris"].sum(), rel=0.05)


def test_following_the_synthetic_gaussians_matches_the_sub_frame_animation() -> None:
    g = wall()[torch.arange(4)]
    quats = np.array([[[1.0, 0, 0, 0]], [[1.0, 0, 0, 0]], [[np.cos(0.5), 0, np.sin(0.5), 0]]])
    positions = np.array([[[0.0, 0, 10]], [[0.3, 0, 10]], [[1.0, -0.5, 9]]])
    cache = RigidCache(FPS, np.array([[0.0, 0, 10]]), positions, quats, np.ones((3, 1), bool), np.ones(1))
    frame = Similarity(2.0, quat_to_rotmat(np.array([np.cos(0.3), 0.2, 0.1, np.sin(0.3)])), np.array([1.0, 2, 3]))
    anim = ShotAnimation(wall(), frame, 3, FPS, removed=np.arange(4), particles={"dust": moving_splat()},
                         fragments=Fragments(g, np.zeros(4, np.int64), np.full(4, ELEMENTS["fragment"], np.int8),
                                             np.arange(4), cache))
    centre = anim.at(1)
    offsets = [-0.2, 0.1, 0.25]
    followed = anim.exposure(1, offsets, centre)
    assert followed is not None
    for o, sample in zip(offsets, followed):
        direct = anim.at_time(1 + o)
        rows = torch.from_numpy(np.asarray(direct.element) != ELEMENTS["scene"])
        np.testing.assert_allclose(sample.means.numpy(), direct.gaussians.means[rows].numpy(), atol=1e-5)
        np.testing.assert_allclose((sample.quats * direct.gaussians.quats[rows]).sum(1).abs().numpy(), 1.0, atol=1e-5)
