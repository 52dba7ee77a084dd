"""The shot as one OpenUSD stage: splats (``UsdVol.ParticleField3DGaussianSplat``), the
fragments as rigid, time-sampled transforms, the particles, and the cameras.

Layout (world frame, z up, metres; time codes are the shot's frame numbers)::

    /World                          Xform, default prim
      scene                         ParticleField3DGaussianSplat: the static reconstruction
                                    (less the collapsing structure)
      fragments/piece_0000          Xform, transform and visibility time-sampled per frame
        splats                      the piece's Gaussians, written once, in the piece's own
                                    space (origin at its centroid)
        fill                        its solid fill (the fracture faces), visible once it moves
        rest                        (solid pieces) its reconstructed splats while it stands; once it
                                    moves ``splats`` holds them without the haze, sizes capped
      particles/debris|dust|snow    ParticleField3DGaussianSplat, every attribute time-sampled
                                    (the living particles of each frame) + ``splatfx:particleIds``
      cameras/plates|virtual        UsdGeom.Camera, time-sampled, lens in ``splatfx:lens:*``

Splat attributes follow the schema: linear ``scales`` and ``opacities`` (not the PLY's
log and logit), unit ``orientations``, and ``radiance:sphericalHarmonicsCoefficients`` as
``(degree+1)²`` RGB coefficients per particle, particle-major, in the 3DGS convention
(radiance = 0.5 + Σ c·Y, the real SH basis of the 3DGS reference code, so a coefficient of
0 is grey 0.5). Fragments' coefficients are in the piece's space: a renderer rotates the
view direction into it with the piece's transform, as it does for the orientations.

Colour: the reconstruction was fitted to sRGB-encoded plates, so its radiance is
display-referred. It is declared so (``colorSpace:name = srgb_rec709_scene`` on the splat
prims); the stage's working space is linear Rec.709 (on ``/World``), as in the render
EXRs, which decode to linear after compositing the splats. Cameras: focal length and
apertures in millimetres for the declared sensor width, principal point as aperture
offsets, and the OpenCV lens distortion in ``splatfx:lens:*`` so a compositor can
redistort (``docs/export.md``).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from splatfx import __version__
from splatfx.core.atomic import atomic_path
from splatfx.core.camera import Camera
from splatfx.core.errors import ConfigError, OutputError
from splatfx.core.gaussians import Gaussians
from splatfx.core.rotation import quat_to_rotmat
from splatfx.export import ExportRequest, ExportResult
from splatfx.export.world import (ShotCamera, export_cameras, frame_index, gaussians_to_world, load_shot_animation,
                                  world_similarity)
from splatfx.fx.animation import ELEMENTS, PARTICLE_MIN_OPACITY, ShotAnimation, Similarity
from splatfx.fx.particles import ParticleCache
from splatfx.shot.folder import Shot
from splatfx.shot.manifest import Manifest

USD_SUFFIXES = (".usdc", ".usda", ".usd", ".usdz")
#: Colour spaces (Gf.ColorSpaceNames): the stage's working space and the splats' radiance.
WORKING_SPACE = "lin_rec709_scene"
RADIANCE_SPACE = "srgb_rec709_scene"
#: The rasterizer's near plane in solve units (splatfx.render.passes.NEAR).
NEAR_SOLVE = 0.01
#: Opacity below which a particle is not drawn (as ShotAnimation does).
LENS_PREFIX = "splatfx:lens:"


def require_pxr(setting: str) -> None:
    """ConfigError naming ``setting`` unless OpenUSD's bindings with the 3DGS schema are installed."""
    try:
        from pxr import UsdVol
    except ImportError:
        raise ConfigError(setting, "needs OpenUSD's Python bindings: pip install 'splatfx[usd]' "
                                   "(usd-core >= 26.3)") from None
    if not hasattr(UsdVol, "ParticleField3DGaussianSplat"):
        raise ConfigError(setting, "the installed usd-core has no UsdVol.ParticleField3DGaussianSplat "
                                   "(needs usd-core >= 26.3)")


def _pxr():
    require_pxr("--format usd")
    from pxr import Gf, Sdf, Usd, UsdGeom, UsdUtils, UsdVol, Vt

    return Gf, Sdf, Usd, UsdGeom, UsdUtils, UsdVol, Vt


def usd_path(out: Path, shot: Shot) -> Path:
    """The stage's file: ``out`` when it has a USD suffix, else ``out/<shot>.usdc``."""
    if out.suffix.lower() in USD_SUFFIXES:
        return out
    if out.suffix and not out.is_dir():
        raise ConfigError("--out", f"{out}: not a USD file name (expected one of {', '.join(USD_SUFFIXES)}, "
                                   "or a folder)")
    return out / f"{shot.name}.usdc"


def export_usd(request: ExportRequest) -> ExportResult:
    """Write the shot's stage (``--format usd``)."""
    started = time.perf_counter()
    path = usd_path(request.out, request.shot)
    stage, counts = build_stage(request)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".usdz":
            _write_usdz(stage, tmp)
        elif not stage.GetRootLayer().Export(str(tmp)):
            raise OutputError(path, "cannot write the USD stage")
    seconds = time.perf_counter() - started
    figures = {**counts, "seconds": round(seconds, 3), "bytes": path.stat().st_size}
    return ExportResult([path], f"wrote {path} ({figures['bytes'] / 1e6:.1f} MB, {counts['frames']} frames, "
                                f"{counts['pieces']} pieces, {counts['particle_fields']} particle fields, "
                                f"{counts['cameras']} cameras) in {seconds:.1f} s", figures)


def _write_usdz(stage, target: Path) -> None:
    _, Sdf, _, _, UsdUtils, _, _ = _pxr()
    with tempfile.TemporaryDirectory(prefix="splatfx-usdz-") as folder:
        inner = Path(folder) / f"{target.stem.lstrip('.').split('.')[0] or 'shot'}.usdc"
        stage.GetRootLayer().Export(str(inner))
        if not UsdUtils.CreateNewUsdzPackage(Sdf.AssetPath(str(inner)), str(target)):
            raise OutputError(target, "cannot write the USDZ package")


# --- the stage -------------------------------------------------------------------------------------
def build_stage(request: ExportRequest):
    """The shot's stage, in memory, and what it holds (counts)."""
    Gf, Sdf, Usd, UsdGeom, _, _, _ = _pxr()
    shot, frames = request.shot, request.frames
    world, world_source = world_similarity(shot)
    animation = load_shot_animation(shot)
    cameras = export_cameras(shot, frames, world)
    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    fps = float(shot.config.shot.fps)
    stage.SetTimeCodesPerSecond(fps)
    stage.SetFramesPerSecond(fps)
    stage.SetStartTimeCode(frames.start)
    stage.SetEndTimeCode(frames.end)
    root = UsdGeom.Xform.Define(stage, "/World").GetPrim()
    stage.SetDefaultPrim(root)
    _colour_space(root, WORKING_SPACE)

    scene = animation.scene
    keep = np.ones(len(scene), dtype=bool)
    if animation.removed is not None:
        keep[animation.removed] = False
    static = gaussians_to_world(scene[torch.from_numpy(keep)], world)
    _splat_field(stage, "/World/scene", static)
    pieces = _fragments(stage, animation, world, shot, frames) if animation.fragments is not None else 0
    fields = 0
    for name, cache in animation.particles.items():
        _particles(stage, f"/World/particles/{name}", cache, shot, frames)
        fields += 1
    bounds = static.means.double().numpy()
    for cam in cameras:
        _camera(stage, f"/World/cameras/{cam.name}", cam, list(frames), request.sensor_width_mm,
                _clipping(cam.cameras, bounds, world))
    stage.GetRootLayer().customLayerData = _layer_data(shot, request, world_source, cameras)
    return stage, {"frames": len(frames), "scene_gaussians": len(static), "pieces": pieces,
                   "particle_fields": fields, "cameras": len(cameras)}


def _colour_space(prim, name: str) -> None:
    from pxr import Usd

    Usd.ColorSpaceAPI.Apply(prim).CreateColorSpaceNameAttr().Set(name)


def _splat_field(stage, path: str, g: Gaussians, time=None):
    """A ParticleField3DGaussianSplat at ``path`` holding ``g`` (at ``time``, or as default values)."""
    Gf, Sdf, Usd, UsdGeom, _, UsdVol, Vt = _pxr()
    field = UsdVol.ParticleField3DGaussianSplat.Get(stage, path)
    if not field:
        field = UsdVol.ParticleField3DGaussianSplat.Define(stage, path)
        field.CreateProjectionModeHintAttr().Set("perspective")
        field.CreateSortingModeHintAttr().Set("zDepth")
        field.CreateRadianceSphericalHarmonicsDegreeAttr().Set(int(g.sh_degree))
        _colour_space(field.GetPrim(), RADIANCE_SPACE)
    when = Usd.TimeCode.Default() if time is None else Usd.TimeCode(time)
    arrays = splat_arrays(g)
    field.CreatePositionsAttr().Set(Vt.Vec3fArray.FromNumpy(arrays["positions"]), when)
    field.CreateOrientationsAttr().Set(Vt.QuatfArray.FromNumpy(arrays["orientations"]), when)
    field.CreateScalesAttr().Set(Vt.Vec3fArray.FromNumpy(arrays["scales"]), when)
    field.CreateOpacitiesAttr().Set(Vt.FloatArray.FromNumpy(arrays["opacities"]), when)
    field.CreateRadianceSphericalHarmonicsCoefficientsAttr().Set(
        Vt.Vec3fArray.FromNumpy(arrays["coefficients"]), when)
    field.CreateExtentAttr().Set(Vt.Vec3fArray.FromNumpy(arrays["extent"]), when)
    return field


def splat_arrays(g: Gaussians) -> dict[str, np.ndarray]:
    """The schema's arrays for ``g``: positions, orientations (x, y, z, w: GfQuatf's memory
    order), linear scales, opacities in [0, 1], SH coefficients (N·K, 3) and the extent."""
    means = g.means.detach().cpu().numpy().astype(np.float32)
    quats = g.unit_quats.detach().cpu().numpy().astype(np.float32)
    scales = np.exp(g.log_scales.detach().cpu().double().numpy()).astype(np.float32)
    opacities = (1.0 / (1.0 + np.exp(-g.opacity_logits.detach().cpu().double().numpy()))).astype(np.float32)
    sh = g.sh.detach().cpu().numpy().astype(np.float32)
    if len(means):
        reach = 3.0 * scales.max(axis=1, keepdims=True)
        extent = np.stack([(means - reach).min(axis=0), (means + reach).max(axis=0)])
    else:
        extent = np.zeros((2, 3), np.float32)
    return {"positions": np.ascontiguousarray(means), "orientations": np.ascontiguousarray(quats[:, [1, 2, 3, 0]]),
            "scales": scales, "opacities": opacities, "coefficients": np.ascontiguousarray(sh.reshape(-1, 3)),
            "extent": extent.astype(np.float32)}


def _visibility(prim, visible: bool, frame: int) -> None:
    from pxr import Usd, UsdGeom

    UsdGeom.Imageable(prim).CreateVisibilityAttr().Set(UsdGeom.Tokens.inherited if visible else
                                                        UsdGeom.Tokens.invisible, Usd.TimeCode(frame))


def _fragments(stage, animation: ShotAnimation, world: Similarity, shot: Shot, frames) -> int:
    """Each piece once, in its own space, under an Xform posed per frame from the rigid cache."""
    Gf, _, Usd, UsdGeom, _, _, _ = _pxr()
    frag = animation.fragments
    cache = frag.cache
    posed = gaussians_to_world(frag.gaussians, world)
    # a solid piece sheds its haze and caps its splat sizes once it moves (as the render does):
    # its "rest" splats show while it stands, the trimmed and capped "splats" once it moves
    solid = frag.trim is not None and frag.max_log_scale is not None
    if solid:
        cap = torch.from_numpy(np.minimum(frag.max_log_scale, 1e3)).float()[:, None]
        loose = gaussians_to_world(frag.gaussians.replace(log_scales=torch.minimum(frag.gaussians.log_scales, cap)), world)
    UsdGeom.Xform.Define(stage, "/World/fragments")
    written = 0
    for f in range(cache.centroids.shape[0]):
        rows = frag.labels == f
        if not rows.any():
            continue
        path = f"/World/fragments/piece_{f:04d}"
        xform = UsdGeom.Xform.Define(stage, path)
        xform.GetPrim().SetCustomDataByKey("splatfx:massKg", float(cache.masses[f]))
        centroid = torch.from_numpy(np.asarray(cache.centroids[f], np.float32))
        surface = rows & (frag.element == ELEMENTS["fragment"])
        parts = {"splats": (surface & ~frag.trim, loose) if solid else (surface, posed),
                 "rest": (surface, posed) if solid else (np.zeros_like(rows), posed),
                 "fill": (rows & (frag.element == ELEMENTS["fill"]), posed)}
        children = {}
        for name, (mask, source) in parts.items():
            if mask.any():
                local = source[torch.from_numpy(mask)]
                children[name] = _splat_field(stage, f"{path}/{name}", local.replace(means=local.means - centroid)).GetPrim()
        op = xform.AddTransformOp()
        for frame in frames:
            t = frame_index(shot, frame)
            m = np.eye(4)
            m[:3, :3] = quat_to_rotmat(cache.quats[t, f])
            m[:3, 3] = cache.positions[t, f]
            op.Set(Gf.Matrix4d(m.T.tolist()), Usd.TimeCode(frame))
            _visibility(xform.GetPrim(), bool(cache.visible[t, f]), frame)
            moved = bool(animation.pieces_moved(t)[f])
            for name in ("fill", "splats") if solid else ("fill",):  # shown once the piece breaks loose
                if name in children:
                    _visibility(children[name], moved, frame)
            if "rest" in children:
                _visibility(children["rest"], not moved, frame)
        written += 1
    return written


def _particles(stage, path: str, cache: ParticleCache, shot: Shot, frames) -> None:
    """A particle field with every attribute time-sampled: the particles alive on each frame."""
    _, _, Usd, UsdGeom, _, _, Vt = _pxr()
    UsdGeom.Scope.Define(stage, "/World/particles") if not stage.GetPrimAtPath("/World/particles") else None
    field = None
    for frame in frames:
        t = frame_index(shot, frame)
        g, live = particle_gaussians(cache, t)
        field = _splat_field(stage, path, g, frame)
        prim = field.GetPrim()
        ids = prim.CreateAttribute("splatfx:particleIds", _sdf().ValueTypeNames.IntArray)
        ids.Set(Vt.IntArray.FromNumpy(np.nonzero(live)[0].astype(np.int32)), Usd.TimeCode(frame))
        vel = prim.CreateAttribute("splatfx:velocities", _sdf().ValueTypeNames.Vector3fArray)
        vel.Set(Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(cache.velocities[t][live], np.float32)),
                Usd.TimeCode(frame))
    if field is not None:
        field.GetRadianceSphericalHarmonicsDegreeAttr().Set(0)


def _sdf():
    from pxr import Sdf

    return Sdf


def particle_gaussians(cache: ParticleCache, t: int) -> tuple[Gaussians, np.ndarray]:
    """Frame ``t``'s living particles as world-frame Gaussians (degree 0), as the render draws
    them (:meth:`ShotAnimation._particles_at` in solve coordinates), and the mask of them."""
    live = cache.alive[t] & (cache.opacities[t] > PARTICLE_MIN_OPACITY)
    n = int(live.sum())
    opacity = np.clip(cache.opacities[t][live].astype(np.float64), 1e-4, 0.9999)
    log_scales = np.repeat(np.log(cache.sizes[t][live])[:, None], 3, axis=1)
    if cache.axes is not None:  # flat flakes and chips
        log_scales = log_scales + np.log(cache.axes[live])
    quats = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)) if cache.quats is None else cache.quats[live]
    g = Gaussians.from_arrays({
        "means": cache.positions[t][live], "quats": quats, "log_scales": log_scales,
        "opacity_logits": np.log(opacity / (1.0 - opacity)),
        "sh": cache.colors_at(t)[live][:, None, :]}, source="particles")
    return g, live


# --- cameras ---------------------------------------------------------------------------------------
def camera_film(camera: Camera, sensor_width_mm: float) -> dict[str, float]:
    """The camera's lens in UsdGeomCamera's terms (mm): focal length, apertures, and the
    principal point as aperture offsets (x right, y up)."""
    mm_x = sensor_width_mm / camera.width
    focal = camera.fx * mm_x
    vertical = focal * camera.height / camera.fy
    return {"focalLength": focal, "horizontalAperture": sensor_width_mm, "verticalAperture": vertical,
            "horizontalApertureOffset": (camera.cx - camera.width / 2.0) * mm_x,
            "verticalApertureOffset": -(camera.cy - camera.height / 2.0) * vertical / camera.height}


def camera_transform(camera: Camera) -> np.ndarray:
    """Camera-to-world 4×4 in USD's camera axes (x right, y up, looking down −z)."""
    return camera.c2w() @ np.diag([1.0, -1.0, -1.0, 1.0])


def _camera(stage, path: str, cam: ShotCamera, frames: list[int], sensor_width_mm: float,
            clipping: tuple[float, float]) -> None:
    Gf, Sdf, Usd, UsdGeom, _, _, _ = _pxr()
    usd_cam = UsdGeom.Camera.Define(stage, path)
    prim = usd_cam.GetPrim()
    usd_cam.CreateProjectionAttr().Set(UsdGeom.Tokens.perspective)
    usd_cam.CreateClippingRangeAttr().Set(Gf.Vec2f(*clipping))
    op = usd_cam.AddTransformOp()
    for frame, camera in zip(frames, cam.cameras):
        when = Usd.TimeCode(frame)
        for name, value in camera_film(camera, sensor_width_mm).items():
            prim.GetAttribute(name).Set(float(value), when)
        op.Set(Gf.Matrix4d(camera_transform(camera).T.tolist()), when)
    first = cam.cameras[0]
    prim.CreateAttribute("splatfx:imageSize", Sdf.ValueTypeNames.Int2, custom=True).Set(
        Gf.Vec2i(first.width, first.height))
    prim.CreateAttribute("splatfx:sensorWidthMm", Sdf.ValueTypeNames.Double, custom=True).Set(sensor_width_mm)
    prim.CreateAttribute("splatfx:rendered", Sdf.ValueTypeNames.Bool, custom=True).Set(cam.rendered)
    dists = [np.zeros(5) if c.dist is None else np.pad(c.dist, (0, 5 - len(c.dist))) for c in cam.cameras]
    prim.CreateAttribute(LENS_PREFIX + "model", Sdf.ValueTypeNames.Token, custom=True).Set(
        "opencv_radial_tangential" if any(d.any() for d in dists) else "none")
    for k, name in enumerate(("k1", "k2", "p1", "p2", "k3")):
        attr = prim.CreateAttribute(LENS_PREFIX + name, Sdf.ValueTypeNames.Double, custom=True)
        values = [float(d[k]) for d in dists]
        if len(set(values)) == 1:
            attr.Set(values[0])
        else:
            for frame, value in zip(frames, values):
                attr.Set(value, Usd.TimeCode(frame))
    prim.SetDocumentation(
        "splatfx camera. Lens: OpenCV radial-tangential (k1 k2 p1 p2 k3) on normalised image coordinates "
        "x = X/Z, y = Y/Z of OpenCV camera axes (x right, y down); pixels u = fx·x_d + cx, v = fy·y_d + cy "
        "with fx = focalLength·W/horizontalAperture, fy = focalLength·H/verticalAperture, "
        "cx = W/2 + horizontalApertureOffset·W/horizontalAperture, "
        "cy = H/2 − verticalApertureOffset·H/verticalAperture, (W, H) = splatfx:imageSize.")


def _clipping(cameras: list[Camera], points: np.ndarray, world: Similarity) -> tuple[float, float]:
    """Near: the rasterizer's near plane in metres; far: twice the farthest scene corner seen."""
    near = NEAR_SOLVE * world.scale
    if not len(points):
        return near, 1e4
    lo, hi = points.min(axis=0), points.max(axis=0)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    far = max(float(np.linalg.norm(corners - c.center, axis=1).max()) for c in cameras)
    return float(near), float(max(2.0 * far, 10.0 * near))


# --- provenance ------------------------------------------------------------------------------------
def _layer_data(shot: Shot, request: ExportRequest, world_source: str, cameras: list[ShotCamera]) -> dict:
    """customLayerData: what made the stage, what in it is synthetic, and the manifest's summary."""
    effects = list(shot.config.fx.effects)
    synthetic = {"/World/scene": "real: 3D Gaussian Splatting reconstruction trained on the shot's plates"}
    if "collapse" in effects:
        synthetic["/World/fragments"] = ("synthetic motion of real Gaussians: the selected structure, Voronoi-"
                                         "fractured and simulated as rigid bodies (MuJoCo); 'fill' children are "
                                         "synthesised fracture faces")
        synthetic["/World/particles/debris"] = "synthetic: ballistic debris chips (splatfx.fx.debris)"
        synthetic["/World/particles/dust"] = "synthetic: dust puffs on curl-noise wind (splatfx.fx.debris)"
    if "snow" in effects:
        synthetic["/World/particles/snow"] = "synthetic: falling and settling snow (splatfx.fx.snow)"
    stages = {}
    for run in Manifest.load(shot.manifest_path).runs:
        if run.status == "ok":
            stages[run.stage] = {"run": run.id, "finished": run.finished, "seed": run.seed,
                                 "seconds": run.seconds, "versions": run.versions}
    return {
        "splatfx:generator": f"splatfx {__version__} export",
        "splatfx:shot": shot.name,
        "splatfx:frames": str(request.frames),
        "splatfx:fps": float(shot.config.shot.fps),
        "splatfx:seed": int(shot.config.shot.seed),
        "splatfx:world": world_source,
        "splatfx:renderCamera": f"/World/cameras/{cameras[0].name}",
        "splatfx:colour": (f"working space {WORKING_SPACE}; splat radiance {RADIANCE_SPACE} (display-referred, "
                           "as trained on sRGB plates): composite the splats, then decode sRGB to linear, "
                           "to match render/frame.####.exr"),
        "splatfx:synthetic": synthetic,
        "splatfx:manifest": json.dumps({"effects": effects, "camera": shot.config.render.camera,
                                        "stages": stages}, default=str),
    }
