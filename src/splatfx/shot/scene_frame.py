"""The solve-to-world frame of a shot (``solve/scene.json``): which way is up, where the
ground is, and how big the solved scene is in metres.

splatfx's world frame is **z-up, in metres**, ground plane at z = 0; ``world = scale · R ·
solve + t``. :mod:`splatfx.recon.orient` fits it after the solve; fx, render, the viewer and
the demo read it from here, so they need no part of the reconstruction.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splatfx.core.atomic import write_text_atomic
from splatfx.core.camera import Camera
from splatfx.core.errors import InputError

SCENE_JSON_VERSION = 1


@dataclass(frozen=True)
class Plane:
    """The plane ``normal · x + offset = 0``; ``normal`` is unit length and points up."""

    normal: np.ndarray
    offset: float

    def height(self, points: np.ndarray) -> np.ndarray:
        """Signed distance of points (N,3) above the plane (along ``normal``)."""
        return np.asarray(points, dtype=np.float64).reshape(-1, 3) @ self.normal + self.offset

    def flipped(self) -> "Plane":
        return Plane(-self.normal, -self.offset)


@dataclass(frozen=True)
class SceneFrame:
    """The solve-to-world similarity ``world = scale · rotation · solve + translation``.

    World is z-up in metres with the ground at z = 0. ``scale`` is metres per solve
    unit and ``scale_source`` says where it came from, in words.
    """

    up: np.ndarray
    ground: Plane | None
    up_source: str
    ground_inlier_fraction: float
    camera_up_angle_deg: float | None
    scale: float
    scale_source: str
    rotation: np.ndarray
    translation: np.ndarray

    def world_from_solve(self) -> np.ndarray:
        """The 4×4 similarity matrix taking solve coordinates to world metres."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def points_to_world(self, points: np.ndarray) -> np.ndarray:
        """Solve-space points (N,3) in world metres."""
        return self.scale * np.asarray(points, dtype=np.float64).reshape(-1, 3) @ self.rotation.T + self.translation

    def camera_to_world(self, camera: Camera) -> Camera:
        """The same camera (same image) with its pose expressed in world metres."""
        rot = camera.R @ self.rotation.T
        center = self.points_to_world(camera.center[None])[0]
        return camera.with_pose(rot, -rot @ center)

    def to_json(self) -> dict:
        """A JSON-ready dict (the ``solve/scene.json`` layout)."""
        return {
            "version": SCENE_JSON_VERSION,
            "convention": "world = scale * rotation @ solve + translation; world is z-up, metres, "
                          "ground plane at z = 0, gravity along -z",
            "up": self.up.tolist(),
            "up_source": self.up_source,
            "camera_up_angle_deg": self.camera_up_angle_deg,
            "ground": None if self.ground is None else {
                "normal": self.ground.normal.tolist(),
                "offset": self.ground.offset,
                "inlier_fraction": self.ground_inlier_fraction,
            },
            "scale": self.scale,
            "scale_source": self.scale_source,
            "rotation": self.rotation.tolist(),
            "translation": self.translation.tolist(),
            "world_from_solve": self.world_from_solve().tolist(),
        }

    @classmethod
    def from_json(cls, data: dict, source: str = "scene.json") -> "SceneFrame":
        try:
            ground = data["ground"]
            return cls(
                up=np.asarray(data["up"], dtype=np.float64),
                ground=None if ground is None else Plane(np.asarray(ground["normal"], dtype=np.float64),
                                                         float(ground["offset"])),
                up_source=str(data["up_source"]),
                ground_inlier_fraction=0.0 if ground is None else float(ground["inlier_fraction"]),
                camera_up_angle_deg=data["camera_up_angle_deg"],
                scale=float(data["scale"]),
                scale_source=str(data["scale_source"]),
                rotation=np.asarray(data["rotation"], dtype=np.float64).reshape(3, 3),
                translation=np.asarray(data["translation"], dtype=np.float64).reshape(3),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(source, f"not a splatfx scene.json ({type(exc).__name__}: {exc})") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        write_text_atomic(path, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "SceneFrame":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(path, "scene.json does not exist (run `splatfx solve` first)") from None
        except json.JSONDecodeError as exc:
            raise InputError(path, f"invalid JSON: {exc}") from None
        return cls.from_json(data, str(path))
