"""The fx stages on a shot folder: ``fx select``, ``fx collapse``, ``fx snow``. Render and
the viewer load the resulting animation with :func:`splatfx.fx.animation.load_animation`.

Inputs: ``scene/scene.ply`` (solve coordinates), ``solve/scene.json`` (up, ground, metric
scale), the ``[fx]`` tables of shot.toml and the shot's frame range and rate. Outputs in
``fx/``: ``selection.npz`` + ``selection.json``, ``collapse.npz`` (fracture, fill
Gaussians, rigid poses, debris, dust) and ``snow.npz``; all plain arrays (no pickles),
written atomically, reused while inputs and settings are unchanged.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from splatfx.core.atomic import atomic_path, write_text_atomic
from splatfx.shot.config import CollapseSection, LightSection, SelectSection, SnowSection, config_to_dict
from splatfx.core.errors import ConfigError, InputError
from splatfx.fx.backdrop import Backdrop, PlateView, build_backdrop
from splatfx.fx.animation import Similarity, load_frame, load_scene, load_selection, scene_path
from splatfx.fx.colliders import FloorMap, StaticBox, fit_static_boxes
from splatfx.fx.debris import DebrisSettings, DustSettings, light_collapse, simulate_debris, simulate_dust
from splatfx.fx.lighting import DEFAULT_DIRECTION, KeyLight, estimate_key_light, unit, unit_luma
from splatfx.fx.budget import require_collapse_memory, require_snow_memory
from splatfx.fx.fracture import (MIN_FRAGMENT_POINTS, fill_gaussian_params, largest_fragment_count,
                                 rim_log_scales, solid_fill, voronoi_fracture)
from splatfx.fx.rigid import CollapseSettings, collision_hulls, simulate_collapse, solvable_fracture
from splatfx.fx.selection import (BoxSelection, PolygonSelection, euler_xyz_degrees, require_selection,
                                  select_by_masks, selection_report)
from splatfx.fx.snow import HeightMap, Lens, SnowSettings, TooManyFlakes, Volume, simulate_snow
from splatfx.core.gaussians import Gaussians
from splatfx.core.progress import progress_callback
from splatfx.io.images import write_png
from splatfx.core.sh import SH_C0
from splatfx.shot.folder import Shot
from splatfx.shot.runner import StageResult, run_stage


# --- inputs ---------------------------------------------------------------------------------------
#: Gaussians more opaque than this are the scene's surfaces (snow settles on them).
OPAQUE = 0.5


def world_means(scene: Gaussians, frame: Similarity) -> np.ndarray:
    return frame.to_world(scene.means.double().numpy())


#: What makes each fx input, for the message when it is missing.
_MAKES = {"scene": "splatfx train", "frame": "splatfx solve", "selection": "splatfx fx select"}


def require_inputs(shot: Shot, inputs: dict[str, Path]) -> None:
    """InputError naming the first missing input and the command that makes it."""
    for label, path in inputs.items():
        if label in _MAKES and not path.exists():
            raise InputError(path, f"does not exist (run `{_MAKES[label]} {shot.root}` first)")


def require_gaussians(shot: Shot, scene: Gaussians, stage: str) -> Gaussians:
    """``scene``, or an InputError naming ``scene.ply`` when it holds no Gaussians at all (a
    training that produced nothing): no effect can act on it."""
    if len(scene) == 0:
        raise InputError(scene_path(shot), f"holds no Gaussians, so {stage} has nothing to act on: train the shot "
                                           f"again (`splatfx train {shot.root}`, raising [train] max_steps or "
                                           "max_minutes)")
    return scene


def surface_mask(shot: Shot, scene: Gaussians, stage: str, remedy: str) -> np.ndarray:
    """Which Gaussians are opaque surface (opacity above :data:`OPAQUE`); an InputError
    naming ``scene.ply``, the stage and what to change when none is (an untrained or
    barely trained reconstruction), ``remedy`` being the stage's own way out."""
    opacity = require_gaussians(shot, scene, stage).opacities.numpy()
    opaque = opacity > OPAQUE
    if not opaque.any():
        raise InputError(scene_path(shot), f"none of its {len(opacity)} Gaussians is opaque (opacity above {OPAQUE}; "
                                           f"the most opaque is {float(opacity.max()):.2f}), so {stage} finds no "
                                           f"surface: the reconstruction looks untrained; train it longer "
                                           f"([train] max_steps, max_minutes) or {remedy}")
    return opaque


# --- select ----------------------------------------------------------------------------------------
def selection_mask(shot: Shot, settings: SelectSection, points_world: np.ndarray) -> np.ndarray:
    """Which scene Gaussians (by centre, world frame) the ``[fx.select]`` settings choose."""
    if settings.shape == "box":
        return BoxSelection(settings.center, settings.size, euler_xyz_degrees(settings.rotation)).contains(points_world)
    if settings.shape == "polygon":
        return PolygonSelection(settings.polygon, settings.z_min, settings.z_max).contains(points_world)
    return _mask_votes(shot, settings, points_world)


def _mask_votes(shot: Shot, settings: SelectSection, points_world: np.ndarray) -> np.ndarray:
    """Vote with the PNG masks in ``[fx.select] masks`` (named like the plate images)."""
    from splatfx.io.dataset import load_dataset
    from splatfx.io.images import read_image

    folder = shot.path(settings.masks)
    if not folder.is_dir():
        raise InputError(folder, "mask folder does not exist")
    frame = load_frame(shot)
    dataset = load_dataset(shot.solve_dir, split="all")
    cameras, masks = [], []
    for item in dataset.frames:
        for candidate in (folder / f"{Path(item.name).stem}.png", folder / Path(item.name).name):
            if candidate.is_file():
                cameras.append(item.camera)
                masks.append(read_image(candidate).pixels[..., 0])
                break
    if not masks:
        raise InputError(folder, "no mask is named like a solved plate image (e.g. <plate name>.png)")
    points_solve = frame.to_solve(points_world)
    return select_by_masks(points_solve, cameras, masks, settings.mask_votes)


def run_select(shot: Shot, *, force: bool = False) -> StageResult:
    """``splatfx fx select``: store which Gaussians the effects act on, and report it."""
    settings = shot.config.fx.select
    out_npz, out_json = shot.fx_dir / "selection.npz", shot.fx_dir / "selection.json"
    inputs = {"scene": scene_path(shot), "frame": shot.scene_json}
    if settings.shape == "masks":
        inputs["masks"] = shot.path(settings.masks)

    def work() -> dict:
        scene = require_gaussians(shot, load_scene(shot), "fx.select")
        points = world_means(scene, load_frame(shot))
        mask = require_selection(selection_mask(shot, settings, points), f"{shot.toml_path} [fx.select]")
        report = selection_report(points, mask)
        _save_npz(out_npz, {"indices": np.nonzero(mask)[0].astype(np.int64)})
        write_text_atomic(out_json, json.dumps(report, indent=2) + "\n")
        return report

    require_inputs(shot, inputs)
    return run_stage(shot, "fx.select", settings, inputs, [out_npz, out_json], work, force=force)


# --- collapse --------------------------------------------------------------------------------------
def collapse_settings(section: CollapseSection, centre: np.ndarray, start_frame: int,
                      colliders: tuple[StaticBox, ...] = ()) -> CollapseSettings:
    """Physics settings from ``[fx.collapse]``; the trigger frame becomes a 0-based index."""
    trigger_index = 0 if section.trigger_frame is None else section.trigger_frame - start_frame
    point = tuple(centre) if section.trigger_point is None else section.trigger_point
    return CollapseSettings(
        density=section.density, friction=section.friction, restitution=section.restitution,
        glue_strength=section.glue_strength, trigger=section.trigger, trigger_frame=trigger_index,
        support_height=section.support_height, impact_point=point, impact_direction=section.impact_direction,
        impact_speed=section.impact_speed, impact_mass=section.impact_mass, charge_point=point,
        charge_impulse=section.impulse, charge_radius=section.charge_radius, substeps=section.substeps,
        colliders=colliders,
    )


COLLIDER_TOLERANCE = 0.05  # metres a hand-placed collider may overlap the pieces (touching the base is fine)


def collider_boxes(section: CollapseSection, points_world: np.ndarray, opaque: np.ndarray, selected: np.ndarray,
                   hulls: list[np.ndarray], where: str) -> tuple[StaticBox, ...]:
    """The static boxes of the collapse: ``[fx.collapse] colliders`` (each checked not to
    bury the pieces at rest), and with ``auto_colliders`` boxes fitted to the opaque,
    unselected Gaussians around the selection. ``hulls``: the pieces' collision shapes."""
    boxes = []
    vertices = np.concatenate(hulls)
    for index, box in enumerate(section.colliders):
        made = StaticBox(np.asarray(box.center, float), np.asarray(box.size, float), euler_xyz_degrees(box.rotation))
        inner = BoxSelection(made.center, np.maximum(made.size - 2 * COLLIDER_TOLERANCE, 0.0), made.rotation)
        if inner.contains(vertices).any():
            raise ConfigError(f"{where} colliders[{index}]",
                              "overlaps the selected structure at rest (its pieces would be thrown out of it)")
        boxes.append(made)
    if section.auto_colliders:
        rest = opaque.copy()
        rest[selected] = False
        boxes += fit_static_boxes(points_world[rest], hulls, section.collider_margin, section.collider_cell)
    return tuple(boxes)


def run_collapse(shot: Shot, *, force: bool = False) -> StageResult:
    """``splatfx fx collapse``: fracture the selection, fill the breaks, simulate the fall,
    emit debris and dust; cache everything in ``fx/collapse.npz``."""
    section = shot.config.fx.collapse
    out = shot.fx_dir / "collapse.npz"
    inputs = {"scene": scene_path(shot), "frame": shot.scene_json, "selection": shot.fx_dir / "selection.npz"}
    seed = shot.config.shot.seed
    frames = shot.frames

    def work() -> dict:
        scene = load_scene(shot)
        frame = load_frame(shot)
        selected = load_selection(shot, len(scene))
        scene_points = world_means(scene, frame)
        points = scene_points[selected]
        colors = scene.sh[torch.from_numpy(selected), 0].double().numpy()
        where = f"{shot.toml_path} [fx.collapse]"
        require_collapse_memory(section, len(frames), where, selected=len(points))
        asked = fragment_count(section.fragments, len(points), where)
        fracture = solvable_fracture(points, voronoi_fracture(points, asked, seed=seed))
        fill = shell = None
        if section.fill:  # the wall behind the surface: opaque skin and broken core, textured
            fill, _, shell = solid_fill(points, scene.opacities.double().numpy()[selected], colors, fracture,
                                        section.fill_max, section.wall_thickness, seed=seed)
        all_points = points if fill is None else np.concatenate([points, fill.points])
        labels = fracture.labels if fill is None else np.concatenate([fracture.labels, fill.labels])
        all_colors = colors if fill is None else np.concatenate([colors, fill.colors_dc])
        boxes = collider_boxes(section, scene_points, scene.opacities.numpy() > 0.5, selected,
                               collision_hulls(all_points, labels, fracture.count), f"{shot.toml_path} [fx.collapse]")
        settings = collapse_settings(section, points.mean(axis=0), frames.start, boxes)
        with progress_callback("simulating collapse", len(frames)) as update:
            cache = simulate_collapse(all_points, labels, fracture.count, len(frames), shot.config.shot.fps, settings,
                                      progress=update)
        debris = simulate_debris(cache, all_points, labels, all_colors,
                                 DebrisSettings(count=section.debris, size=section.debris_size,
                                                size_max=section.debris_size_max, exponent=section.debris_exponent,
                                                restitution=settings.restitution), seed=seed, floor=FloorMap(boxes))
        height = float(np.percentile(points[:, 2], 98) - min(np.percentile(points[:, 2], 2), 0.0))
        dust = simulate_dust(cache, all_points, labels, all_colors,
                             DustSettings(count=section.dust, height=height, opacity=section.dust_opacity,
                                          lifetime=dust_lifetimes(section.dust_lifetime)), seed=seed)
        light = key_light(shot, scene, frame)
        light_collapse(debris, dust, light)
        arrays = {"labels": labels.astype(np.int32), "fragments": np.array(fracture.count)}
        if fill is not None:
            params = fill_gaussian_params(fill)
            arrays.update({f"fill.{k}": frame_solve_param(k, v, frame) for k, v in params.items()})
            # once a piece moves, its Gaussians off the wall (haze, floaters) go, and the rest stay
            # within the skin's grain, so no translucent halo hangs around it
            caps = rim_log_scales(points, fracture, shell.spacing) - np.log(frame.scale)
            arrays.update({"solid.trim": ~shell.on_wall(points), "solid.max_log_scale": caps})
        arrays.update({f"rigid.{k}": v for k, v in cache.arrays().items()})
        arrays.update(_collider_arrays(boxes))
        arrays.update(debris.arrays("debris"))
        arrays.update(dust.arrays("dust"))
        backdrop = collapse_backdrop(shot, scene, selected) if section.backdrop else None
        if backdrop is not None:
            arrays.update(backdrop.arrays())
        _save_npz(out, arrays)
        if backdrop is not None:
            write_png(shot.fx_dir / "backdrop.png", backdrop_picture(backdrop))
        figures = {"fragments": fracture.count, "fill_gaussians": 0 if fill is None else len(fill.points),
                   "debris": debris.count, "dust": dust.count, "breaks": sum(e["kind"] == "break" for e in cache.events),
                   "impacts": sum(e["kind"] == "impact" for e in cache.events), "colliders": len(boxes)}
        if shell is not None:
            figures.update({"skin_gaussians": 2 * len(shell.points), "wall_thickness": round(shell.thickness, 3),
                            "trimmed_off_wall": int(arrays["solid.trim"].sum()),
                            "skin_spacing": round(shell.spacing, 3)})
        if fracture.count != section.fragments:  # clamped to the selection, or pieces merged
            figures["fragments_asked"] = section.fragments
        figures.update(light.figures())
        if backdrop is not None:
            figures.update(backdrop.figures())
        return figures

    if section.backdrop and shot.sparse_model.exists():  # the plates the backdrop is painted from
        inputs["solve"] = shot.sparse_model
    require_inputs(shot, inputs)
    config = {**config_to_dict(section), "light": config_to_dict(shot.config.fx.light)}
    return run_stage(shot, "fx.collapse", config, inputs, [out], work, force=force)


def dust_lifetimes(mean: float) -> tuple[float, float]:
    """The range a dust puff's lifetime is drawn from: ``[fx.collapse] dust_lifetime`` ± 40 %."""
    return 0.6 * mean, 1.4 * mean


# --- backdrop ---------------------------------------------------------------------------------------
def solved_plates(shot: Shot) -> list[PlateView]:
    """The solved plates (solve coordinates), their pixels read on demand; [] without a solve."""
    from splatfx.io.dataset import load_dataset
    try:
        dataset = load_dataset(shot.solve_dir, split="all")
    except InputError:
        return []
    return [PlateView(frame.name, frame.camera, functools.partial(dataset.image, i))
            for i, frame in enumerate(dataset.frames)]


def collapse_backdrop(shot: Shot, scene: Gaussians, selected: np.ndarray) -> Backdrop | None:
    """The backdrop behind the selection (:mod:`splatfx.fx.backdrop`), or None with a note
    when the solve has no plate to paint it from (the comp then inpaints each frame)."""
    views = solved_plates(shot)
    why = "the solve has no plates to paint it from" if not views else ""
    if views:
        try:
            return build_backdrop(scene, selected, views, seed=shot.config.shot.seed)
        except ValueError as error:
            why = str(error)
    Console(stderr=True, highlight=False).print(
        f"fx.collapse: no backdrop behind the structure ({escape(why)}); the comp inpaints what it uncovers "
        "frame by frame", soft_wrap=True)
    return None


def backdrop_picture(backdrop: Backdrop) -> np.ndarray:
    """The card as RGBA for ``fx/backdrop.png``: its picture, transparent off the card."""
    return np.concatenate([backdrop.image, backdrop.card.astype(np.float32)[..., None]], axis=2)


# --- light and lens --------------------------------------------------------------------------------
def plate_views(shot: Shot, frame: Similarity) -> tuple[np.ndarray, float, int] | None:
    """The solved plate cameras' centres (world frame, in plate order), focal length and
    width in pixels; None when the solve holds no cameras that can be read."""
    from splatfx.io.dataset import load_dataset
    try:
        dataset = load_dataset(shot.solve_dir, split="all")
    except InputError:
        return None
    cameras = [item.camera for item in dataset.frames]
    if not cameras:
        return None
    centres = np.array([-c.R.T @ c.t for c in cameras], dtype=np.float64)
    return frame.to_world(centres), float(np.median([c.fx for c in cameras])), int(cameras[0].width)


def key_light(shot: Shot, scene: Gaussians, frame: Similarity) -> KeyLight:
    """The key light of ``[fx.light]``: what it sets, the rest estimated from the
    reconstruction's shading (:func:`splatfx.fx.lighting.estimate_key_light`)."""
    settings: LightSection = shot.config.fx.light
    estimated = None
    if settings.direction is None or settings.key is None or settings.sky_color is None:
        views = plate_views(shot, frame)
        try:
            estimated, _ = estimate_key_light(world_means(scene, frame), scene.quats.double().numpy(),
                                              scene.log_scales.double().numpy(), scene.opacities.double().numpy(),
                                              scene.sh[:, 0].double().numpy(), np.zeros((0, 3)) if views is None
                                              else views[0], frame.rotation)
        except ValueError:  # too few surfaces to read a light from
            estimated = None
    fallback = KeyLight(unit(DEFAULT_DIRECTION), unit_luma(np.array([1.0, 0.97, 0.92])),
                        unit_luma(np.array([0.85, 0.92, 1.0])), 0.6, "default")
    base = estimated or fallback
    direction = base.direction if settings.direction is None else unit(settings.direction)
    sky = base.sky if settings.sky_color is None else unit_luma(np.asarray(settings.sky_color))
    # an estimate from an overcast plate still gives the dust some modelling
    key = float(np.clip(base.key, 0.35, 0.85)) if settings.key is None else float(settings.key)
    source = "shot.toml" if settings.direction is not None else base.source
    return KeyLight(direction, base.sun, sky, key, source)


def fragment_count(asked: int, points: int, where: str) -> int:
    """``[fx.collapse] fragments``, clamped (with a message) to what ``points`` selected
    Gaussians can hold: one piece per :data:`MIN_FRAGMENT_POINTS` of them."""
    largest = largest_fragment_count(points)
    if asked <= largest:
        return asked
    Console(stderr=True, highlight=False).print(
        f"{escape(where)} fragments: {asked} is more than the {points} selected Gaussians can hold "
        f"(at least {MIN_FRAGMENT_POINTS} each); using {largest}", soft_wrap=True)
    return largest


def _collider_arrays(boxes: tuple[StaticBox, ...]) -> dict[str, np.ndarray]:
    """The static boxes for storage (physics/world frame): centres, sizes, rotations."""
    return {"colliders.centers": np.array([b.center for b in boxes]).reshape(-1, 3),
            "colliders.sizes": np.array([b.size for b in boxes]).reshape(-1, 3),
            "colliders.rotations": np.array([b.rotation for b in boxes]).reshape(-1, 3, 3)}


def frame_solve_param(name: str, value: np.ndarray, frame: Similarity) -> np.ndarray:
    """Fill-Gaussian parameters (made in the world frame) in solve coordinates."""
    if name == "means":
        return frame.to_solve(value)
    if name == "log_scales":
        return value - np.log(frame.scale)
    if name == "quats":
        from splatfx.core.rotation import quat_to_rotmat, rotmats_to_quats
        return rotmats_to_quats(frame.rotation.T @ quat_to_rotmat(value))
    return value


# --- snow ------------------------------------------------------------------------------------------
def snow_settings(section: SnowSection) -> SnowSettings:
    """Particle settings from ``[fx.snow]`` (flakes per m³ become a birth rate per m² per s)."""
    return SnowSettings(density=section.density * max(section.speed, 1e-3), size=section.size / 2.0,
                        speed=section.speed, wind=section.wind, turbulence=section.turbulence * section.speed,
                        settle=section.settle, max_flakes=section.max_flakes)


def flake_limit_error(shot: Shot, section: SnowSection, exc: TooManyFlakes) -> ConfigError:
    """``[fx.snow] density`` needs more flakes than ``max_flakes``: name it and the largest
    density that fits (the flake count scales with the density)."""
    fits = _round_down(section.density * exc.fraction)
    return ConfigError(f"{shot.toml_path} [fx.snow] density",
                       f"{section.density:g} would need {exc.needed} flakes, more than max_flakes = "
                       f"{exc.max_flakes}: the largest density that fits is about {fits:g} (or raise max_flakes)")


def _round_down(value: float, digits: int = 2) -> float:
    """``value`` cut (not rounded) to ``digits`` significant digits, so it stays under a limit."""
    if value <= 0:
        return 0.0
    scale = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return math.floor(value / scale) * scale


def snow_lens(shot: Shot, section: SnowSection, frame: Similarity, volume: Volume) -> Lens | None:
    """The plate cameras as a lens for the flakes (None without a readable solve): focused
    on the scene (the median distance from the cameras to the snow volume's centre), with
    the blur of ``[fx.snow] defocus``; one camera per frame when the plates match the frames."""
    views = plate_views(shot, frame)
    if views is None:
        return None
    centres, focal, width = views
    focus = float(np.median(np.linalg.norm(centres - (volume.lo + volume.hi) / 2.0, axis=1)))
    return Lens(centres, focal, max(focus, 1.0), section.defocus * width, per_frame=len(centres) == len(shot.frames))


def run_snow(shot: Shot, *, force: bool = False) -> StageResult:
    """``splatfx fx snow``: simulate snowfall over the scene into ``fx/snow.npz``."""
    section = shot.config.fx.snow
    out = shot.fx_dir / "snow.npz"
    inputs = {"scene": scene_path(shot), "frame": shot.scene_json}

    def work() -> dict:
        scene = load_scene(shot)
        frame = load_frame(shot)
        opaque = surface_mask(shot, scene, "fx.snow", 'take "snow" out of [fx] effects')
        points = world_means(scene, frame)[opaque]
        volume = Volume.around(points)
        cell = max(float(np.ptp(points[:, :2], axis=0).max()) / 256.0, 0.02)
        require_snow_memory(section.density, snow_settings(section), volume, len(shot.frames), shot.config.shot.fps,
                            f"{shot.toml_path} [fx.snow]")
        lens = snow_lens(shot, section, frame, volume)
        try:
            snow = simulate_snow(len(shot.frames), shot.config.shot.fps, volume, HeightMap(points, volume, cell),
                                 snow_settings(section), seed=shot.config.shot.seed, lens=lens)
        except TooManyFlakes as exc:
            raise flake_limit_error(shot, section, exc) from None
        colour_dc = (np.asarray(section.color, dtype=np.float32) - 0.5) / SH_C0
        snow.colors_dc[:] = colour_dc
        _save_npz(out, {**snow.arrays("snow"), "volume.lo": volume.lo, "volume.hi": volume.hi})
        return {"flakes": snow.count, "settled": int((np.abs(snow.velocities[-1]).sum(1) == 0).sum())}

    require_inputs(shot, inputs)
    return run_stage(shot, "fx.snow", section, inputs, [out], work, force=force)


# --- storage ---------------------------------------------------------------------------------------
def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
