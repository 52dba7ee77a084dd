"""The shot ``render`` stage: one multi-layer EXR per frame in ``render/``.

``render/frame.####.exr`` holds the ``[render] passes`` that :mod:`splatfx.render.layers`
names and writes (computed by :mod:`splatfx.render.passes`, motion-blurred by the shutter of
``[render] shutter``; the clean pass, when a structure was removed, by
:mod:`splatfx.render.cleanplate`).

Cameras come from :mod:`splatfx.render.cameras` (the plates' solve, or a virtual path), the
animated Gaussians from :func:`splatfx.fx.animation.load_animation`. The stage is skipped when
nothing changed; otherwise each frame whose EXR exists and was made from the same inputs,
settings and camera (recorded in ``.splatfx/render_frames.json``) is kept, so an
interrupted render resumes where it stopped. At a proxy (``[shot] proxy``) the frames are
rendered at that fraction of the size into ``proxy/<proxy>/render/``, recorded as the stage
``render@proxy-<proxy>`` with a ledger of their own (:meth:`Shot.stage_name`).

The frames left to render go out through :func:`splatfx.shot.farm.farm_out` as ``[farm]`` says
(in this process by default): a worker runs :func:`render_chunk`, which loads the animated
scene once per process and writes each EXR atomically; this process records each frame in
the ledger as its outputs come back.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from splatfx.core.camera import Camera
from splatfx.render.cleanplate import CleanPass, render_clean_pass
from splatfx.render.layers import FRAME_KEY_ATTRIBUTE, write_render_exr
from splatfx.shot.config import config_to_dict
from splatfx.core.errors import ConfigError, InputError
from splatfx.core.memory import USABLE_FRACTION, available_memory
from splatfx.shot.farm import FrameOutput, ProcessCache, farm_out, for_workers, with_farm
from splatfx.fx.animation import ShotAnimation, load_animation, load_frame, scene_path
from splatfx.shot.manifest import fingerprint
from splatfx.render.passes import Shutter, render_exposure
from splatfx.io.plates import ImagePlates, Plates
from splatfx.shot.folder import Shot, describe_size
from splatfx.render.cameras import DEFAULT_FOV_X_DEG, load_virtual_cameras, plate_cameras
from splatfx.shot.runner import FrameLedger, StageResult, frame_key, run_stage

#: The last clean pass rendered: its camera, the scene rows it left out, and the pass.
CleanCache = tuple[Camera, np.ndarray, CleanPass]


# --- inputs and cameras -----------------------------------------------------------------------------
def render_inputs(shot: Shot) -> dict[str, Path | list[Path]]:
    """The files the render depends on, by label (for the manifest and the frame keys)."""
    inputs: dict[str, Path | list[Path]] = {"scene": scene_path(shot)}
    solve_files = [p for p in (shot.sparse_model, shot.distorted_sparse_model, shot.solve_report, shot.scene_json)
                   if p.exists()]
    if solve_files:
        inputs["solve"] = solve_files
    effects = shot.config.fx.effects
    if "collapse" in effects:
        inputs["collapse"] = [shot.fx_dir / "selection.npz", shot.fx_dir / "collapse.npz"]
    if "snow" in effects:
        inputs["snow"] = shot.fx_dir / "snow.npz"
    section = shot.config.render
    if section.camera == "virtual" and section.virtual_camera is not None:
        inputs["virtual_camera"] = shot.path(section.virtual_camera)
    for label, paths in inputs.items():
        for p in [paths] if isinstance(paths, Path) else paths:
            if not p.exists():
                raise InputError(p, f"does not exist (needed to render; {_hint(label)})")
    return inputs


def _hint(label: str) -> str:
    return {"scene": "run `splatfx train` first", "collapse": "run `splatfx fx select` and `splatfx fx collapse`",
            "snow": "run `splatfx fx snow`"}.get(label, "check shot.toml")


def output_size(shot: Shot) -> tuple[int, int]:
    """The render size: the plates' size times ``[render] resolution_scale`` times ``[shot] proxy``."""
    return shot.render_size()


def shot_cameras(shot: Shot, size: tuple[int, int]) -> list[Camera]:
    """One camera per frame of the shot, at ``size``, as ``[render] camera`` asks."""
    section = shot.config.render
    frames = shot.frames
    if section.camera == "plates":
        with shot.open_plates() as plates:
            names = {f: p.name for f in plates.frames if (p := _plate_path(plates, f)) is not None}
        return plate_cameras(shot.solve_dir, frames, names, size)
    space = load_frame(shot) if shot.scene_json.is_file() else None
    width, height = size
    fx = width / (2.0 * np.tan(np.radians(DEFAULT_FOV_X_DEG) / 2.0))
    with contextlib.suppress(InputError):  # the plates' lens when there is a solve to read it from
        fx = plate_cameras(shot.solve_dir, frames, None, size)[0].fx
    return load_virtual_cameras(shot.path(section.virtual_camera), frames, space, width, height, fx)


def _plate_path(plates: Plates, frame: int) -> Path | None:
    return plates.path(frame) if isinstance(plates, ImagePlates) else None


def _camera_facts(camera: Camera | None) -> dict | None:
    if camera is None:
        return None
    return {"size": [camera.width, camera.height], "K": camera.K(), "R": camera.R, "t": camera.t,
            "dist": camera.dist}


# --- the stage --------------------------------------------------------------------------------------
def run_render(shot: Shot, *, force: bool = False) -> StageResult:
    """``splatfx render SHOT``: render every frame's passes into ``render/`` (``force``: the
    stage and every frame, even those up to date)."""
    settings = {"render": config_to_dict(shot.config.render), "effects": list(shot.config.fx.effects),
                "frames": str(shot.frames), "fps": shot.config.shot.fps, "proxy": shot.proxy}
    inputs = render_inputs(shot)
    check_memory(shot, output_size(shot))
    return run_stage(shot, shot.stage_name("render"), settings, inputs, [shot.render_dir],
                     lambda: render_frames(shot, inputs, settings, redo=force), force=force)


#: The render's working set per output pixel (passes, clean pass, EXR channels, the motion-blur
#: accumulators; the rasterizer's buffers are bounded by its 1 MP bands), and besides the frame
#: (interpreter, libraries, the animated scene, one band): fitted to the peaks
#: benchmarks/memory.py measures at 1536x1152 to 3328x2496 (docs/render_comp.md).
RENDER_BYTES_PER_PIXEL = 400.0
RENDER_FIXED_BYTES = 0.85 * 2**30


def check_memory(shot: Shot, size: tuple[int, int]) -> float:
    """The render's estimated peak at ``size`` = (width, height); ConfigError naming
    ``[render] resolution_scale`` and the largest value that fits, before any frame is
    rendered, when it exceeds the memory this machine has available."""
    width, height = size
    need = RENDER_FIXED_BYTES + RENDER_BYTES_PER_PIXEL * width * height
    budget = USABLE_FRACTION * available_memory()
    if need > budget:
        scale = shot.config.render.resolution_scale
        largest = scale * math.sqrt(max(budget - RENDER_FIXED_BYTES, 0.0) / (need - RENDER_FIXED_BYTES))
        raise ConfigError(f"{shot.toml_path} [render] resolution_scale",
                          f"{scale:g} renders {width}x{height} frames, which need about {need / 2**30:.1f} GiB, "
                          f"more than the {budget / 2**30:.1f} GiB available; the largest value that fits is "
                          f"{math.floor(largest * 1000) / 1000:g}")
    return need


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` torch (OpenMP) threads, restoring the setting afterwards.

    The rasterizer has its own thread pool; torch only evaluates SH and moves fragments
    here, on tensors too small to gain from more threads, and on a shared machine its
    spinning OpenMP threads slow those steps down many times over (measured: 0.3 s vs
    9.6 s per frame of animation with 2 threads under a load of 9 on 2 cores).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def render_frames(shot: Shot, inputs: dict[str, Path | list[Path]], settings: dict, redo: bool = False) -> dict:
    """Render each frame that is not already up to date (every frame with ``redo``); the
    stage's figures."""
    with torch_threads(1):
        return _render_frames(shot, inputs, settings, redo)


def _render_frames(shot: Shot, inputs: dict[str, Path | list[Path]], settings: dict, redo: bool) -> dict:
    ledger = FrameLedger(shot, shot.stage_name("render"))
    prints = {label: fingerprint(paths, ledger.cache)["sha256"] for label, paths in inputs.items()}
    seed = shot.config.shot.seed
    frames = list(shot.frames)
    full = shot.render_size(full=True)
    size = shot.scaled(full)
    cameras = shot_cameras(shot, size)
    gaps = set(shot.plate_gaps()) if shot.config.render.camera == "plates" else set()
    interpolated = _interpolated_frames(shot, frames, gaps)
    todo: dict[int, FrameJob] = {}
    for i, frame in enumerate(frames):
        if frame in gaps:  # no plate: nothing to match or composite over (index i keeps the timing)
            continue
        camera = cameras[i]
        following = cameras[i + 1] if i + 1 < len(frames) else None
        previous = cameras[i - 1] if i > 0 else None
        blur = {"previous_camera": _camera_facts(previous)} if shot.config.render.shutter > 0 else {}
        key = frame_key(stage="render", frame=frame, inputs=prints, settings=settings, seed=seed,
                        camera=_camera_facts(camera), next_camera=_camera_facts(following), **blur)
        if redo or not ledger.is_current(frame, key, [shot.render_frame(frame)]):
            todo[frame] = FrameJob(i, key, camera, following, previous)
    timings: dict[str, float] = {}
    most = 0
    blur_most = 1

    def record(frame: int, output: FrameOutput) -> None:
        nonlocal most, blur_most
        gaussians = output.info["gaussians"]
        samples = output.info.get("blur_samples", 1)
        ledger.record(frame, todo[frame].key, [shot.render_frame(frame)], {"gaussians": gaussians,
                                                                            "blur_samples": samples})
        most = max(most, gaussians)
        blur_most = max(blur_most, samples)
        for name, seconds in output.info["seconds"].items():
            timings[name] = timings.get(name, 0.0) + seconds

    shot.render_dir.mkdir(parents=True, exist_ok=True)
    try:
        job = RenderJob(for_workers(shot), prints, todo)
        farm = farm_out(sorted(todo), functools.partial(render_chunk, job), shot.config.farm, record,
                        description="rendering")
    finally:
        _ANIMATION.clear()  # the scene stays loaded only in workers, between their chunks
    ledger.prune([f for f in frames if f not in gaps], lambda f: [shot.render_frame(f)])
    extra = {"gaps": sorted(gaps)} if gaps else {}
    if interpolated:
        extra["cameras_interpolated"] = interpolated
    frames = [f for f in frames if f not in gaps]
    return {"frames": len(frames), **extra, "rendered": len(todo), "skipped": len(frames) - len(todo),
            **shot.size_figures(full), "gaussians_max": most, "blur_samples_max": blur_most, "seconds": {k: round(v, 3) for k, v in timings.items()},
            "farm": farm}


def _interpolated_frames(shot: Shot, frames: list[int], gaps: set[int]) -> list[int]:
    """The frames rendered through a camera interpolated between their neighbours' because
    the solve registered no camera of their own (``solve/report.json``), said on the console
    frame by frame, as the stage's figures record them."""
    if shot.config.render.camera != "plates" or not shot.solve_report.is_file():
        return []
    try:
        entries = json.loads(shot.solve_report.read_text(encoding="utf-8")).get("frames", [])
        unposed = {int(e["frame"]) for e in entries if e.get("frame") is not None and not e.get("registered", True)}
    except (ValueError, TypeError, AttributeError, KeyError):
        return []  # plate_cameras names a damaged report
    found = [f for f in frames if f in unposed and f not in gaps]
    if found:
        listed = ", ".join(map(str, found[:20])) + (f" and {len(found) - 20} more" if len(found) > 20 else "")
        Console(stderr=True, highlight=False).print(
            f"render: frame{'s' if len(found) > 1 else ''} {listed} of {shot.root} had no camera of "
            "their own in the solve: rendered through cameras interpolated between their neighbours'",
            soft_wrap=True)
    return found


@dataclass(frozen=True)
class FrameJob:
    """One frame to render: its index in the shot, its key, its camera, the next frame's and
    the previous frame's (the shutter opens before the frame's centre)."""

    index: int
    key: str
    camera: Camera
    following: Camera | None
    previous: Camera | None = None


@dataclass(frozen=True)
class RenderJob:
    """What a render worker needs, as plain picklable data: the shot (folder and settings),
    the inputs' hashes (which identify the animated scene) and the frames to render."""

    shot: Shot
    prints: dict[str, str]
    frames: dict[int, FrameJob]


#: The animated scene a worker process loaded, kept between the chunks it renders.
_ANIMATION = ProcessCache()


def render_chunk(job: RenderJob, frames: Sequence[int]) -> Iterator[tuple[int, FrameOutput]]:
    """Render ``frames`` of ``job`` (in a worker, or in this process): write each EXR
    atomically and yield ``(frame, its path and figures)`` as each is written."""
    shot = job.shot
    key = (str(shot.root.resolve()), json.dumps(job.prints, sort_keys=True), shot.config.fx.effects,
           len(shot.frames), shot.config.shot.fps)
    with torch_threads(1):
        animation = _ANIMATION.get(key, lambda: load_animation(shot))
        clean_cache: CleanCache | None = None
        for frame in frames:
            output, clean_cache = render_frame(shot, animation, frame, job.frames[frame], clean_cache)
            yield frame, output


def render_frame(shot: Shot, animation: ShotAnimation, frame: int, job: FrameJob,
                 clean_cache: CleanCache | None) -> tuple[FrameOutput, CleanCache | None]:
    """Render one frame's passes into its EXR; the clean pass is reused from ``clean_cache``
    (the previous frame's) when the camera and the removed pieces did not change. Returns
    the output and the cache."""
    passes = shot.config.render.passes
    timings: dict[str, float] = {}
    t = time.perf_counter()
    section = shot.config.render
    gaussians, layers, exposure = render_exposure(
        animation, job.index, job.camera, job.previous, job.following,
        Shutter(section.shutter, section.shutter_samples, camera=section.camera_blur))
    channels = layers.channels(passes)
    timings.update(exposure.seconds)
    _lap(timings, "passes", t)
    if "mask" in passes and gaussians.removed is not None:
        t = time.perf_counter()
        if clean_cache is None or not _same_camera(clean_cache[0], job.camera) or \
                not np.array_equal(clean_cache[1], gaussians.removed):
            clean_cache = (job.camera, gaussians.removed,
                           render_clean_pass(animation.scene, gaussians.removed, job.camera, animation.backdrop,
                                             animation.hidden))
        channels |= clean_cache[2].channels()
        _lap(timings, "clean", t)
    t = time.perf_counter()
    path = shot.render_frame(frame)
    write_render_exr(path, channels, frame=frame, fps=shot.config.shot.fps,
                     attributes={"splatfx/stage": "render", FRAME_KEY_ATTRIBUTE: job.key,
                                 "splatfx/seed": shot.config.shot.seed, "splatfx/gaussians": len(gaussians.gaussians)})
    _lap(timings, "write", t)
    return FrameOutput((str(path),), {"gaussians": len(gaussians.gaussians), "seconds": timings,
                                      "blur_samples": exposure.samples}), clean_cache


def _same_camera(a: Camera, b: Camera) -> bool:
    return (a.width, a.height, a.fx, a.fy, a.cx, a.cy) == (b.width, b.height, b.fx, b.fy, b.cx, b.cy) and \
        np.array_equal(a.R, b.R) and np.array_equal(a.t, b.t) and \
        (a.dist is None) == (b.dist is None) and (a.dist is None or np.array_equal(a.dist, b.dist))


def _lap(timings: dict[str, float], name: str, t0: float) -> None:
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def render_shot_command(shot_path: str | Path, *, force: bool = False, proxy: float | None = None,
                        **farm: Any) -> StageResult:
    """What ``splatfx render SHOT [--force] [--proxy P]`` runs: the stage (``proxy``: overriding
    ``[shot] proxy``; ``farm``: the farm flags, overriding ``[farm]``), then one summary line."""
    result = run_render(with_farm(Shot.open(shot_path).with_proxy(proxy), **farm), force=force)
    figures = result.record.figures if result.record else {}
    if result.ran and figures:
        Console(stderr=True).print(f"rendered {figures['rendered']} of {figures['frames']} frames "
                                   f"({figures['skipped']} up to date) at {describe_size(figures)}")
    return result
