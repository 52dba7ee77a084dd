"""The ``[fx.select]`` box in the viewer: a transform gizmo (move, rotate) around a wireframe
box, fields for centre, size (the gizmo cannot scale) and rotation, and the count of
Gaussians inside; every change is saved to ``shot.toml`` by the viewer."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import viser

from splatfx.fx.selection import BoxSelection, euler_xyz_degrees
from splatfx.core.rotation import quat_to_rotmat, rotmat_to_quat

Vec3 = tuple[float, float, float]


def euler_xyz_matrix(angles_deg: Vec3 | np.ndarray) -> np.ndarray:
    """``Rz·Ry·Rx`` of XYZ Euler angles in degrees (x applied first), as ``[fx.select] rotation``."""
    return euler_xyz_degrees(tuple(float(a) for a in angles_deg))


def euler_xyz_from_matrix(rotation: np.ndarray) -> tuple[float, float, float]:
    """XYZ Euler angles in degrees of a rotation matrix (inverse of :func:`euler_xyz_matrix`;
    at gimbal lock the x angle is taken as 0)."""
    r = np.asarray(rotation, dtype=np.float64)
    sy = -np.clip(r[2, 0], -1.0, 1.0)
    ay = np.arcsin(sy)
    if abs(sy) < 1.0 - 1e-9:
        ax = np.arctan2(r[2, 1], r[2, 2])
        az = np.arctan2(r[1, 0], r[0, 0])
    else:
        ax = 0.0
        az = np.arctan2(-r[0, 1], r[1, 1])
    return tuple(float(v) for v in np.degrees([ax, ay, az]))  # type: ignore[return-value]


class SelectionBox:
    """The ``[fx.select]`` box: a transform gizmo (move, rotate) with a wireframe box, GUI
    fields for centre, size and rotation, and how many Gaussians it holds.

    ``on_change(center, size, rotation)`` is called with every settled change (a finished
    drag, an edited field, :meth:`move`); ``points()`` gives the scene's Gaussian centres
    in the world frame (None without a scene) for the count.
    """

    def __init__(self, server: viser.ViserServer, center: Vec3, size: Vec3, rotation: Vec3,
                 on_change: Callable[[Vec3, Vec3, Vec3], None], points: Callable[[], np.ndarray | None]) -> None:
        self.center, self.size, self.rotation = _vec(center), _vec(size), _vec(rotation)
        self._on_change = on_change
        self._points = points
        self._syncing = False
        self.gizmo = server.scene.add_transform_controls(
            "/selection", scale=max(0.5, 0.6 * max(self.size)), depth_test=False,
            position=self.center, wxyz=rotmat_to_quat(euler_xyz_matrix(self.rotation)))
        self._box = server.scene.add_box("/selection/box", color=(255, 140, 0), dimensions=self.size, wireframe=True)
        self.center_input = server.gui.add_vector3("centre (m)", self.center, step=0.01)
        self.size_input = server.gui.add_vector3("size (m)", self.size, min=(0.01,) * 3, step=0.01)
        self.rotation_input = server.gui.add_vector3("rotation (° XYZ)", self.rotation, step=0.5)
        self.count_text = server.gui.add_markdown("")
        self.gizmo.on_update(lambda event: self._from_gizmo(settled=event.phase == "end"))
        for field in (self.center_input, self.size_input, self.rotation_input):
            field.on_update(lambda _: self._syncing or self.move(
                self.center_input.value, self.size_input.value, self.rotation_input.value))
        self.refresh_count()

    def move(self, center: Vec3 | None = None, size: Vec3 | None = None, rotation: Vec3 | None = None) -> None:
        """Set any of centre (m), size (m) and XYZ Euler rotation (degrees): the gizmo, the box
        and the fields follow, and the change is passed to ``on_change`` (saved)."""
        self._set(center, size, rotation, move_gizmo=True)
        self._on_change(self.center, self.size, self.rotation)

    def selected(self) -> int:
        """How many scene Gaussians (by centre) the box holds now."""
        points = self._points()
        if points is None:
            return 0
        return int(BoxSelection(self.center, self.size, euler_xyz_matrix(self.rotation)).contains(points).sum())

    def refresh_count(self) -> None:
        points = self._points()
        total = 0 if points is None else len(points)
        self.count_text.content = f"box holds **{self.selected():,}** of {total:,} Gaussians"

    def _set(self, center: Vec3 | None, size: Vec3 | None, rotation: Vec3 | None, move_gizmo: bool) -> None:
        if center is not None:
            self.center = tuple(round(float(v), 4) for v in center)
        if size is not None:
            self.size = tuple(max(0.001, round(float(v), 4)) for v in size)
        if rotation is not None:
            self.rotation = tuple(round(float(v), 3) for v in rotation)
        self._syncing = True
        try:
            if move_gizmo:  # not while the artist drags it: the echo would fight the drag
                self.gizmo.position = self.center
                self.gizmo.wxyz = rotmat_to_quat(euler_xyz_matrix(self.rotation))
            self._box.dimensions = self.size
            self.center_input.value = self.center
            self.size_input.value = self.size
            self.rotation_input.value = self.rotation
        finally:
            self._syncing = False
        self.refresh_count()

    def _from_gizmo(self, settled: bool) -> None:
        rotation = euler_xyz_from_matrix(quat_to_rotmat(np.asarray(self.gizmo.wxyz)))
        self._set(tuple(self.gizmo.position), None, rotation, move_gizmo=False)
        if settled:
            self._on_change(self.center, self.size, self.rotation)


def _vec(values) -> Vec3:
    return tuple(float(v) for v in values)  # type: ignore[return-value]
