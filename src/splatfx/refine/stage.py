"""The refine stage: diffusion clean-up of the rendered frames, only where they are synthetic.

Inputs: ``render/*.exr`` (one multi-layer EXR per frame, read by :mod:`splatfx.render.layers`:
``R,G,B,A`` premultiplied scene-linear, ``mask.synthetic``, ``motion.u``/``motion.v``,
``depth.Z`` and, where a structure was removed, the clean pass ``clean.R,G,B,A``,
``mask.structure``, ``mask.holes``) and a model (:func:`choose_model`). Output:
``refine/<same name>.exr``, each a copy of its render frame whose colour is refined where
``mask.synthetic`` is above 0 (and, with ``fill_holes``, whose clean pass is painted in
its holes); every other channel, and every other pixel, is written back bit for bit.

Per frame:

1. The colour is un-premultiplied and encoded with the sRGB curve (the space the models
   were trained in), clipped to [0, 1] for the model.
2. A strength map: ``[refine] strength`` on synthetic pixels, 0 elsewhere.
3. Noise from :class:`~splatfx.refine.noise_warp.NoiseWarper`: warped along the previous
   frame's motion vectors (restarted after a gap in the frame numbers).
4. The model's change is added back to the unclipped colour (so HDR values above 1 keep
   their excess), decoded to linear, re-premultiplied and blended in with a weight that is
   the mask ramped up over ``feather`` pixels inside the matte edge (zero outside).
5. With ``fill_holes``, the clean-plate holes (``mask.holes``: behind the removed structure,
   never seen by the reconstruction) are painted by the model instead of the comp's
   classical inpainting: the background the comp would build (plate, clean render, Telea
   fill; :func:`splatfx.render.cleanfill.fill_clean_plate`) is denoised from ``hole_strength``
   (1: from pure noise) in the holes only, and written into ``clean.R,G,B`` with
   ``clean.A = 1`` there, so the comp treats them as solid.

Frames are refined in batches of consecutive frames, and frames larger than ``[refine] tile``
in overlapping tiles (only those with synthetic pixels), the batch fitted to ``[refine]
memory`` and checked against the machine's memory before the first frame
(:mod:`splatfx.refine.tiles`, :func:`check_memory`); a frame already refined with the same
model, settings and render (a key stored in its header) is kept, so an interrupted stage
resumes where it stopped. The frames go out in chunks through :func:`splatfx.shot.farm.farm_out`
as ``[farm]`` says (one pass in this process by default); a chunk replays the noise warp
over the frames before it (:func:`refine_frames`), so every frame gets the noise, and the
bits, of one pass. :func:`run_refine_train` trains the built-in per-scene model first
(``--train``).

At a proxy (``[shot] proxy``) the proxy's render frames are refined into its own
``proxy/<proxy>/refine/``, recorded as ``refine@proxy-<proxy>``; the built-in model in
``refine/model`` serves every size.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rich.console import Console
from scipy import ndimage

from splatfx.core.color import linear_to_srgb, srgb_to_linear
from splatfx.core.errors import ConfigError, InputError
from splatfx.core.memory import MemoryCost, require_memory
from splatfx.shot.farm import FrameOutput, ProcessCache, farm_out, folder_stamp, for_workers
from splatfx.io.images import EXR_COMPRESSIONS, read_exr, write_exr
from splatfx.core.progress import subtask, track
from splatfx.refine.builtin import BuiltinRefiner, PairSettings, TrainSettings
from splatfx.refine.noise_warp import DEFAULT_FACTOR, NoiseWarper, motion_at
from splatfx.refine.base import Refiner
from splatfx.refine.hub import hub_name
from splatfx.refine.pipeline import load_refiner, model_kind, resolve_model
from splatfx.refine.tiles import BatchPlan, TileJob, count_tiles, fit_batch, frame_bytes, refine_tiles, refine_whole
from splatfx.render.cleanfill import fill_clean_plate, grow_footprint
from splatfx.render.layers import CLEAN, COLOUR, SYNTHETIC, RenderLayers, render_layers
from splatfx.shot.folder import Shot
from splatfx.shot.runner import StageResult, run_stage

PathLike = str | os.PathLike[str]
#: Frame number → the plate's scene-linear RGB (H, W, 3), for painting clean-plate holes.
PlateReader = Callable[[int], np.ndarray]
#: The render layers refine cannot do without.
NEEDED = (*COLOUR, SYNTHETIC)
KEY_ATTRIBUTE = "splatfx/refine_key"
_RESERVED = frozenset({"channels", "compression", "dataWindow", "displayWindow", "lineOrder", "pixelAspectRatio",
                       "screenWindowCenter", "screenWindowWidth", "type", "name", "tiles", "version", "chunkCount",
                       "frame", "framesPerSecond"})


@dataclass(frozen=True)
class RefineOptions:
    """How the frames are refined (each field but ``noise_factor`` is a ``[refine]`` key; see
    :func:`options_from_shot`)."""

    steps: int = 4  # DDIM steps on pixels of full strength
    strength: float = 0.3  # how far synthetic pixels may move from the render, 0-1
    seed: int = 0  # noise seed
    fill_holes: bool = False  # paint the clean plate's holes (mask.holes) with the model
    hole_strength: float = 1.0  # strength in the holes when filling them (1: from pure noise)
    feather: float = 2.0  # width in pixels of the blend ramp inside the matte edge
    batch: int = 4  # frames per model call
    tile: int = 512  # side of the tiles larger frames are refined in
    memory: float = 3.0  # GiB for the frames held and the model's tiles (see refine.tiles.fit_batch)
    noise_factor: int = DEFAULT_FACTOR  # sub-pixel samples per side when warping noise


# --- frames --------------------------------------------------------------------------------------

def render_frames(folder: PathLike) -> list[tuple[int, Path]]:
    """(frame number, path) of every EXR in ``folder``, in frame order; the number is the
    last integer in the file name (``frame.1001.exr`` → 1001)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "render folder does not exist (run `splatfx render` first)")
    frames = []
    for path in sorted(folder.glob("*.exr")):
        numbers = re.findall(r"\d+", path.stem)
        if not numbers:
            raise InputError(path, "has no frame number in its name")
        frames.append((int(numbers[-1]), path))
    if not frames:
        raise InputError(folder, "holds no EXR frames (run `splatfx render` first)")
    frames.sort()
    return frames


def frame_layers(path: Path, channels: dict[str, np.ndarray], header: Any = None) -> RenderLayers:
    """The layers of a render EXR's ``channels`` (InputError naming what refine needs and it lacks)."""
    return render_layers(path, channels, header.attributes if header is not None else None, NEEDED,
                         " that refine needs (render with the rgba and mask passes)")


def display_colour(layers: RenderLayers) -> np.ndarray:
    """Straight (un-premultiplied) sRGB-encoded colour, unclipped, H x W x 3."""
    safe = np.where(layers.alpha > 1e-6, layers.alpha, 1.0)[..., None]
    straight = np.where(layers.alpha[..., None] > 1e-6, layers.rgb / safe, 0.0)
    return linear_to_srgb(straight)


def blend_weight(synthetic: np.ndarray, feather: float) -> np.ndarray:
    """The mask ramped from 0 at the matte edge to itself ``feather`` pixels inside; 0 wherever
    the mask is 0, so plate pixels are never touched. Computed in the mask's bounding box
    grown by a pixel (the distances are the same: every pixel around the box is outside)."""
    inside = synthetic > 0
    if feather <= 0 or inside.all() or not inside.any():
        return np.where(inside, np.clip(synthetic, 0, 1), 0).astype(np.float32)
    box = _box(inside, 1)
    distance = ndimage.distance_transform_edt(inside[box])
    ramp = np.clip(distance / (feather + 1.0), 0.0, 1.0)
    weight = np.zeros(synthetic.shape, np.float32)
    weight[box] = (np.clip(synthetic[box], 0, 1) * ramp).astype(np.float32)
    return weight


def _box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice]:
    """The bounding box of ``mask``'s true pixels (at least one), grown by ``margin`` within the frame."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, h)),
            slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, w)))


def strength_map(layers: RenderLayers, options: RefineOptions) -> np.ndarray:
    """Per-pixel strength: ``strength`` on synthetic pixels, 0 elsewhere."""
    return np.where(layers.synthetic > 0, options.strength, 0.0).astype(np.float32)


def compose(layers: RenderLayers, before: np.ndarray, refined: np.ndarray, options: RefineOptions) -> np.ndarray:
    """Premultiplied linear RGB of the refined frame: the model's change added to the unclipped
    display colour, blended in by :func:`blend_weight`; pixels of weight 0 keep their bits."""
    weight = blend_weight(layers.synthetic, options.feather)
    out = np.array(layers.rgb, dtype=np.float32)
    if not (weight > 0).any():
        return out
    box = _box(weight > 0)  # the arithmetic, per pixel, only where something changes
    w, rgb, start = weight[box][..., None], layers.rgb[box], before[box]
    linear = srgb_to_linear(start + (refined[box] - np.clip(start, 0, 1))) * layers.alpha[box][..., None]
    out[box] = np.where(w > 0, rgb + w * (linear - rgb), rgb).astype(np.float32)
    return out


def fill_holes(refiner: Refiner, plate: np.ndarray, layers: RenderLayers, noise: torch.Tensor,
               options: RefineOptions, plan: BatchPlan | None = None) -> np.ndarray:
    """The clean pass (H, W, 4) with its holes painted by the model: the background the comp
    would build around them (plate, clean render, classical fill) denoised from
    ``hole_strength`` in the holes only, with alpha 1 there; other pixels keep their bits.
    Frames larger than a tile are painted in ``plan``'s tiles."""
    background = fill_clean_plate(plate, layers.clean, grow_footprint(layers.structure))
    holes = layers.holes > 0
    job = TileJob(np.clip(linear_to_srgb(background), 0, 1), np.where(holes, options.hole_strength, 0.0).astype(np.float32),
                  noise)
    if plan is None or plan.whole:
        painted = refine_whole(refiner, [job], options.steps, 1)[0]
    else:
        painted = refine_tiles(refiner, job, options.steps, plan)
    painted = srgb_to_linear(painted)
    clean = layers.clean.copy()
    clean[holes, :3] = painted[holes]
    clean[holes, 3] = 1.0
    return clean


# --- the sequence --------------------------------------------------------------------------------

@dataclass
class _Pending:
    number: int
    path: Path
    out: Path
    channels: dict[str, np.ndarray]
    header: Any
    layers: RenderLayers
    colour: np.ndarray
    noise: torch.Tensor
    key: str
    plate: np.ndarray | None  # scene-linear RGB, when the clean plate's holes are painted
    plan: BatchPlan


def refine_key(refiner: Refiner, options: RefineOptions, source: Path, plate: np.ndarray | None = None) -> str:
    """What an output frame was made from: model, settings, the render file's bytes (and the
    plate's pixels when holes are painted)."""
    digest = hashlib.sha256(json.dumps({"model": refiner.describe(), "options": asdict(options)},
                                       sort_keys=True, default=str).encode())
    digest.update(hashlib.sha256(source.read_bytes()).digest())
    if plate is not None:
        digest.update(hashlib.sha256(np.ascontiguousarray(plate).tobytes()).digest())
    return digest.hexdigest()[:32]


class NoiseTrack:
    """Each frame's noise as one pass over the sequence makes it: a new
    :class:`~splatfx.refine.noise_warp.NoiseWarper` (seed + frame number) at the first frame,
    after a gap in the frame numbers or when the noise shape changes; otherwise the previous
    frame's noise warped along that frame's motion (and depth)."""

    def __init__(self, refiner: Refiner, options: RefineOptions) -> None:
        self.refiner = refiner
        self.options = options
        self.warper: NoiseWarper | None = None
        self.previous: tuple[int, torch.Tensor | None, torch.Tensor | None] | None = None

    def advance(self, number: int, size: tuple[int, int], motion: np.ndarray | None,
                depth: np.ndarray | None) -> torch.Tensor:
        """The noise of frame ``number`` (``size`` = (H, W)); its ``motion`` and ``depth``
        carry the noise on to the next frame."""
        shape = self.refiner.noise_shape(*size)
        previous = self.previous
        if self.warper is None or self.warper.shape != shape or previous is None or number != previous[0] + 1:
            self.warper = NoiseWarper(shape, self.options.seed + number, factor=self.options.noise_factor)
        else:
            self.warper.step(previous[1] if previous[1] is not None else torch.zeros((*shape[1:], 2)), previous[2])
        self.previous = (number, *_noise_motion(motion, depth, shape, self.refiner.noise_scale))
        return self.warper.noise


def refine_frames(frames: Sequence[tuple[int, Path]], out_dir: PathLike, refiner: Refiner, options: RefineOptions,
                  plates: PlateReader | None = None, start: int = 0,
                  stop: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Refine ``frames[start:stop]`` of the sequence ``frames`` (from :func:`render_frames`)
    into ``out_dir``; yields ``(frame number, what was done)`` as each frame is written or
    found up to date. ``plates`` reads a frame's plate, to paint holes (``fill_holes``).

    Frames are refined in groups of ``options.batch`` consecutive positions in ``frames``,
    one model call per group (fewer frames when some are up to date or have nothing
    synthetic): a frame's batch, and so its bits (convolutions round differently with the
    batch's make-up), does not depend on where a farm chunk starts, as long as ``start`` is
    a multiple of the batch. From ``start > 0`` the noise warp is first replayed over the
    frames before it, back to the start of their run of consecutive frame numbers (motion
    and depth only, no model call): every frame's noise is exactly what one pass over the
    whole sequence gives it. This is why refine chunks replay the warp, at the cost of
    reading the earlier frames again.
    """
    if options.fill_holes and plates is None:
        raise ValueError("painting clean-plate holes needs the plates")
    out_dir = Path(out_dir)
    stop = len(frames) if stop is None else stop
    noise = NoiseTrack(refiner, options)
    for number, path in frames[_run_start(frames, start):start]:  # the replay: motion and depth only
        channels, _ = read_exr(path)
        replayed = render_layers(path, channels)
        noise.advance(number, next(iter(channels.values())).shape[:2], replayed.motion, replayed.depth)
    pending: list[_Pending] = []
    plans: dict[tuple[int, int, int], BatchPlan] = {}
    for position in range(start, stop):
        if position % options.batch == 0:
            yield from _flush(pending, refiner, options)
        number, path = frames[position]
        channels, header = read_exr(path)
        layers = frame_layers(path, channels, header)
        shape = (*layers.rgb.shape[:2], len(channels))
        if shape not in plans:
            plans[shape] = frame_plan(refiner, options, *shape)
        current = noise.advance(number, layers.rgb.shape[:2], layers.motion, layers.depth)
        out = out_dir / path.name
        paint = options.fill_holes and layers.has_holes
        plate = plates(number) if paint else None
        key = refine_key(refiner, options, path, plate)
        if _already_refined(out, key):
            yield number, {"done": "kept"}
            continue
        if not (layers.synthetic > 0).any() and not paint:
            _write_frame(out, channels, header, key)
            yield number, {"done": "untouched"}
            continue
        if pending and (pending[0].layers.rgb.shape != layers.rgb.shape or pending[0].plan != plans[shape]):
            yield from _flush(pending, refiner, options)
        pending.append(_Pending(number, path, out, channels, header, layers, display_colour(layers),
                                current.clone(), key, plate, plans[shape]))
        if len(pending) >= plans[shape].frames:  # as many as [refine] memory holds
            yield from _flush(pending, refiner, options)
    yield from _flush(pending, refiner, options)


def frame_plan(refiner: Refiner, options: RefineOptions, height: int, width: int, channels: int) -> BatchPlan:
    """How frames of this size are batched and tiled (:func:`splatfx.refine.tiles.fit_batch`)."""
    return fit_batch(refiner, height, width, channels, options.batch, options.tile, options.memory)


def _run_start(frames: Sequence[tuple[int, Path]], position: int) -> int:
    """First position of the run of consecutive frame numbers holding ``position`` (the noise
    restarts there)."""
    while position > 0 and frames[position - 1][0] == frames[position][0] - 1:
        position -= 1
    return position


class RefineTally:
    """The stage's figures, summed from what :func:`refine_frames` reports frame by frame."""

    def __init__(self, frames: int) -> None:
        self.counts = {"frames": frames, "refined": 0, "kept": 0, "untouched": 0, "holes_filled": 0}
        self.changes: dict[int, float] = {}

    def add(self, number: int, outcome: dict[str, Any]) -> None:
        self.counts[outcome["done"]] += 1
        self.counts["holes_filled"] += int(bool(outcome.get("holes_filled")))
        if outcome.get("change") is not None:
            self.changes[number] = outcome["change"]

    def figures(self) -> dict[str, Any]:
        """frames, refined, kept, untouched, holes_filled and the mean colour change on
        synthetic pixels (over the refined frames, in frame order)."""
        changes = [self.changes[n] for n in sorted(self.changes)]
        return {**self.counts, "mean_abs_change": float(np.mean(changes)) if changes else 0.0}


def refine_sequence(frames: Sequence[tuple[int, Path]], out_dir: PathLike, refiner: Refiner,
                    options: RefineOptions, progress: bool = True,
                    plates: PlateReader | None = None) -> dict[str, Any]:
    """Refine ``frames`` (from :func:`render_frames`) into ``out_dir`` in one pass (see
    :func:`refine_frames`); returns figures."""
    tally = RefineTally(len(frames))
    items = refine_frames(frames, out_dir, refiner, options, plates)
    for number, outcome in track(items, "refine", total=len(frames)) if progress else items:
        tally.add(number, outcome)
    return tally.figures()


def _noise_motion(motion: np.ndarray | None, depth: np.ndarray | None, shape: tuple[int, int, int],
                  cell: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """A frame's motion and depth on the noise grid (for warping to the next frame)."""
    if motion is None:
        return None, None
    return motion_at(torch.from_numpy(motion), shape[1:], cell, None if depth is None else torch.from_numpy(depth))


def _flush(pending: list[_Pending], refiner: Refiner, options: RefineOptions) -> Iterator[tuple[int, dict[str, Any]]]:
    """Refine the pending frames in one model call and write them (emptying ``pending``)."""
    batch = list(pending)
    pending.clear()
    if not batch:
        return
    plan = batch[0].plan
    jobs = [TileJob(np.clip(p.colour, 0, 1), strength_map(p.layers, options), p.noise) for p in batch]
    calls = sum(count_tiles(refiner, j.strength, plan) for j in jobs)
    with subtask(f"refine: {len(batch)} frame{'s' * (len(batch) > 1)}, {calls} tile{'s' * (calls > 1)}"
                 if not plan.whole else f"refine: {len(batch)} frame{'s' * (len(batch) > 1)}", calls) as advance:
        if plan.whole:
            refined = refine_whole(refiner, jobs, options.steps, plan.per_call, advance)
        else:
            refined = [refine_tiles(refiner, job, options.steps, plan, advance) for job in jobs]
    for p, result in zip(batch, refined):
        rgb = compose(p.layers, p.colour, result, options)
        channels = dict(p.channels)
        for i, name in enumerate(COLOUR):
            channels[name] = rgb[..., i]
        mask = p.layers.synthetic > 0
        change = float(np.abs(rgb - p.layers.rgb)[mask].mean()) if mask.any() else None
        if p.plate is not None:
            clean = fill_holes(refiner, p.plate, p.layers, p.noise, options, p.plan)
            for i, name in enumerate(CLEAN):
                channels[name] = clean[..., i]
        _write_frame(p.out, channels, p.header, p.key)
        yield p.number, {"done": "refined", "change": change, "holes_filled": p.plate is not None}


def _already_refined(out: Path, key: str) -> bool:
    if not out.is_file():
        return False
    try:
        _, header = read_exr(out)
    except InputError:
        return False
    return header.attributes.get(KEY_ATTRIBUTE) == key


def _write_frame(out: Path, channels: dict[str, np.ndarray], header: Any, key: str) -> None:
    """Write a frame with the render's pixel types, compression, frame number, rate and attributes."""
    attributes = {k: v for k, v in header.attributes.items()
                  if k not in _RESERVED and isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    attributes.update({"splatfx/stage": "refine", KEY_ATTRIBUTE: key})
    half = {name for name, kind in header.pixel_types.items() if kind == "half" and name in channels}
    compression = header.compression if header.compression in EXR_COMPRESSIONS else "zip"
    write_exr(out, channels, half=half, compression=compression, frame=header.frame, fps=header.fps,
              attributes=attributes)


# --- the shot stages -----------------------------------------------------------------------------

def builtin_model_dir(shot: Shot) -> Path:
    """``refine/model``: the built-in refiner trained on the shot (one for every proxy)."""
    return shot.refine_model_dir / "model"


def training_dir(shot: Shot) -> Path:
    return shot.refine_model_dir / "training"


def choose_model(shot: Shot, model: PathLike | None = None, trained: bool = False) -> Path:
    """The model folder to refine with: ``model`` (``--model``), the built-in model just
    trained (``--train``), or ``[refine] model`` (a folder inside the shot folder), in that
    order; each may instead be a Hugging Face hub id, resolved to its cached snapshot
    (:func:`splatfx.refine.pipeline.resolve_model`)."""
    if model is not None:
        return resolve_model(model)
    if trained:
        return builtin_model_dir(shot)
    if shot.config.refine.model is not None:
        setting = shot.config.refine.model
        try:
            return resolve_model(setting, shot.path(setting))
        except InputError as exc:
            if exc.source != setting:  # a problem of the hub id's, not of a folder
                raise
            raise ConfigError(f"{shot.toml_path} [refine] model", f"{setting!r}: {exc.problem}") from None
    raise InputError(shot.toml_path, "[refine] model is not set: set it (\"refine/model\" for the built-in "
                                     "refiner), or run `splatfx refine SHOT --train` or `--model DIR`")


def model_label(shot: Shot, folder: Path) -> str:
    """How the run records its model: ``owner/name@commit`` for a hub snapshot (a new revision
    reruns the stage, a moved cache does not), else the folder relative to the shot folder."""
    return hub_name(folder) or shot.relative(folder)


def options_from_shot(shot: Shot) -> RefineOptions:
    """:class:`RefineOptions` from ``[refine]`` (seed defaulting to ``[shot] seed``)."""
    s = shot.config.refine
    seed = s.seed if s.seed is not None else shot.config.shot.seed
    return RefineOptions(steps=s.steps, strength=s.strength, seed=seed, fill_holes=s.fill_holes,
                         hole_strength=s.hole_strength, feather=s.feather, batch=s.batch, tile=s.tile,
                         memory=s.memory)


def model_settings_from_shot(shot: Shot) -> dict[str, Any]:
    """How a local diffusers model is run (``prompt``, ``negative_prompt``, ``guidance``), from ``[refine]``."""
    s = shot.config.refine
    return {"prompt": s.prompt, "negative_prompt": s.negative_prompt, "guidance": s.guidance}


def training_from_shot(shot: Shot) -> tuple[TrainSettings, PairSettings]:
    """How the built-in refiner is trained, from ``[refine] train_*`` (seed: ``[shot] seed``)."""
    s = shot.config.refine
    settings = TrainSettings(max_steps=s.train_steps, max_minutes=s.train_minutes, patch=s.train_patch,
                             channels=tuple(s.train_widths), seed=shot.config.shot.seed)
    return settings, PairSettings(views=s.train_views)


def run_refine(shot: Shot, *, model: PathLike | None = None, trained: bool = False,
               options: RefineOptions | None = None, device: str = "auto",
               model_settings: dict[str, Any] | None = None, force: bool = False,
               progress: bool = True) -> StageResult:
    """``splatfx refine``: refine ``render/`` into ``refine/`` (see the module doc)."""
    options = options or options_from_shot(shot)
    folder = choose_model(shot, model, trained)
    model_settings = model_settings_from_shot(shot) if model_settings is None else dict(model_settings)
    if model_kind(folder) == "builtin":  # it has no prompt: its settings must not make it rerun
        model_settings = {}
    frames = render_frames(shot.render_dir)
    outputs = [shot.refine_dir / path.name for _, path in frames]
    config = {"model": model_label(shot, folder), **asdict(options), **model_settings}

    inputs: dict[str, Any] = {"render": shot.render_dir, "model": folder}
    if options.fill_holes:
        inputs["plates"] = shot.plate_files()

    def work() -> dict[str, Any]:
        _remove_stale(shot.refine_dir, {p.name for p in outputs})
        job = RefineJob(for_workers(shot), folder.resolve(), device, model_settings, options,
                        tuple((n, path.resolve()) for n, path in frames), torch.get_num_threads())
        tally, described = RefineTally(len(frames)), {}

        def record(number: int, output: FrameOutput) -> None:
            tally.add(number, output.info)
            described.update(output.info["refiner"])

        try:  # the plan and its memory check first; chunks hold whole batches (as in one pass)
            plan = check_memory(shot, job, progress)
            farm = farm_out([n for n, _ in frames], functools.partial(refine_chunk, job), shot.config.farm, record,
                            description="refine", chunk_multiple=options.batch, progress=progress)
        finally:
            _REFINER.clear()  # the model stays loaded only in workers, between their chunks
        return {**tally.figures(), **shot.size_figures(shot.render_size(full=True)), "refiner": described,
                "farm": farm, "memory_plan": asdict(plan)}

    return run_stage(shot, shot.stage_name("refine"), config, inputs=inputs, outputs=outputs, fn=work, force=force, seed=options.seed)


@dataclass(frozen=True)
class RefineJob:
    """What a refine worker needs, as plain picklable data: the shot (folder and settings),
    the model folder and how to run it, the options, the whole sequence of render frames (a
    chunk replays the noise warp over the frames before it) and this process's torch thread
    count, which the workers use too (convolutions round differently with the thread count)."""

    shot: Shot
    model: Path
    device: str
    model_settings: dict[str, Any]
    options: RefineOptions
    frames: tuple[tuple[int, Path], ...]
    threads: int


#: The model a worker process loaded, kept between the chunks it refines.
_REFINER = ProcessCache()

#: Memory of the process besides the stage's working set (interpreter, torch, the model), for the check.
PROCESS_BYTES = 0.6 * 2**30


def check_memory(shot: Shot, job: RefineJob, say: bool = True) -> BatchPlan:
    """The batch plan for the shot's render frames (:func:`splatfx.refine.tiles.fit_batch`),
    checked before any frame is refined: ConfigError naming ``[refine] batch`` (frames refined
    whole) or ``[refine] memory`` (tiled frames) and the largest value that fits, when the plan
    would not fit in this machine's available memory. ``say``: print the plan, and a note when
    it refines fewer frames per call than ``[refine] batch``."""
    channels, header = read_exr(job.frames[0][1])  # the header alone does not list the channels
    count = len(channels)
    del channels
    refiner = _REFINER.get(_model_key(job), lambda: load_refiner(job.model, device=job.device, **job.model_settings))
    options = job.options
    plan = fit_batch(refiner, header.height, header.width, count, options.batch, options.tile,
                     options.memory, f"{shot.toml_path} [refine]")
    if plan.whole:
        held, transient = frame_bytes(header.height, header.width, count)
        unit = held + plan.height * plan.width * refiner.bytes_per_pixel()
        cost = MemoryCost(f"{shot.toml_path} [refine] batch", min(plan.frames, len(job.frames)), unit)
        require_memory([cost], fixed=transient + PROCESS_BYTES, what="refine")
    else:
        cost = MemoryCost(f"{shot.toml_path} [refine] memory", options.memory, plan.bytes / options.memory)
        require_memory([cost], fixed=PROCESS_BYTES, what="refine")
    if say:
        console = Console(stderr=True)
        if isinstance(refiner, BuiltinRefiner):
            steps = min(options.steps, refiner.sampling_steps or options.steps)
            console.print(f"refine: the built-in per-scene sharpening pass, {steps} step{'s' if steps > 1 else ''} "
                          "(a learnt filter, not a generative model: docs/refine.md)")
        console.print(f"refine: {plan.describe()} (\\[refine] memory = {options.memory:g} GiB)")
        if plan.whole and plan.frames < options.batch:
            console.print(f"refine: \\[refine] batch = {options.batch} frames do not fit in \\[refine] memory = "
                          f"{options.memory:g} GiB at {plan.width}x{plan.height}: {plan.frames} per model call")
    return plan


def _model_key(job: RefineJob) -> tuple:
    """What identifies a loaded model in :data:`_REFINER` (as :func:`refine_chunk` keys it)."""
    return (str(job.model), folder_stamp(job.model), job.device, json.dumps(job.model_settings, sort_keys=True))


def refine_chunk(job: RefineJob, chunk: Sequence[int]) -> Iterator[tuple[int, FrameOutput]]:
    """Refine the consecutive frames ``chunk`` of ``job`` (in a worker, or in this process):
    :func:`refine_frames` from the chunk's position in the sequence, with the model loaded
    once per process; yields ``(frame, its output and what was done)`` frame by frame."""
    numbers = [n for n, _ in job.frames]
    start = numbers.index(chunk[0])
    if numbers[start:start + len(chunk)] != list(chunk):
        raise ValueError(f"refine chunk {list(chunk)} is not a run of the sequence's frames")
    names = dict(job.frames)
    threads = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        key = (str(job.model), folder_stamp(job.model), job.device, json.dumps(job.model_settings, sort_keys=True))
        refiner = _REFINER.get(key, lambda: load_refiner(job.model, device=job.device, **job.model_settings))
        described = refiner.describe()
        with job.shot.open_plates() if job.options.fill_holes else contextlib.nullcontext() as plates:
            size = None if plates is None else job.shot.scaled((plates.width, plates.height))
            reader = None if plates is None else (
                lambda frame: plate_linear(plates.read(frame), plates.encoding, size))
            for number, outcome in refine_frames(job.frames, job.shot.refine_dir, refiner, job.options, reader,
                                                 start, start + len(chunk)):
                yield number, FrameOutput((str(job.shot.refine_dir / names[number].name),),
                                          {**outcome, "refiner": described})
    finally:
        torch.set_num_threads(threads)


def plate_linear(pixels: np.ndarray, encoding: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """A plate frame's scene-linear RGB (grey repeated, alpha dropped), as the comp decodes it,
    area-averaged to ``size`` (a proxy's) when given, as the comp does."""
    rgb = pixels[..., :3] if pixels.shape[2] >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    linear = srgb_to_linear(rgb) if encoding == "srgb" else rgb
    if size is not None and size != (linear.shape[1], linear.shape[0]):
        linear = cv2.resize(linear, size, interpolation=cv2.INTER_AREA)
    return linear


def _remove_stale(folder: Path, keep: set[str]) -> None:
    """Delete refined frames whose render frame is gone (refine/ holds only current frames)."""
    if not folder.is_dir():
        return
    for path in folder.glob("*.exr"):
        if path.name not in keep:
            path.unlink()


def _early_checkpoints(scene_dir: Path, most: int = 2) -> list[Any]:
    """Gaussians of the training checkpoints older than the newest (degraded reconstructions)."""
    from splatfx.io.checkpoint import gaussians_from_params, list_checkpoints, load_checkpoint

    found = list_checkpoints(scene_dir / "checkpoints")[:-1]
    return [gaussians_from_params(load_checkpoint(path).params) for _, path in found[:most]]


#: Bytes the built-in refiner's training pairs may hold together (float32 render and plate).
PAIR_MEMORY_BYTES = 1 << 30


def pair_dataset(shot: Shot, pairs: PairSettings) -> tuple[Any, float]:
    """The shot's solved plates at the size the refiner's training pairs are rendered at
    (:func:`pair_downscale`, ``[refine] train_size``), and the factor they were shrunk by;
    says the size on the console."""
    from splatfx.io.dataset import load_dataset

    dataset = load_dataset(shot.solve_dir, split="all")
    plate_w, plate_h = dataset.frames[0].source_size
    count = min(len(dataset), pairs.views) * (1 + pairs.degraded_per_view)  # make_pairs' renders
    factor = pair_downscale((plate_w, plate_h), shot.config.refine.train_size, count)
    if factor > 1:
        dataset = dataset.downscaled(factor)
    camera = dataset.frames[0].camera
    scale = f"plates {plate_w}x{plate_h} ÷ {factor:g}" if factor > 1 else "the plates' size"
    Console(stderr=True, highlight=False).print(
        f"refine-train: per-scene sharpening, {count} training pairs at {camera.width}x{camera.height} ({scale})")
    return dataset, factor


def pair_downscale(plate_size: tuple[int, int], longest: int, count: int,
                   budget: int = PAIR_MEMORY_BYTES) -> float:
    """The factor the plates are shrunk by for the refiner's training pairs: their longer side
    at most ``longest`` pixels, and ``count`` pairs (a float32 RGB render and plate each)
    within ``budget`` bytes. 1 when the plates already fit. Rounded up to a quarter, so the
    same plates always give the same size."""
    width, height = plate_size
    by_side = max(width, height) / longest
    by_memory = math.sqrt(count * width * height * 2 * 3 * 4 / budget)
    factor = max(1.0, by_side, by_memory)
    return 1.0 if factor <= 1.0 else math.ceil(factor * 4) / 4


def run_refine_train(shot: Shot, *, force: bool = False, device: str = "auto") -> StageResult:
    """``splatfx refine --train``: train the built-in per-scene sharpening pass on the shot's own scene and
    plates, as ``[refine] train_*`` say, resuming its checkpoint in ``refine/training/`` when one is there."""
    from splatfx.io.formats import read_gaussians
    from splatfx.refine.builtin import make_pairs, train_refiner

    settings, pairs = training_from_shot(shot)
    scene_path = shot.scene_ply
    if not scene_path.is_file():
        raise InputError(scene_path, "scene.ply does not exist (run `splatfx train` first)")
    config = {"training": asdict(settings), "pairs": asdict(pairs), "pair_size": shot.config.refine.train_size}

    def work() -> dict[str, Any]:
        scene = read_gaussians(scene_path)
        dataset, factor = pair_dataset(shot, pairs)
        width, height = dataset.frames[0].camera.width, dataset.frames[0].camera.height
        early = _early_checkpoints(shot.scene_dir)
        training_pairs = make_pairs(scene, dataset, pairs, early=early, seed=settings.seed)
        _, figures = train_refiner(training_pairs, builtin_model_dir(shot), training_dir(shot), settings,
                                   key=f"{_file_digest(scene_path)}@{width}x{height}", device=device)
        return {**figures, "pair_size": [width, height], "pair_downscale": factor}

    return run_stage(shot, "refine-train", config, inputs={"scene": scene_path, "solve": shot.solve_dir},
                     outputs=[builtin_model_dir(shot)], fn=work, force=force, seed=settings.seed)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
