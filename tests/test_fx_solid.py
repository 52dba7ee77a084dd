"""Solid pieces (issue 17): the wall behind a reconstruction's soft surface, its material,
and the solidity measure (``splatfx.fx.solidity``) on a real reconstruction.

The reconstruction is ``tests/data/south_building_scene.npz`` (see test_building_box.py): the
18,938 Gaussians `splatfx demo` made of South Building, world frame, with their opacities and
the 32 plate cameras. It stores no shapes, so each Gaussian is drawn as a sphere of its
nearest-neighbour distance (the trained ones are larger still: a median 0.64 m).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from splatfx.core.camera import Camera
from splatfx.core.rotation import quat_to_rotmat, rotmats_to_quats
from splatfx.fx.fracture import (CORE_SHADE, fill_gaussian_params, grain, material_colours, rim_log_scales,
                                 solid_fill, voronoi_fracture, wall_shell)
from splatfx.fx.solidity import MEAN_SHARE, frame_solidity, solidity
from splatfx.raster import rasterize
from splatfx.render.passes import render_passes
from splatfx.core.gaussians import Gaussians
from splatfx.fx.animation import ELEMENTS, FrameGaussians

FIXTURE = Path(__file__).parent / "data" / "south_building_scene.npz"
FACADE_YAW = 25.0


@pytest.fixture(scope="module")
def facade():
    """The long facade's Gaussians (every opacity: haze included), its opacities and a plate camera."""
    with np.load(FIXTURE) as data:
        world = data["world_cm"].astype(np.float64) / 100.0
        opacity = data["opacity"].astype(np.float64) / 255.0
        k, R, t = data["camera_K"][16], data["camera_R"][16], data["camera_t"][16]
    camera = Camera(int(k[0]), int(k[1]), *map(float, k[2:6]), R.astype(np.float64), t.astype(np.float64))
    a = math.radians(-FACADE_YAW)
    local = world[:, :2] @ np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]).T
    keep = (np.abs(local[:, 1] - 19.0) < 2.0) & (local[:, 0] > -10.0) & (local[:, 0] < 47.0) & \
        (world[:, 2] > 2.5) & (world[:, 2] < 25.0)
    return world[keep], opacity[keep], camera


def _render_mattes(parts: dict[str, tuple], camera: Camera) -> dict[str, np.ndarray]:
    """Per-element coverage (as the render's matte.<element>) of Gaussians given per element as
    (means, quats, log_scales, opacities)."""
    means = torch.from_numpy(np.concatenate([p[0] for p in parts.values()])).float()
    quats = torch.from_numpy(np.concatenate([p[1] for p in parts.values()])).float()
    scales = torch.from_numpy(np.exp(np.concatenate([p[2] for p in parts.values()]))).float()
    opac = torch.from_numpy(np.concatenate([p[3] for p in parts.values()])).float()
    onehot = np.zeros((len(means), len(parts)), np.float32)
    start = 0
    for i, p in enumerate(parts.values()):
        onehot[start:start + len(p[0]), i] = 1
        start += len(p[0])
    image, _, _ = rasterize(means, quats, scales, opac, torch.from_numpy(onehot)[None],
                            torch.from_numpy(camera.viewmat()).float()[None],
                            torch.from_numpy(camera.K()).float()[None], camera.width, camera.height, backend="cpu")
    return {name: image[0, ..., i].numpy() for i, name in enumerate(parts)}


def _fall(points: np.ndarray, labels: np.ndarray, centroids: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Each piece turned by ``angle`` degrees about its own horizontal axis and dropped 2 m:
    the moved points and the rotations (F,3,3)."""
    rng = np.random.default_rng(5)
    axes = np.c_[rng.normal(size=(len(centroids), 2)), np.zeros(len(centroids))]
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    rots = np.stack([_axis_angle(a, math.radians(angle)) for a in axes])
    moved = np.einsum("nij,nj->ni", rots[labels], points - centroids[labels]) + centroids[labels] - [0, 0, 2.0]
    return moved, rots


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _fallen_pieces(facade) -> tuple[dict[str, tuple], dict[str, tuple], float]:
    """The facade in 12 wall-sized pieces, each turned 25° and dropped 2 m: (the soft shell
    alone, the solid pieces with trimmed haze, capped shapes, skin and core) as per-element
    (means, quats, log_scales, opacities), and the shell's thickness."""
    points, opacity, _ = facade
    fracture = voronoi_fracture(points, 12, seed=0)  # big, wall-sized pieces
    colours = np.zeros((len(points), 3))
    fill, core, shell = solid_fill(points, opacity, colours, fracture, max_count=40_000)
    assert len(fill.points) > 5000
    centroids = np.stack([points[fracture.labels == f].mean(0) for f in range(fracture.count)])
    moved, rots = _fall(points, fracture.labels, centroids, 25.0)
    nn = np.maximum(cKDTree(points).query(points, k=2)[0][:, 1], 0.02)
    ident = np.tile([1.0, 0, 0, 0], (len(points), 1))
    sphere = np.log(np.repeat(nn[:, None], 3, axis=1))
    surface = (moved, ident, sphere, np.clip(opacity, 1e-4, 0.9999))
    keep = shell.on_wall(points)  # the solid piece: trimmed haze, capped shapes, skin and core
    capped = np.minimum(sphere, rim_log_scales(points, fracture, shell.spacing)[:, None])  # as a moved piece
    params = fill_gaussian_params(fill)
    fill_moved = np.einsum("nij,nj->ni", rots[fill.labels], fill.points - centroids[fill.labels]) + \
        centroids[fill.labels] - [0, 0, 2.0]
    fill_quats = rotmats_to_quats(rots[fill.labels] @ quat_to_rotmat(params["quats"]))
    solid = {"fragment": (moved[keep], ident[keep], capped[keep], surface[3][keep]),
             "fill": (fill_moved, fill_quats, params["log_scales"], 1 / (1 + np.exp(-params["opacity_logits"])))}
    return {"fragment": surface}, solid, shell.thickness


def test_falling_pieces_of_a_real_reconstruction_are_solid(facade):
    camera = facade[2]
    soft, solid, thickness = _fallen_pieces(facade)
    assert 0.2 <= thickness <= 1.5
    before = _render_mattes(soft, camera)  # the soft shell alone: see-through
    share_before, pixels = frame_solidity(before)
    assert pixels > 2000 and share_before < 0.6
    after = _render_mattes(solid, camera)
    result = solidity([1, 2], [before, after])
    assert result.shares[1] >= MEAN_SHARE, result.summary()
    assert result.shares[1] > share_before + 0.3
    assert not result.passes  # the soft frame fails the whole shot


def test_the_render_draws_real_pieces_opaque_to_their_edge(facade):
    """Through the render's passes (hard edges: ``splatfx.render.passes.solid_edge``), the
    same pieces leave no see-through rim; the soft shell alone gets solid where it is dense."""
    camera = facade[2]
    soft, solid, _ = _fallen_pieces(facade)
    plain = frame_solidity(_render_mattes(solid, camera))[0]
    drawn = frame_solidity(render_passes(_frame_of(solid), camera).mattes)[0]
    assert drawn >= 0.995 and drawn > plain  # plainly drawn: 90 %
    assert frame_solidity(render_passes(_frame_of(soft), camera).mattes)[0] >= 0.99  # plainly drawn: 25 %


def _frame_of(parts: dict[str, tuple]) -> FrameGaussians:
    """Per-element (means, quats, log_scales, opacities) as one frame's Gaussians (grey)."""
    means = np.concatenate([p[0] for p in parts.values()])
    opacity = np.clip(np.concatenate([p[3] for p in parts.values()]), 1e-4, 0.9999)
    g = Gaussians.from_arrays({"means": means, "quats": np.concatenate([p[1] for p in parts.values()]),
                               "log_scales": np.concatenate([p[2] for p in parts.values()]),
                               "opacity_logits": np.log(opacity / (1 - opacity)),
                               "sh": np.zeros((len(means), 1, 3), np.float32)})
    element = np.concatenate([np.full(len(p[0]), ELEMENTS[name], np.int8) for name, p in parts.items()])
    return FrameGaussians(g, element, np.zeros((len(g), 3), np.float32), np.full(len(g), -1))


def test_material_is_textured_not_flat_and_core_is_darker(facade):
    points, opacity, _ = facade
    fracture = voronoi_fracture(points, 12, seed=0)
    colours = np.full((len(points), 3), 0.8)  # one flat colour: only the grain varies it
    query = points[:2000] - [0.0, 0.0, 0.1]
    labels = fracture.labels[:2000]
    skin = material_colours(points, opacity, colours, fracture.labels, query, labels, np.zeros(2000, bool))
    exposed = material_colours(points, opacity, colours, fracture.labels, query, labels, np.ones(2000, bool))
    rgb, core_rgb = 0.5 + 0.2820948 * skin, 0.5 + 0.2820948 * exposed
    assert 0.03 < rgb.mean(1).std() < 0.25  # broken up, not one mean colour
    assert core_rgb.mean() < rgb.mean() * (CORE_SHADE + 0.1) and core_rgb.mean(1).std() > rgb.mean(1).std()
    assert np.array_equal(skin, material_colours(points, opacity, colours, fracture.labels, query, labels,
                                                 np.zeros(2000, bool)))  # deterministic


def test_grain_has_a_physical_scale():
    x = np.linspace(0, 10, 2001)
    line = grain(np.c_[x, np.zeros_like(x), np.zeros_like(x)])
    assert np.abs(line).max() <= 1.6 and line.std() > 0.2
    step = np.abs(np.diff(line)).mean()  # 5 mm apart: smooth, not per-point noise
    far = np.abs(line[:-100] - line[100:]).mean()  # 0.5 m apart: mostly independent
    assert step < 0.05 < far
    assert np.array_equal(line, grain(np.c_[x, np.zeros_like(x), np.zeros_like(x)]))
    assert not np.array_equal(line, grain(np.c_[x, np.zeros_like(x), np.zeros_like(x)], seed=1))


def test_wall_thickness_set_or_estimated(facade):
    points, opacity, _ = facade
    estimated = wall_shell(points, opacity, 0.4)
    assert 0.2 <= estimated.thickness <= estimated.depth + 2 * 0.4 + 0.61
    normals_out = (estimated.normals * (estimated.points - points.mean(0))).sum(1) > 0
    assert normals_out.mean() > 0.97  # facing away from the structure
    assert wall_shell(points, opacity, 0.4, thickness=1.2).thickness == pytest.approx(1.2)
    inside = estimated.points - 0.5 * estimated.thickness * estimated.normals
    outside = estimated.points + 3 * estimated.thickness * estimated.normals
    assert estimated.contains(inside).mean() > 0.85 and estimated.contains(outside).mean() < 0.05


def test_measure_counts_opaque_pixels_inside_eroded_silhouettes():
    piece = np.zeros((40, 40), np.float32)
    piece[10:30, 10:30] = 1.0
    half = piece * 0.5
    assert frame_solidity({"fragment": piece}) == (1.0, 16 * 16)
    assert frame_solidity({"fragment": half})[0] == 0.0
    assert frame_solidity({"fragment": half, "dust": half})[0] == 1.0  # dust in front covers too
    assert np.isnan(frame_solidity({"fragment": np.zeros((8, 8), np.float32)})[0])
