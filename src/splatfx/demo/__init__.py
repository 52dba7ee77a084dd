"""``splatfx demo``: the whole pipeline on a small real capture that ships with splatfx.

The capture is 32 photos of COLMAP's South Building (C. Zach; see
``data/ATTRIBUTION.txt``) at 384×288, or any footage given with ``plates``. The demo

1. makes the shot folder (plates copied in) and writes the preset's settings to shot.toml;
2. runs the pipeline up to ``train``: camera solve, then a short 3DGS training;
3. derives what depends on the solve from the trained scene and saves it in shot.toml:
   the box around the building (:func:`splatfx.demo.presets.building_box`) and, for the
   ``virtual`` preset, the camera move (``virtual_camera.json``);
4. runs the rest: select, collapse (debris and dust), snow, render, the built-in sharpening pass
   (trained on the shot, then applied), and comp (EXR and PNG frames, ``shot.mp4``, the
   side-by-side ``review.mp4``, the contact sheet, the manifest). The ``virtual`` preset
   renders a camera move with no plates in it, so its comp is the refined render itself
   (:mod:`splatfx.comp.virtual`: frames, ``shot.mp4``, contact sheet).

Render, refine and comp work at a proxy (``[shot] proxy``) chosen from the plates' size
(:func:`demo_proxy`: the longer side at most 800 pixels), so footage of any size fits the
demo's 10 minutes; the demo says so, and ``[shot] proxy = 1`` then renders the same shot at
full size. Running it again on the same folder skips every stage that is up to date.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splatfx.core.atomic import write_text_atomic
from splatfx.shot.config import config_from_dict, config_to_dict
from splatfx.core.errors import InputError
from splatfx.pipeline import PipelineRun, print_summary, run_shot
from splatfx.shot.folder import SHOT_TOML, Shot, create_shot, proxy_size

PathLike = str | os.PathLike[str]

DATA_DIR = Path(__file__).resolve().parent / "data"
#: The packaged capture (32 JPEGs, 384×288).
CAPTURE = DATA_DIR / "south_building"
ATTRIBUTION = DATA_DIR / "ATTRIBUTION.txt"
DEFAULT_OUT = Path("splatfx-demo")
VIRTUAL_CAMERA = "virtual_camera.json"
FIRST_FRAME = 1001
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".exr", ".tif", ".tiff")
#: The longest side, in pixels, the demo renders, refines and comps at to stay within its
#: 10 minutes on 2 cores (measured at 768x576 on south_building_full: docs/demo.md).
DEMO_LONG_SIDE = 800
#: Frames worked at up to this many pixels (the packaged 384x288, a 1080p clip's 480x270 proxy)
#: leave training more of the 10 minutes than a 768x576 proxy, whose render, refine and comp
#: take half of them (docs/demo.md).
SMALL_FRAME_PIXELS = 150_000
#: Training minutes for small frames (the 3DGS schedule laid over them: splatfx.recon.recipe) ...
TRAIN_MINUTES_SMALL_FRAMES = 2.5
#: ... and for larger ones, whose later stages need the rest of the 10 minutes.
TRAIN_MINUTES_LARGE_FRAMES = 1.5


def demo_training_minutes(width: int, height: int) -> float:
    """The training budget the demo gives frames worked at ``width``×``height``."""
    return TRAIN_MINUTES_SMALL_FRAMES if width * height <= SMALL_FRAME_PIXELS else TRAIN_MINUTES_LARGE_FRAMES


def demo_proxy(width: int, height: int, long_side: int = DEMO_LONG_SIDE) -> float:
    """The largest proxy of 1, 0.5, 0.25 … (halving, as a compositor's proxies) at which the
    plates' longer side is at most ``long_side`` pixels."""
    proxy = 1.0
    while max(width, height) * proxy > long_side:
        proxy /= 2
    return proxy


@dataclass(frozen=True)
class DemoSettings:
    """The knobs that set the demo's cost (defaults: within 10 minutes on 2 CPU cores)."""

    frames: int | None = None  # use the first N plates (None: all)
    fps: float = 10.0  # the stills are metres apart, so a low rate keeps the camera move readable
    train_steps: int | None = None  # None: [train] max_steps = "auto", the schedule laid over the minutes
    # None: by the size the frames are worked at (demo_training_minutes)
    train_minutes: float | None = None
    max_gaussians: int = 150_000
    sh_degree: int = 1
    fragments: int = 60  # wall-sized chunks: the solid skin keeps pieces of any size opaque (docs/fx.md)
    fill: bool = True  # the solid skin and broken core behind the reconstructed surface
    fill_max: int = 60_000  # its Gaussians: about three times the demo's reconstruction
    debris: int = 2000
    debris_size: float = 0.2  # metres: brick clusters, a pixel or two at 384×288 from 30 m
    dust: int = 800
    substeps: int = 10
    trigger_frame: int = 3  # frames after the first before the supports give way
    dust_opacity: float = 0.3  # thin enough that the rubble reads through it in the shot's 3 s
    dust_lifetime: float = 2.0  # seconds: it thins out within the shot
    snow_density: float = 0.05  # flakes per m³ of the (large, street-sized) volume
    snow_size: float = 0.12  # metres: ash-sized flakes, visible at 384×288 from 20 m
    refiner_steps: int = 400  # training steps of the built-in refiner
    refiner_minutes: float = 1.0
    refiner_views: int = 16  # plates its training pairs are rendered from
    refine_steps: int = 2
    refine_strength: float = 0.3
    proxy: float | None = None  # [shot] proxy; None: chosen from the plates' size (demo_proxy)


def preset_tables(preset: str, settings: DemoSettings) -> dict[str, Any]:
    """shot.toml tables of a preset, except what the scene decides (box, camera path)."""
    from splatfx.demo.presets import PRESETS

    if preset not in PRESETS:
        raise ValueError(f"unknown demo preset {preset!r}; choose one of {', '.join(PRESETS)}")
    s = settings
    tables: dict[str, Any] = {
        # max_minutes depends on the frames' working size: prepare_shot sets it
        "train": {"max_gaussians": s.max_gaussians, "sh_degree": s.sh_degree, "strategy": "adc"},
        "fx": {"effects": ["collapse", "snow"],
               "collapse": {"fragments": s.fragments, "fill": s.fill, "fill_max": s.fill_max, "debris": s.debris,
                            "debris_size": s.debris_size,
                            "dust": s.dust, "dust_opacity": s.dust_opacity, "dust_lifetime": s.dust_lifetime,
                            "substeps": s.substeps, "trigger": "demolition",
                            "trigger_frame": FIRST_FRAME + s.trigger_frame},
               "snow": {"density": s.snow_density, "size": s.snow_size,
                        "color": [0.86, 0.9, 0.78]}},  # faintly yellow-green: toxic ash rather than snow
        # the packaged plates are sharp stills metres apart: blur only what moves in the scene
        # (camera blur would smear the effect across each jump), with half the default samples
        "render": {"camera": "plates", "camera_blur": False, "shutter_samples": 8},
        "refine": {"model": "refine/model", "steps": s.refine_steps, "strength": s.refine_strength,
                   "train_steps": s.refiner_steps, "train_minutes": s.refiner_minutes, "train_views": s.refiner_views},
        "comp": {"outputs": ["exr", "png", "mp4"]},
    }
    if preset == "virtual":
        tables["render"] = {"camera": "virtual", "virtual_camera": VIRTUAL_CAMERA, "shutter_samples": 8}
    return tables


def prepare_shot(out: PathLike, plates: PathLike | None, preset: str, settings: DemoSettings) -> Shot:
    """The demo's shot folder at ``out`` with the preset's settings (an existing demo shot is
    reused, so finished stages are kept)."""
    out = Path(out)
    source = Path(plates) if plates is not None else CAPTURE
    shot = Shot.open(out) if (out / SHOT_TOML).is_file() else None
    wanted = _wanted_names(source, settings.frames)
    if shot is None or wanted is None or _plate_names(shot) != wanted:
        with tempfile.TemporaryDirectory(prefix=".splatfx-demo-") as staging:
            folder = source if settings.frames is None else _first_images(source, settings.frames, Path(staging))
            shot = create_shot(out, folder, fps=settings.fps, copy=True, force=True, name=out.resolve().name)
    data = config_to_dict(shot.config)
    data["shot"]["fps"] = settings.fps
    for table, values in preset_tables(preset, settings).items():
        data[table] = _merged(data.get(table, {}), values)
    if preset != "virtual":
        data["render"].pop("virtual_camera", None)
    width, height = shot.plate_size()
    proxy = settings.proxy if settings.proxy is not None else demo_proxy(width, height)
    data["shot"]["proxy"] = proxy
    if settings.train_steps is not None:
        data["train"]["max_steps"] = settings.train_steps
    data["train"]["max_minutes"] = (demo_training_minutes(*proxy_size((width, height), proxy))
                                    if settings.train_minutes is None else settings.train_minutes)
    return _save(shot, data)


def working_size_note(shot: Shot, chosen: bool) -> str | None:
    """The line saying what size the demo works at when it is not the plates' own (``chosen``:
    picked by the demo to fit its budget, rather than asked for with ``--proxy``)."""
    if not shot.is_proxy:
        return None
    full = shot.plate_size()
    width, height = shot.scaled(full)
    note = f"plates {full[0]}x{full[1]}: working at proxy {shot.proxy:g} ({width}x{height})"
    if not chosen:
        return note + " as --proxy asks"
    return (f"{note} to fit the demo's 10 minutes; set [shot] proxy = 1 in {shot.toml_path} and run "
            f"`splatfx run {shot.root}` for full size")


def run_demo(out: PathLike = DEFAULT_OUT, preset: str = "collapse", plates: PathLike | None = None,
             settings: DemoSettings = DemoSettings(), *, force: bool = False) -> PipelineRun:
    """Run the demo shot into ``out`` (see the module doc); prints stages, timings and outputs."""
    t0 = time.perf_counter()
    shot = prepare_shot(out, plates, preset, settings)
    note = working_size_note(shot, chosen=settings.proxy is None)
    if note is not None:
        _console().print(note, markup=False)
    first = run_shot(shot, force=force, until="train", summary=False)
    shot = configure_from_scene(shot, preset)
    rest = run_shot(shot, force=force, start="fx", summary=False)
    run = PipelineRun(shot, first.stages + rest.stages, time.perf_counter() - t0)
    print_summary(run)
    if note is not None:
        _console().print(note, markup=False)
    _print_usage()
    return run


# --- what depends on the scene ------------------------------------------------------------------------

def configure_from_scene(shot: Shot, preset: str) -> Shot:
    """Save the building box (and, for ``virtual``, the camera move) derived from the trained
    scene into the shot."""
    from splatfx.demo.presets import PresetError, building_box, virtual_path
    from splatfx.io.formats import read_gaussians
    from splatfx.shot.scene_frame import SceneFrame
    from splatfx.render.cameras import plate_cameras

    frame = SceneFrame.load(shot.scene_json)
    scene = read_gaussians(shot.scene_ply)
    world = frame.points_to_world(scene.means.double().numpy())
    frames = shot.frames
    cameras = plate_cameras(shot.solve_dir, frames)
    middle = frame.camera_to_world(cameras[len(cameras) // 2])
    try:
        box = building_box(world, scene.opacities.double().numpy(), middle)
    except PresetError as exc:
        raise InputError(shot.scene_ply,
                         f"no building for the demo's box: {exc}; place the box yourself, as [fx.select] in "
                         f"{shot.toml_path} or with `splatfx view {shot.root}`, then `splatfx run {shot.root}`"
                         ) from None
    data = config_to_dict(shot.config)
    data["fx"]["select"] = box.select_table()
    if preset == "virtual":
        centres = np.stack([frame.points_to_world(c.center[None])[0] for c in cameras])
        path = virtual_path(box, centres, (frames.start, frames.end))
        write_text_atomic(shot.root / VIRTUAL_CAMERA, json.dumps(path, indent=2) + "\n")
    return _save(shot, data)


# --- helpers ------------------------------------------------------------------------------------------

def _images(source: Path) -> list[Path]:
    return sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _first_images(source: Path, count: int, staging: Path) -> Path:
    """A folder (``staging``) of links to the first ``count`` images of ``source``."""
    if not source.is_dir():
        raise InputError(source, "a frame count needs a folder of plate images")
    images = _images(source)
    if len(images) < count:
        raise InputError(source, f"holds {len(images)} images, fewer than the {count} asked for")
    for image in images[:count]:
        (staging / image.name).symlink_to(image.resolve())
    return staging


def _wanted_names(source: Path, count: int | None) -> list[str] | None:
    """File names of the plates the demo would use (None: not a folder of images, e.g. a video,
    which is copied in again each time)."""
    if not source.is_dir():
        return None
    return [p.name for p in _images(source)[:count]]


def _plate_names(shot: Shot) -> list[str] | None:
    try:
        return [p.name for p in shot.plate_files()]
    except InputError:  # the plates are gone or unreadable: make the shot again
        return None


def _merged(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in values.items():
        merged[key] = _merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def _save(shot: Shot, data: dict[str, Any]) -> Shot:
    config = config_from_dict(data, shot.toml_path)
    if config != shot.config:
        shot = shot.with_config(config)
        shot.save()
    return shot


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _print_usage() -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    _console().print(
        f"CPU time {cpu:.0f} s, peak memory {usage.ru_maxrss / 1024:.0f} MiB")

