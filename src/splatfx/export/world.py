"""The shot in its world frame, as every exporter writes it.

The reconstruction and the cameras live in solve coordinates (COLMAP/OpenCV: y down);
``solve/scene.json`` links them to the world frame (z up, metres, ground at z = 0):
``world = s·R·x + t``. A shot without that file (a scene started from someone else's
capture) is turned z up by the fixed turn ``(x, y, z) -> (x, z, -y)`` at scale 1.
The effects' caches are already in the world frame.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from splatfx.core.camera import Camera
from splatfx.core.errors import InputError
from splatfx.core.gaussians import Gaussians
from splatfx.fx.animation import ShotAnimation, Similarity, load_animation, load_frame
from splatfx.render.cameras import plate_cameras
from splatfx.render.stage import output_size, shot_cameras
from splatfx.shot.config import FrameRange
from splatfx.shot.folder import Shot

#: Solve (x right, y down, z forward) to z-up when the shot has no solve/scene.json.
RDF_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def world_similarity(shot: Shot) -> tuple[Similarity, str]:
    """The solve-to-world similarity, and where it came from (in words)."""
    if shot.scene_json.is_file():
        return load_frame(shot), "solve/scene.json (z up, metres, ground at z = 0)"
    return Similarity(1.0, RDF_TO_Z_UP, np.zeros(3)), "solve coordinates turned z up (no solve/scene.json)"


def gaussians_to_world(gaussians: Gaussians, world: Similarity) -> Gaussians:
    """Gaussians moved into the world frame: means, orientations, scales and SH (rotated)."""
    return gaussians.transform(world.rotation, world.translation, world.scale)


def camera_to_world(camera: Camera, world: Similarity) -> Camera:
    """The same camera (image, lens) with its pose in the world frame."""
    rot = camera.R @ world.rotation.T
    centre = world.to_world(camera.center[None])[0]
    return camera.with_pose(rot, -rot @ centre)


@dataclass
class ShotCamera:
    """One camera of the shot: ``name`` (``plates`` or ``virtual``, as ``[render] camera``), one world-frame camera per
    exported frame, and whether the render used it."""

    name: str
    cameras: list[Camera]
    rendered: bool


def export_cameras(shot: Shot, frames: FrameRange, world: Similarity) -> list[ShotCamera]:
    """The cameras to export, the one the render used first: the plates' solved camera
    (when there is a solve) and the virtual camera (when ``[render] camera = "virtual"``),
    at the render's image size, in the world frame."""
    size = output_size(shot)
    offset = frames.start - shot.frames.start
    pick = slice(offset, offset + len(frames))
    rendered = shot.config.render.camera
    out = [ShotCamera(rendered, [camera_to_world(c, world) for c in shot_cameras(shot, size)[pick]], True)]
    if rendered == "virtual":
        with contextlib.suppress(InputError):  # a virtual shot may have no solve at all
            plates = plate_cameras(shot.solve_dir, shot.frames, None, size)[pick]
            out.append(ShotCamera("plates", [camera_to_world(c, world) for c in plates], False))
    return out


def load_shot_animation(shot: Shot) -> ShotAnimation:
    """The shot's animation (scene + effects' caches), as the render reads it."""
    return load_animation(shot)


def frame_index(shot: Shot, frame: int) -> int:
    """0-based index of ``frame`` in the shot (what :meth:`ShotAnimation.at` takes)."""
    return frame - shot.frames.start
