"""Starting a shot from someone else's splats: ``splatfx init SHOT --scene capture``.

A capture from Polycam, Luma, Scaniverse, SuperSplat or another 3DGS trainer (``.ply``,
``.splat``, ``.spz``, ``.sog``) or an OpenUSD stage (``.usd``/``.usda``/``.usdc``/``.usdz``,
e.g. one ``splatfx export --format usd`` wrote) becomes a shot without plates
(``[shot] plates = ""``):

- ``scene/scene.ply``: the capture's Gaussians in the 3DGS PLY frame (x right, y down, z
  forward; a USD stage's world is turned into it), where every stage expects them;
- ``solve/scene.json``: its world frame (z up, metres, ground at z = 0), so that fx
  select, collapse and snow work. Up is an assumption stated in the file: −y for splat
  files (the 3DGS convention, the same turn :mod:`splatfx.export.world` applies to a scene
  without scene.json), the stage's ``upAxis`` for USD, or ``--up``. The ground is the plane
  the capture's opaque Gaussians rest on (:func:`splatfx.recon.orient.find_ground`); the
  units are metres unless ``--scale`` (or the stage's ``metersPerUnit``) says otherwise;
- ``virtual_camera.json``: the render camera. A USD stage's ``UsdGeom.Camera`` becomes a
  camera path with a keyframe per frame (pose and horizontal field of view); otherwise an
  orbit arc around the scene's centre, framed to hold it, in front of it.

The import is recorded in the manifest as the stage ``import`` (the capture's hash, the
assumptions and what was written), and shot.toml is written last.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splatfx.core.atomic import write_text_atomic
from splatfx.core.camera import Camera
from splatfx.core.errors import ConfigError, InputError
from splatfx.core.gaussians import Gaussians
from splatfx.io.formats import FORMATS, read_gaussians, write_gaussians
from splatfx.recon.orient import find_ground
from splatfx.shot.config import (FrameRange, RenderSection, ShotConfig, ShotSection, config_from_dict,
                                 config_to_dict, save_config)
from splatfx.shot.folder import SHOT_TOML, Shot
from splatfx.shot.runner import run_stage
from splatfx.shot.scene_frame import Plane, SceneFrame

PathLike = str | os.PathLike[str]

USD_SUFFIXES = (".usd", ".usda", ".usdc", ".usdz")
#: Every file ``--scene`` takes.
SCENE_SUFFIXES = (*FORMATS, *USD_SUFFIXES)
#: The shot's image size and length when the capture carries no camera that says otherwise.
DEFAULT_SIZE = (1920, 1080)
DEFAULT_FRAMES = 48
DEFAULT_START = 1001
VIRTUAL_CAMERA = "virtual_camera.json"
#: ``--up``: the capture's up axis in its own coordinates.
UP_AXES = {"+x": (1.0, 0.0, 0.0), "-x": (-1.0, 0.0, 0.0), "+y": (0.0, 1.0, 0.0), "-y": (0.0, -1.0, 0.0),
           "+z": (0.0, 0.0, 1.0), "-z": (0.0, 0.0, -1.0)}
#: A USD stage's world (y up or z up) in the 3DGS PLY frame (x right, y down, z forward).
USD_TO_SOLVE = {"Y": np.diag([1.0, -1.0, -1.0]),
                "Z": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])}
#: Gaussians more opaque than this are the capture's surfaces (what the ground and framing use).
OPAQUE = 0.5
#: The default camera move: an arc of this many degrees, centred on the side the capture
#: was most likely taken from (world −y: the 3DGS frame looks along +z), this high above the
#: scene's centre, with this horizontal field of view.
ORBIT_DEGREES = 90.0
ORBIT_ELEVATION_DEG = 20.0
ORBIT_FOV_X_DEG = 50.0


@dataclass
class CaptureCameras:
    """A camera read from the capture (a USD ``UsdGeom.Camera``): its prim, and one camera
    per shot frame in solve coordinates."""

    prim: str
    frames: FrameRange
    cameras: list[Camera]
    others: list[str]


@dataclass
class Capture:
    """A capture read for a new shot: its Gaussians in solve coordinates (the 3DGS PLY
    frame), the assumed up (solve coordinates) and metres per unit, each with where it came
    from, and what a USD stage adds (time range, rate, camera)."""

    source: Path
    kind: str
    gaussians: Gaussians
    up: np.ndarray
    up_source: str
    scale: float
    scale_source: str
    trusted_ground: bool = False  # a splatfx stage: its world already has the ground at z = 0
    frames: FrameRange | None = None
    fps: float | None = None
    size: tuple[int, int] | None = None
    camera_prim: str | None = None
    camera_others: tuple[str, ...] = ()
    gaussians_to_solve: np.ndarray | None = None  # a USD stage's world -> solve coordinates
    _stage: object = None

    def cameras(self, frames: FrameRange, size: tuple[int, int]) -> CaptureCameras | None:
        """The capture's camera at each of ``frames`` (solve coordinates), None without one."""
        if self.camera_prim is None:
            return None
        cams = [usd_camera(self._stage, self.camera_prim, f, size, self.source) for f in frames]
        to_solve = np.eye(3) if self.gaussians_to_solve is None else self.gaussians_to_solve
        moved = [c.with_pose(c.R @ to_solve.T, -(c.R @ to_solve.T) @ (to_solve @ c.center)) for c in cams]
        return CaptureCameras(self.camera_prim, frames, moved, list(self.camera_others))


# --- reading ---------------------------------------------------------------------------------------
def read_capture(path: PathLike, *, up: str | None = None, scale: float | None = None,
                 camera: str | None = None) -> Capture:
    """The capture at ``path`` (a splat file or a USD stage); InputError naming it when it is
    missing, of an unknown kind, unreadable or empty. ``up`` (``+x`` … ``-z``): the capture's
    up axis in its own coordinates; ``scale``: metres per unit; ``camera``: a USD camera prim."""
    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    if suffix not in SCENE_SUFFIXES:
        raise InputError(p, f"unknown capture format {suffix or '(no suffix)'!r}; --scene takes "
                            f"{', '.join(SCENE_SUFFIXES)}")
    if p.is_dir():
        raise InputError(p, "is a folder; --scene takes one capture file")
    if not p.is_file():
        raise InputError(p, "does not exist")
    if up is not None and up not in UP_AXES:
        raise ConfigError("--up", f"must be one of {', '.join(UP_AXES)}, got {up!r}")
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise ConfigError("--scale", f"must be a positive number of metres per unit, got {scale}")
    if suffix in USD_SUFFIXES:
        capture = _read_usd(p, up, scale, camera)
    else:
        if camera is not None:
            raise ConfigError("--usd-camera", f"{p.name} is a splat file, which holds no cameras")
        gaussians = read_gaussians(p)
        axis = up or "-y"
        said = "given (--up)" if up else "assumed: the 3DGS convention (y down)"
        capture = Capture(p, FORMATS[suffix], gaussians, np.array(UP_AXES[axis]), f"{axis} in the capture, {said}",
                          scale or 1.0, "given (--scale)" if scale else "assumed: one capture unit is one metre",
                          gaussians_to_solve=np.eye(3))
    if len(capture.gaussians) == 0:
        raise InputError(p, "holds no Gaussians")
    return capture


def _pxr():
    from splatfx.export.usd import require_pxr

    require_pxr("--scene")
    from pxr import Usd, UsdGeom

    return Usd, UsdGeom


def _read_usd(path: Path, up: str | None, scale: float | None, camera: str | None) -> Capture:
    """Every visible splat field of the stage at its start time, turned from the stage's
    world (its ``upAxis``) into the 3DGS PLY frame; its time range, rate and camera."""
    Usd, UsdGeom = _pxr()
    from splatfx.export.usd_read import open_stage, read_splats

    stage = open_stage(path)
    axis = str(UsdGeom.GetStageUpAxis(stage))
    if axis not in USD_TO_SOLVE:
        raise InputError(path, f"has upAxis {axis!r}; a USD stage is y up or z up")
    to_solve = USD_TO_SOLVE[axis]
    start = stage.GetStartTimeCode() if stage.HasAuthoredTimeCodeRange() else Usd.TimeCode.EarliestTime().GetValue()
    try:
        world = read_splats(stage, start)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed schema values surface as pxr or numpy errors
        raise InputError(path, f"holds splats that cannot be read ({type(exc).__name__}: {exc})") from None
    if len(world) == 0:
        raise InputError(path, "holds no visible UsdVol.ParticleField3DGaussianSplat prim with Gaussians")
    gaussians = world.transform(to_solve)
    data = dict(stage.GetRootLayer().customLayerData or {})
    ours = str(data.get("splatfx:generator", "")).startswith("splatfx")
    frames = None
    if stage.HasAuthoredTimeCodeRange():
        first, last = stage.GetStartTimeCode(), stage.GetEndTimeCode()
        if float(first).is_integer() and float(last).is_integer() and 0 <= first <= last:
            frames = FrameRange(int(first), int(last))
    cameras = [str(p.GetPath()) for p in stage.Traverse() if p.IsA(UsdGeom.Camera)]
    chosen = _choose_camera(path, stage, cameras, camera, data)
    size = None
    if chosen is not None:
        attr = stage.GetPrimAtPath(chosen).GetAttribute("splatfx:imageSize")
        if attr and attr.Get() is not None:
            size = tuple(int(v) for v in attr.Get())
    up_axis = up or "-y"
    up_said = (f"given (--up {up}) in the 3DGS frame the stage was turned into" if up else
               f"the stage's upAxis {axis}")
    units = float(UsdGeom.GetStageMetersPerUnit(stage))
    return Capture(path, "usd", gaussians, np.array(UP_AXES[up_axis]), up_said,
                   scale or units, "given (--scale)" if scale else f"the stage's metersPerUnit ({units:g})",
                   trusted_ground=ours and up is None and scale is None, frames=frames,
                   fps=float(stage.GetTimeCodesPerSecond()), size=size, camera_prim=chosen,
                   camera_others=tuple(c for c in cameras if c != chosen), _stage=stage,
                   gaussians_to_solve=to_solve)


def _choose_camera(path: Path, stage, cameras: list[str], asked: str | None, data: dict) -> str | None:
    """The camera prim to import: ``asked``, else the stage's render camera (splatfx's
    ``splatfx:renderCamera``), else the first camera; None when the stage has none."""
    if asked is not None:
        if asked not in cameras:
            listed = ", ".join(cameras) if cameras else "none"
            raise InputError(path, f"has no camera {asked!r} (cameras: {listed})")
        return asked
    render = str(data.get("splatfx:renderCamera", ""))
    if render in cameras:
        return render
    return cameras[0] if cameras else None


def usd_camera(stage, prim_path: str, frame: int, size: tuple[int, int], source: Path) -> Camera:
    """The ``UsdGeom.Camera`` at ``prim_path`` at ``frame``, in the stage's world, at image
    ``size`` (its width; the height follows from the apertures unless the prim states its
    ``splatfx:imageSize``). Focal length and apertures are in the same unit, so fx is
    ``focalLength · width / horizontalAperture``; the aperture offsets move the principal point."""
    Usd, UsdGeom = _pxr()
    from splatfx.export.usd_read import read_camera

    prim = stage.GetPrimAtPath(prim_path)
    attr = prim.GetAttribute("splatfx:imageSize")
    if attr and attr.Get() is not None:
        camera = read_camera(stage, prim_path, frame)
        return camera if (camera.width, camera.height) == tuple(size) else camera.resized(*size)
    gf = UsdGeom.Camera(prim).GetCamera(Usd.TimeCode(frame))
    h_ap, v_ap, focal = gf.horizontalAperture, gf.verticalAperture, gf.focalLength
    if not (h_ap > 0 and v_ap > 0 and focal > 0):
        raise InputError(source, f"camera {prim_path} has no usable lens at frame {frame} (focal length "
                                 f"{focal:g}, apertures {h_ap:g} x {v_ap:g})")
    width, height = size
    fx, fy = focal * width / h_ap, focal * height / v_ap
    cx = width / 2.0 + gf.horizontalApertureOffset * width / h_ap
    cy = height / 2.0 - gf.verticalApertureOffset * height / v_ap
    c2w = np.array(UsdGeom.XformCache(Usd.TimeCode(frame)).GetLocalToWorldTransform(prim)).T
    rot = c2w[:3, :3]
    norms = np.linalg.norm(rot, axis=0)
    return Camera.from_opengl_c2w(np.concatenate([rot / norms, c2w[:3, 3:4]], axis=1), width, height, fx, fy, cx, cy)


def camera_size(capture: Capture, asked: tuple[int, int] | None) -> tuple[int, int]:
    """The shot's image size: ``asked``, else the capture camera's own, else a foreign USD
    camera's aspect at the default width, else :data:`DEFAULT_SIZE`."""
    if asked is not None:
        return asked
    if capture.size is not None:
        return capture.size
    if capture.camera_prim is not None:
        Usd, UsdGeom = _pxr()
        gf = UsdGeom.Camera(capture._stage.GetPrimAtPath(capture.camera_prim)).GetCamera(Usd.TimeCode.Default())
        if gf.horizontalAperture > 0 and gf.verticalAperture > 0:
            width = DEFAULT_SIZE[0]
            return width, max(1, round(width * gf.verticalAperture / gf.horizontalAperture))
    return DEFAULT_SIZE


# --- the world frame ---------------------------------------------------------------------------------
def capture_frame(capture: Capture, seed: int = 0) -> SceneFrame:
    """The capture's solve-to-world frame: ``capture.up`` made +z (tilted onto the ground
    plane when its opaque Gaussians rest on one), metres from ``capture.scale``, the origin
    on the ground below their centre. A stage splatfx exported keeps its own world exactly."""
    points = _surface_points(capture.gaussians)
    up = capture.up / np.linalg.norm(capture.up)
    if capture.trusted_ground:  # splatfx's own world: z up, ground at z = 0, origin kept
        rotation = _rotation(up)
        return SceneFrame(up=up, ground=Plane(up, 0.0), up_source=capture.up_source + " (splatfx world)",
                          ground_inlier_fraction=0.0, camera_up_angle_deg=None, scale=capture.scale,
                          scale_source=capture.scale_source, rotation=rotation, translation=np.zeros(3))
    found = find_ground(points, up, None, seed=seed) if len(points) >= 10 else None
    if found is not None and found[1].mean() >= 0.02 and found[1].sum() >= 10:
        plane, fraction = found[0], float(found[1].mean())
        source = f"the ground plane under {100 * fraction:.0f} % of the opaque Gaussians"
    else:  # no plane: up as assumed, the ground under nearly all of the capture
        plane = Plane(up, -float(np.percentile(points @ up, 2.0)))
        fraction, source = 0.0, "no ground plane found, ground under 98 % of the opaque Gaussians"
    rotation = _rotation(plane.normal)
    centre = np.median(points, axis=0)
    origin = centre - plane.height(centre[None])[0] * plane.normal
    angle = float(np.degrees(np.arccos(np.clip(plane.normal @ up, -1.0, 1.0))))
    return SceneFrame(up=plane.normal, ground=plane, up_source=f"{source}; {capture.up_source}",
                      ground_inlier_fraction=fraction, camera_up_angle_deg=angle, scale=capture.scale,
                      scale_source=capture.scale_source, rotation=rotation,
                      translation=-capture.scale * rotation @ origin)


def _surface_points(gaussians: Gaussians) -> np.ndarray:
    """The centres of the opaque Gaussians (all of them when none is opaque)."""
    means = gaussians.means.double().numpy()
    opaque = gaussians.opacities.numpy() > OPAQUE
    return means[opaque] if opaque.sum() >= 10 else means


def _rotation(up: np.ndarray) -> np.ndarray:
    """Rows x, y, z of the world in solve coordinates: z = ``up``, y the capture's forward
    (+z, else +y, else +x of the capture) made level; for up = −y this is the fixed turn
    ``(x, y, z) -> (x, z, −y)`` of :mod:`splatfx.export.world`."""
    z = up / np.linalg.norm(up)
    for forward in np.eye(3)[[2, 1, 0]]:
        if abs(forward @ z) < 0.9:
            break
    y = forward - (forward @ z) * z
    y /= np.linalg.norm(y)
    return np.stack([np.cross(y, z), y, z])


# --- the camera ----------------------------------------------------------------------------------
def orbit_camera(capture: Capture, frame: SceneFrame) -> dict:
    """The default camera move (a virtual camera file, world frame): an arc of
    :data:`ORBIT_DEGREES` around the scene's centre, in front of it, far enough for the
    central 80 % of its opaque Gaussians to fill the frame's width, looking down at
    :data:`ORBIT_ELEVATION_DEG`."""
    world = frame.points_to_world(_surface_points(capture.gaussians))
    centre = np.median(world, axis=0)
    reach = float(np.percentile(np.linalg.norm(world[:, :2] - centre[:2], axis=1), 80))
    distance = max(reach, 1e-3) / math.tan(math.radians(ORBIT_FOV_X_DEG) / 2) + reach
    elevation = math.radians(ORBIT_ELEVATION_DEG)
    return {"space": "world", "preset": "orbit", "center": [round(float(v), 4) for v in centre],
            "radius": round(distance * math.cos(elevation), 4), "height": round(distance * math.sin(elevation), 4),
            "start_deg": -90.0 - ORBIT_DEGREES / 2, "degrees": ORBIT_DEGREES, "fov_x_deg": ORBIT_FOV_X_DEG}


def camera_path(cameras: CaptureCameras, frame: SceneFrame) -> dict:
    """The capture's camera as a virtual camera file (world frame): a keyframe per frame with
    its OpenGL camera-to-world matrix and horizontal field of view (which, unlike a focal
    length in pixels, holds at any render size)."""
    keys = []
    for number, camera in zip(cameras.frames, cameras.cameras):
        world = frame.camera_to_world(camera)
        fov = math.degrees(2 * math.atan(camera.width / (2 * camera.fx)))
        keys.append({"frame": number, "transform_matrix": np.round(world.to_opengl_c2w(), 9).tolist(),
                     "fov_x_deg": round(fov, 9)})
    return {"space": "world", "interpolation": "catmull-rom", "source": cameras.prim, "keyframes": keys}


# --- the shot ----------------------------------------------------------------------------------------
def create_shot_from_scene(root: PathLike, scene: PathLike, *, fps: float | None = None,
                           frames: FrameRange | None = None, size: tuple[int, int] | None = None,
                           up: str | None = None, scale: float | None = None, camera: str | None = None,
                           name: str | None = None, force: bool = False) -> Shot:
    """Make the shot folder ``root`` without plates from the capture ``scene`` (see the
    module doc). ``frames``/``fps``/``size`` default to a USD stage's time range, rate and
    camera image size, else 1001-1048 at 24 fps and 1920x1080. The capture is read and
    checked before anything is written; shot.toml is written last."""
    root = Path(root)
    toml = root / SHOT_TOML
    if toml.exists() and not force:
        raise InputError(toml, "already exists; pass --force to overwrite it")
    capture = read_capture(scene, up=up, scale=scale, camera=camera)
    frames = frames or capture.frames or FrameRange(DEFAULT_START, DEFAULT_START + DEFAULT_FRAMES - 1)
    size = camera_size(capture, size)
    world = capture_frame(capture)
    cameras = capture.cameras(frames, size)
    move = camera_path(cameras, world) if cameras is not None else orbit_camera(capture, world)
    section = ShotSection(name=name or Path(os.path.abspath(root)).name, fps=fps or capture.fps or 24.0,
                          frames=frames, plates="", size=size)
    config = config_from_dict(config_to_dict(ShotConfig(shot=section, render=RenderSection(
        camera="virtual", virtual_camera=VIRTUAL_CAMERA))), toml)  # exactly what a reload gives
    root.mkdir(parents=True, exist_ok=True)
    shot = Shot(root, config)
    scene_ply, camera_file = shot.scene_ply, root / VIRTUAL_CAMERA
    settings = {"scene": os.path.abspath(capture.source), "up": up, "scale": scale, "camera": camera,
                "frames": str(frames), "size": list(size)}

    def work() -> dict:
        shot.scene_dir.mkdir(exist_ok=True)
        shot.solve_dir.mkdir(exist_ok=True)
        write_gaussians(capture.gaussians, scene_ply)
        world.save(shot.scene_json)
        write_text_atomic(camera_file, json.dumps(move, indent=1) + "\n")
        return import_figures(capture, world, cameras)

    run_stage(shot, "import", settings, {"capture": capture.source}, [scene_ply, shot.scene_json, camera_file],
              work, force=True)
    save_config(config, toml)
    return Shot.open(root)


def import_figures(capture: Capture, world: SceneFrame, cameras: CaptureCameras | None) -> dict:
    """What the import found, for the manifest and the init summary."""
    points = world.points_to_world(capture.gaussians.means.double().numpy())
    lo, hi = np.percentile(points, 1, axis=0), np.percentile(points, 99, axis=0)
    return {"format": capture.kind, "gaussians": len(capture.gaussians), "sh_degree": capture.gaussians.sh_degree,
            "up": world.up_source, "scale": world.scale_source,
            "ground_inlier_fraction": round(world.ground_inlier_fraction, 4),
            "bounds_world": [[round(float(v), 3) for v in lo], [round(float(v), 3) for v in hi]],
            "camera": cameras.prim if cameras is not None else "orbit (no camera in the capture)",
            "other_cameras": cameras.others if cameras is not None else []}
