"""One frame's passes: motion vectors that warp frame t onto t+1, holdout of the synthetic
mask by static Gaussians (things, not the faint shell), hard-edged solid pieces, mattes and
ids, depth, colour conversion and channel names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from splatfx.core.camera import Camera, look_at
from splatfx.core.color import srgb_to_linear
from splatfx.fx.animation import ELEMENTS, FrameGaussians
from splatfx.core.gaussians import Gaussians
from splatfx.render.passes import ALPHA_EMPTY, NO_ELEMENT, SOLID_EDGE, render_passes
from splatfx.core.sh import rgb_to_sh

W, H, F = 192, 144, 160.0


def gaussians(means: np.ndarray, colours: np.ndarray, size: float | np.ndarray, opacity_logit: float = 5.0) -> Gaussians:
    n = len(means)
    size = np.broadcast_to(np.asarray(size, np.float64).reshape(-1, 1), (n, 3))
    sh = np.zeros((n, 1, 3), np.float32)
    sh[:, 0] = rgb_to_sh(torch.as_tensor(colours, dtype=torch.float32)).numpy()
    return Gaussians.from_arrays({"means": means, "quats": np.tile([1.0, 0, 0, 0], (n, 1)),
                                  "log_scales": np.log(size), "opacity_logits": np.full(n, opacity_logit),
                                  "sh": sh})


def frame(g: Gaussians, element: np.ndarray | None = None, motion: np.ndarray | None = None) -> FrameGaussians:
    n = len(g)
    return FrameGaussians(g, np.zeros(n, np.int8) if element is None else element.astype(np.int8),
                          np.zeros((n, 3), np.float32) if motion is None else motion.astype(np.float32), np.arange(n))


def textured_wall(z: float, extent: float, step: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A grid of blobs at depth ``z`` (slightly tilted) with random colours: texture to track."""
    xs, ys = np.meshgrid(np.arange(-extent, extent, step), np.arange(-0.75 * extent, 0.75 * extent, step))
    means = np.column_stack([xs.ravel(), ys.ravel(), z + 0.15 * xs.ravel()])
    colours = np.random.default_rng(seed).uniform(0.05, 0.95, (len(means), 3))
    return means, colours


def camera(center, target) -> Camera:
    return look_at(np.asarray(center, float), np.asarray(target, float), [0.0, -1.0, 0.0], W, H, F)


def backward_warp(image: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Frame t+1 sampled where each pixel of frame t moves to: ``I_{t+1}(p + m(p))``."""
    import cv2

    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]].astype(np.float32)
    return cv2.remap(image, xx + motion[..., 0], yy + motion[..., 1], cv2.INTER_LINEAR)


def warp_errors(first, second) -> tuple[float, float]:
    """Mean colour error of frame t against warped frame t+1, and against t+1 unwarped, on
    pixels that are opaque in both and whose depth agrees after warping (not occluded)."""
    warped = backward_warp(second.rgba, first.motion)
    warped_depth = backward_warp(np.where(np.isfinite(second.depth), second.depth, 0), first.motion)
    ok = (first.rgba[..., 3] > 0.98) & (warped[..., 3] > 0.98) & (np.abs(warped_depth - first.depth) < 0.1)
    assert ok.mean() > 0.4
    err = np.abs(warped[..., :3] - first.rgba[..., :3]).mean(axis=2)[ok].mean()
    still = np.abs(second.rgba[..., :3] - first.rgba[..., :3]).mean(axis=2)[ok].mean()
    return float(err), float(still)


def test_motion_vectors_warp_a_moving_camera_render_onto_the_next_frame():
    back, back_c = textured_wall(9.0, 6.0, 0.16, 0)
    front, front_c = textured_wall(4.0, 0.8, 0.07, 1)  # a textured panel nearer the camera: parallax
    sizes = np.concatenate([np.full(len(back), 0.1), np.full(len(front), 0.045)])
    g = gaussians(np.concatenate([back, front]), np.concatenate([back_c, front_c]), sizes)
    cam_t, cam_next = camera([0, 0, 0], [0, 0, 8]), camera([0.12, -0.04, 0.05], [0.3, 0.0, 8])
    first, second = render_passes(frame(g), cam_t, cam_next), render_passes(frame(g), cam_next)
    assert 3.0 < np.abs(first.motion[..., 0]).mean() < 12.0  # a real move of several pixels
    err, still = warp_errors(first, second)
    assert err < 0.1 * still and err < 0.015  # measured: 0.006 against 0.14 unwarped


def test_motion_vectors_follow_each_gaussians_own_motion():
    wall, colours = textured_wall(6.0, 3.0, 0.1, 2)
    g = gaussians(wall, colours, 0.065)
    motion = np.zeros_like(wall)
    motion[wall[:, 0] > 0] = [0.06, 0.03, 0.0]  # the right half slides right and down (a fragment)
    element = np.where(wall[:, 0] > 0, ELEMENTS["fragment"], ELEMENTS["scene"])
    cam = camera([0, 0, 0], [0, 0, 6])
    first = render_passes(frame(g, element, motion), cam)
    moved = g.replace(means=g.means + torch.from_numpy(motion).float())
    second = render_passes(frame(moved, element), cam)
    right = first.mattes["fragment"] > 0.99
    assert np.median(first.motion[right], axis=0) == pytest.approx([0.06 * F / 6.0, 0.03 * F / 6.0], rel=0.05)
    assert np.abs(first.motion[first.mattes["scene"] > 0.999]).max() < 0.05  # the static half stays
    err, still = warp_errors(first, second)
    assert err < 0.2 * still  # measured: 0.004 against 0.037 unwarped (half the image moves)


def test_static_gaussians_hold_out_the_synthetic_mask_and_ids_name_the_dominant_element():
    cam = camera([0, 0, 0], [0, 0, 5])
    debris, debris_c = textured_wall(6.0, 2.0, 0.05, 3)  # synthetic, behind ...
    post = debris[np.abs(debris[:, 0]) < 0.3].copy()
    post[:, 2] = 3.0  # ... a static post in front of its middle
    g = gaussians(np.concatenate([debris, post]), np.concatenate([debris_c, np.full((len(post), 3), 0.5)]), 0.04)
    element = np.concatenate([np.full(len(debris), ELEMENTS["debris"]), np.full(len(post), ELEMENTS["scene"])])
    passes = render_passes(frame(g, element), cam)
    alpha = passes.rgba[..., 3]
    centre = (slice(H // 2 - 10, H // 2 + 10), slice(W // 2 - 8, W // 2 + 8))
    side = (slice(H // 2 - 10, H // 2 + 10), slice(W // 2 + 30, W // 2 + 45))
    assert passes.synthetic[centre].max() < 0.01 and alpha[centre].min() > 0.99  # held out by the post
    assert passes.synthetic[side].min() > 0.99
    assert (passes.element_id[centre] == ELEMENTS["scene"]).all()
    assert (passes.element_id[side] == ELEMENTS["debris"]).all()
    assert (passes.element_id[alpha < ALPHA_EMPTY] == NO_ELEMENT).all()
    total = sum(passes.mattes.values())
    assert np.allclose(total, alpha, atol=2e-3)
    assert np.allclose(passes.fx[side], passes.rgba[side][..., :3], atol=2e-3)  # all of it is the effect there
    assert np.abs(passes.fx[centre]).max() < 0.01


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def test_the_faint_shell_and_sky_floaters_in_front_do_not_hold_out_the_effect_but_stay_in_the_beauty():
    cam = camera([0, 0, 0], [0, 0, 5])
    wall, wall_c = textured_wall(6.0, 2.0, 0.05, 3)  # a falling piece (solid, opaque) ...
    veil = wall[np.abs(wall[:, 0]) < 0.6].copy()
    veil[:, 2] = 3.0  # ... behind a faint static veil over its middle (a floater, 0.3 opaque)
    g = gaussians(np.concatenate([wall, veil]), np.concatenate([wall_c, np.full((len(veil), 3), 0.9)]), 0.04)
    g = g.replace(opacity_logits=torch.cat([torch.full((len(wall),), 5.0), torch.full((len(veil),), _logit(0.3))]))
    element = np.concatenate([np.full(len(wall), ELEMENTS["fragment"]), np.full(len(veil), ELEMENTS["scene"])])
    centre = (slice(H // 2 - 10, H // 2 + 10), slice(W // 2 - 8, W // 2 + 8))
    veiled = render_passes(frame(g, element), cam)
    assert veiled.synthetic[centre].min() > 0.99  # the piece is not seen through the veil
    assert veiled.mattes["scene"][centre].max() < 0.01
    clear = render_passes(frame(g[torch.arange(len(wall))], element[:len(wall)]), cam)
    assert np.abs(veiled.fx[centre] - clear.fx[centre]).max() < 1e-5
    # the beauty still draws the veil: it is part of the plate's picture
    assert np.abs(veiled.rgba[centre][..., :3] - clear.rgba[centre][..., :3]).mean() > 0.05
    # an opaque static post there does hold it out, unless a plate sees the sky through it
    solid = g.replace(opacity_logits=torch.full((len(g),), 5.0))
    assert render_passes(frame(solid, element), cam).synthetic[centre].max() < 0.01
    floater = frame(solid, element)
    floater.floater = np.r_[np.zeros(len(wall), bool), np.ones(len(veil), bool)]
    assert render_passes(floater, cam).synthetic[centre].min() > 0.99


def test_a_piece_falling_back_past_the_backdrop_card_stays_in_front_of_it():
    cam = camera([0, 0, 0], [0, 0, 5])
    wall, wall_c = textured_wall(6.0, 2.0, 0.05, 3)  # a piece fallen back ...
    card = wall.copy()
    card[:, 2] = 4.0  # ... behind an opaque sheet: the card (no scene row) or a real wall
    g = gaussians(np.concatenate([wall, card]), np.concatenate([wall_c, np.full((len(card), 3), 0.4)]), 0.04)
    element = np.concatenate([np.full(len(wall), ELEMENTS["fragment"]), np.full(len(card), ELEMENTS["scene"])])
    motion = np.zeros((len(g), 3), np.float32)
    centre = (slice(H // 2 - 10, H // 2 + 10), slice(W // 2 - 8, W // 2 + 8))
    as_card = FrameGaussians(g, element.astype(np.int8), motion, np.r_[np.arange(len(wall)), np.full(len(card), -1)])
    assert render_passes(as_card, cam).synthetic[centre].min() > 0.99
    as_wall = FrameGaussians(g, element.astype(np.int8), motion, np.arange(len(g)))
    assert render_passes(as_wall, cam).synthetic[centre].max() < 0.01


def edge_width(matte: np.ndarray, row: int) -> int:
    """How many pixels of ``row`` are on the edge: between 0.05 and 0.95 covered."""
    line = matte[row]
    return int(((line > 0.05) & (line < 0.95)).sum())


def test_a_solid_piece_of_soft_gaussians_is_drawn_hard_edged_and_debris_is_not():
    cam = camera([0, 0, 0], [0, 0, 5])
    xs, ys = np.meshgrid(np.arange(-1.0, 1.0, 0.1), np.arange(-0.6, 0.6, 0.1))
    means = np.column_stack([xs.ravel(), ys.ravel(), np.full(xs.size, 5.0)])
    colours = np.full((len(means), 3), 0.6)
    g = gaussians(means, colours, 0.08, _logit(0.6))  # 2.6 px blobs, 0.6 opaque: a soft, see-through slab
    row = H // 2
    debris = render_passes(frame(g, np.full(len(g), ELEMENTS["debris"])), cam)
    piece = render_passes(frame(g, np.full(len(g), ELEMENTS["fragment"])), cam)
    assert edge_width(debris.synthetic, row) >= 8  # about 4 px of fuzz on each side, left as it is
    assert edge_width(piece.synthetic, row) <= 4  # at most 2 px a side: one antialiased pixel and its neighbour
    inside = piece.synthetic[H // 2 - 10:H // 2 + 10, W // 2 - 20:W // 2 + 20]
    assert inside.min() > 0.99
    # the edge sits where the soft coverage crosses SOLID_EDGE, and the colour keeps its hue and level
    soft, hard = debris.synthetic[row], piece.synthetic[row]
    assert abs((hard > 0.5).sum() - (soft > SOLID_EDGE).sum()) <= 2
    straight = piece.fx[row] / np.maximum(piece.synthetic[row], 1e-6)[:, None]
    solid = piece.synthetic[row] > 0.5
    assert np.allclose(straight[solid], srgb_to_linear(np.full(3, 0.6, np.float32)), atol=0.02)
    assert np.allclose(piece.rgba[..., 3], piece.synthetic, atol=1e-5)


def test_dust_in_front_of_a_hard_piece_keeps_its_share_and_the_piece_fills_the_rest():
    cam = camera([0, 0, 0], [0, 0, 5])
    xs, ys = np.meshgrid(np.arange(-1.0, 1.0, 0.1), np.arange(-0.6, 0.6, 0.1))
    slab = np.column_stack([xs.ravel(), ys.ravel(), np.full(xs.size, 5.0)])
    veil = slab.copy()
    veil[:, 2] = 4.0  # a sheet of dust, 0.3 opaque, in front of the soft slab
    g = gaussians(np.concatenate([slab, veil]), np.full((2 * len(slab), 3), 0.5), 0.08, _logit(0.6))
    logits = [torch.full((len(slab),), _logit(0.6)), torch.full((len(veil),), _logit(0.3))]
    g = g.replace(opacity_logits=torch.cat(logits))
    element = np.r_[np.full(len(slab), ELEMENTS["fragment"]), np.full(len(veil), ELEMENTS["dust"])]
    passes = render_passes(frame(g, element), cam)
    dust_alone = render_passes(frame(g[torch.arange(len(slab), 2 * len(slab))], element[len(slab):]), cam)
    inside = (slice(H // 2 - 10, H // 2 + 10), slice(W // 2 - 15, W // 2 + 15))
    assert passes.synthetic[inside].min() > 0.99
    np.testing.assert_allclose(passes.mattes["dust"][inside], dust_alone.mattes["dust"][inside], atol=0.02)


def test_a_hard_piece_stays_held_out_by_what_stands_in_front():
    cam = camera([0, 0, 0], [0, 0, 5])
    xs, ys = np.meshgrid(np.arange(-1.0, 1.0, 0.1), np.arange(-0.6, 0.6, 0.1))
    slab = np.column_stack([xs.ravel(), ys.ravel(), np.full(xs.size, 5.0)])
    post = slab[np.abs(slab[:, 0]) < 0.25].copy()
    post[:, 2] = 3.0
    g = gaussians(np.concatenate([slab, post]), np.full((len(slab) + len(post), 3), 0.5), 0.08, _logit(0.6))
    g = g.replace(opacity_logits=torch.cat([torch.full((len(slab),), _logit(0.6)), torch.full((len(post),), 5.0)]))
    element = np.concatenate([np.full(len(slab), ELEMENTS["fragment"]), np.full(len(post), ELEMENTS["scene"])])
    passes = render_passes(frame(g, element), cam)
    assert passes.synthetic[H // 2 - 5:H // 2 + 5, W // 2 - 3:W // 2 + 3].max() < 0.01
    assert passes.synthetic[H // 2 - 5:H // 2 + 5, W // 2 + 27:W // 2 + 31].min() > 0.99


def test_depth_is_the_front_surface_and_colour_is_scene_linear_premultiplied():
    xs, ys = np.meshgrid(np.linspace(-1, 1, 60), np.linspace(-0.5, 0.5, 30))
    wall = np.column_stack([xs.ravel(), ys.ravel(), np.full(xs.size, 4.0)])
    g = gaussians(wall, np.full((len(wall), 3), 0.5), 0.05, opacity_logit=8.0)
    passes = render_passes(frame(g), camera([0, 0, 0], [0, 0, 4]))
    alpha, depth = passes.rgba[..., 3], passes.depth
    solid = alpha > 0.99
    assert solid.mean() > 0.1
    assert np.allclose(depth[solid], 4.0, atol=0.02)  # camera z, not scaled by alpha
    assert np.isinf(depth[alpha < ALPHA_EMPTY]).all()
    # a display value of 0.5 is 0.214 in scene-linear; premultiplied by alpha
    assert np.allclose(passes.rgba[..., :3][solid], srgb_to_linear(np.float32(0.5)), atol=2e-3)
    edge = (alpha > 0.2) & (alpha < 0.8)
    assert np.allclose(passes.rgba[..., 0][edge] / alpha[edge], srgb_to_linear(np.float32(0.5)), atol=5e-3)


def test_channels_follow_the_chosen_passes():
    g = gaussians(np.array([[0.0, 0.0, 3.0]]), np.array([[0.2, 0.4, 0.6]]), 0.1)
    passes = render_passes(frame(g), camera([0, 0, 0], [0, 0, 3]))
    assert set(passes.channels(("rgba", "depth"))) == {"R", "G", "B", "A", "depth.Z"}
    every = passes.channels()
    assert {"motion.u", "motion.v", "mask.synthetic", "fx.R", "id", "matte.snow"} <= set(every)
    assert every["id"].dtype == np.uint32 and every["motion.u"].shape == (H, W)


def test_a_frame_rasterized_in_bands_matches_one_rasterizer_call(monkeypatch):
    """Large frames are rasterized in bands of rows (bounded memory); the bands must join
    without seams: every layer as one call renders it, through a distorted lens too."""
    from dataclasses import replace

    from splatfx.render import passes

    wall, colours = textured_wall(6.0, 3.0, 0.1, 4)
    g = gaussians(wall, colours, 0.08)
    element = np.where(wall[:, 0] > 0.5, ELEMENTS["fragment"], ELEMENTS["scene"])
    motion = np.where(element[:, None] == ELEMENTS["fragment"], [[0.0, 0.05, 0.0]], 0.0)
    lens = replace(camera([0, 0, 0], [0, 0, 6]), dist=np.array([-0.12, 0.03, 0.0, 0.0]))
    whole = render_passes(frame(g, element, motion), lens)
    monkeypatch.setattr(passes, "BAND_PIXELS", 40 * W)  # 32-row bands: 5 or more across the canvas
    banded = render_passes(frame(g, element, motion), lens)
    assert whole.rgba[..., 3].mean() > 0.5 and whole.mattes["fragment"].max() > 0.9
    for name in ("rgba", "motion", "synthetic", "fx"):
        np.testing.assert_allclose(getattr(banded, name), getattr(whole, name), atol=2e-5, err_msg=name)
    finite = np.isfinite(whole.depth)
    assert np.array_equal(finite, np.isfinite(banded.depth))
    np.testing.assert_allclose(banded.depth[finite], whole.depth[finite], rtol=1e-5)
    assert np.mean(banded.element_id != whole.element_id) < 1e-3
