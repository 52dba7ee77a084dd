"""``splatfx export --format spz|sog``: the static scene or a frame, upright for splat viewers,
read back with splatfx's readers (and checked against the documented quantisation)."""

from __future__ import annotations

import numpy as np
import pytest

from splatfx.core.errors import ConfigError
from splatfx.export import export_shot
from splatfx.export.splats import for_viewers
from splatfx.export.world import world_similarity
from splatfx.fx.animation import load_animation
from splatfx.io.formats import read_gaussians, sog, spz
from test_comp import make_shot

SPZ_POSITION = 0.5 / 4096 + 1e-6


@pytest.fixture(scope="module")
def shot(tmp_path_factory, data_dir):
    return make_shot(tmp_path_factory.mktemp("export_splats"), data_dir, frames=3)


def _expected(shot, frame: int | None):
    animation = load_animation(shot)
    g = animation.scene if frame is None else animation.at(frame - shot.frames.start).gaussians
    world, _ = world_similarity(shot)
    return for_viewers(g.transform(world.rotation, world.translation, world.scale))


def test_spz_static_scene_is_upright_world_metres(shot, tmp_path):
    out = tmp_path / "scene.spz"
    result = export_shot(shot, "spz", out)
    assert result.files == [out] and "static scene" in result.summary
    assert spz.read_header(out)["version"] == 3
    back, expected = read_gaussians(out), _expected(shot, None)
    assert len(back) == len(expected)
    np.testing.assert_allclose(back.means.numpy(), expected.means.numpy(), atol=SPZ_POSITION)
    # the ground (world z = 0) is the plane y = 0 of the PLY axes, the scene above it at y < 0 (y down)
    world = np.asarray(_expected(shot, None).means)
    assert np.median(world[:, 1]) < 0


def test_sog_one_frame_and_a_folder_of_frames(shot, tmp_path):
    out = tmp_path / "f.sog"
    export_shot(shot, "sog", out, frames="1003")
    back, expected = sog.read_arrays(out), _expected(shot, 1003)
    assert len(back) == len(expected)
    order = sog.morton_order(expected.means.numpy())
    err = np.abs(back.means - expected.means.numpy()[order])
    assert err.max() < 1e-3 * np.ptp(expected.means.numpy(), axis=0).max()
    result = export_shot(shot, "spz", tmp_path / "seq", frames="1001-1002")
    assert [p.name for p in result.files] == [f"{shot.name}.1001.spz", f"{shot.name}.1002.spz"]


def test_a_file_holds_one_frame(shot, tmp_path):
    with pytest.raises(ConfigError, match="--frames: x.spz holds one frame"):
        export_shot(shot, "spz", tmp_path / "x.spz", frames="1001-1002")
    with pytest.raises(ConfigError, match="writes a .sog file or a folder"):
        export_shot(shot, "sog", tmp_path / "x.ply")
