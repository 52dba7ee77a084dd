"""Make ``tests/data/south_building_scene.npz`` from a `splatfx demo` shot (default settings):
the trained scene's Gaussian centres in the world frame (centimetres, int16), their opacities
(uint8) and the plate cameras in the world frame; used by ``tests/test_building_box.py``.

    python scripts/building_scene_fixture.py SHOT tests/data/south_building_scene.npz
"""

from __future__ import annotations

import sys

import numpy as np

from splatfx.io.formats import read_gaussians
from splatfx.render.cameras import plate_cameras
from splatfx.shot.folder import Shot
from splatfx.shot.scene_frame import SceneFrame


def main(shot_dir: str, out: str) -> None:
    shot = Shot.open(shot_dir)
    frame = SceneFrame.load(shot.scene_json)
    scene = read_gaussians(shot.scene_dir / "scene.ply")
    world = frame.points_to_world(scene.means.double().numpy())
    keep = np.all(np.abs(world) < 300, axis=1)  # int16 centimetres
    cameras = [frame.camera_to_world(c) for c in plate_cameras(shot.solve_dir, shot.frames)]
    np.savez_compressed(
        out, world_cm=np.round(world[keep] * 100).astype(np.int16),
        opacity=np.round(scene.opacities.double().numpy()[keep] * 255).astype(np.uint8),
        camera_R=np.stack([c.R for c in cameras]).astype(np.float32),
        camera_t=np.stack([c.t for c in cameras]).astype(np.float32),
        camera_K=np.array([[c.width, c.height, c.fx, c.fy, c.cx, c.cy] for c in cameras], np.float32))
    print(f"{out}: {int(keep.sum())} of {len(keep)} Gaussians, {len(cameras)} cameras")


if __name__ == "__main__":
    main(*sys.argv[1:3])
