"""The refine stage: diffusion clean-up of the rendered frames, only where they are synthetic.

Inputs: ``render/*.exr`` (one multi-layer EXR per frame, :mod:`splatfx.render_shot`:
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
   fill; :func:`splatfx.cleanplate.fill_clean_plate`) is denoised from ``hole_strength``
   (1: from pure noise) in the holes only, and written into ``clean.R,G,B`` with
   ``clean.A = 1`` there, so the comp treats them as solid.

Frames are refined in batches; a frame already refined with the same model, settings and
render (a key stored in its header) is kept, so an interrupted stage resumes where it
stopped. :func:`run_refine_train` trains the built-in per-scene model first (``--train``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from splatfx.cleanplate import fill_clean_plate, grow_footprint
from splatfx.color import linear_to_srgb, srgb_to_linear
from splatfx.errors import InputError
from splatfx.imageio import EXR_COMPRESSIONS, read_exr, write_exr
from splatfx.progress import track
from splatfx.refine.builtin import PairSettings, TrainSettings
from splatfx.refine.noise_warp import DEFAULT_FACTOR, NoiseWarper, motion_at
from splatfx.refine.pipeline import Refiner, load_refiner, model_kind
from splatfx.shot import Shot
from splatfx.stage import StageResult, run_stage

PathLike = str | os.PathLike[str]
#: Frame number → the plate's scene-linear RGB (H, W, 3), for painting clean-plate holes.
PlateReader = Callable[[int], np.ndarray]
SYNTHETIC = "mask.synthetic"
HOLES = "mask.holes"
STRUCTURE = "mask.structure"
CLEAN = ("clean.R", "clean.G", "clean.B", "clean.A")
MOTION = ("motion.u", "motion.v")
DEPTH = "depth.Z"
COLOUR = ("R", "G", "B")
KEY_ATTRIBUTE = "splatfx/refine_key"
_RESERVED = frozenset({"channels", "compression", "dataWindow", "displayWindow", "lineOrder", "pixelAspectRatio",
                       "screenWindowCenter", "screenWindowWidth", "type", "name", "tiles", "version", "chunkCount",
                       "frame", "framesPerSecond"})


@dataclass(frozen=True)
class RefineOptions:
    """How the frames are refined (``steps``, ``strength``, ``seed`` come from ``[refine]``)."""

    steps: int = 20  # DDIM steps on pixels of full strength
    strength: float = 0.3  # how far synthetic pixels may move from the render, 0-1
    seed: int = 0  # noise seed
    fill_holes: bool = False  # paint the clean plate's holes (mask.holes) with the model
    hole_strength: float = 1.0  # strength in the holes when filling them (1: from pure noise)
    feather: float = 2.0  # width in pixels of the blend ramp inside the matte edge
    batch: int = 4  # frames per model call
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


@dataclass
class FrameLayers:
    """What refinement needs from one render EXR (float32 arrays, H x W [x C])."""

    rgb: np.ndarray  # premultiplied, scene-linear
    alpha: np.ndarray
    synthetic: np.ndarray
    motion: np.ndarray | None  # (H, W, 2) pixels to the next frame
    depth: np.ndarray | None
    clean: np.ndarray | None = None  # (H, W, 4) clean pass, premultiplied, when a structure was removed
    structure: np.ndarray | None = None  # its footprint in the plate
    holes: np.ndarray | None = None  # where the clean render has nothing to show

    @property
    def has_holes(self) -> bool:
        return self.clean is not None and self.holes is not None and bool((self.holes > 0).any())


def frame_layers(path: Path, channels: dict[str, np.ndarray]) -> FrameLayers:
    """Pick the layers out of a render EXR's channels (InputError naming what is missing)."""
    missing = [c for c in (*COLOUR, SYNTHETIC) if c not in channels]
    if missing:
        raise InputError(path, f"lacks the channels {', '.join(missing)} that refine needs (render with the "
                               "rgba and mask passes)")
    rgb = np.stack([channels[c] for c in COLOUR], axis=-1).astype(np.float32)
    alpha = channels["A"].astype(np.float32) if "A" in channels else np.ones(rgb.shape[:2], np.float32)
    motion = np.stack([channels[c] for c in MOTION], axis=-1).astype(np.float32) \
        if all(c in channels for c in MOTION) else None
    layers = FrameLayers(rgb, alpha, channels[SYNTHETIC].astype(np.float32), motion,
                         channels[DEPTH].astype(np.float32) if DEPTH in channels else None)
    if all(c in channels for c in (*CLEAN, STRUCTURE, HOLES)):
        layers.clean = np.stack([channels[c] for c in CLEAN], axis=-1).astype(np.float32)
        layers.structure = channels[STRUCTURE].astype(np.float32)
        layers.holes = channels[HOLES].astype(np.float32)
    return layers


def display_colour(layers: FrameLayers) -> np.ndarray:
    """Straight (un-premultiplied) sRGB-encoded colour, unclipped, H x W x 3."""
    safe = np.where(layers.alpha > 1e-6, layers.alpha, 1.0)[..., None]
    straight = np.where(layers.alpha[..., None] > 1e-6, layers.rgb / safe, 0.0)
    return linear_to_srgb(straight)


def blend_weight(synthetic: np.ndarray, feather: float) -> np.ndarray:
    """The mask ramped from 0 at the matte edge to itself ``feather`` pixels inside; 0 wherever
    the mask is 0, so plate pixels are never touched."""
    inside = synthetic > 0
    if feather <= 0 or inside.all() or not inside.any():
        return np.where(inside, np.clip(synthetic, 0, 1), 0).astype(np.float32)
    distance = ndimage.distance_transform_edt(inside)
    ramp = np.clip(distance / (feather + 1.0), 0.0, 1.0)
    return (np.clip(synthetic, 0, 1) * ramp).astype(np.float32)


def strength_map(layers: FrameLayers, options: RefineOptions) -> np.ndarray:
    """Per-pixel strength: ``strength`` on synthetic pixels, 0 elsewhere."""
    return np.where(layers.synthetic > 0, options.strength, 0.0).astype(np.float32)


def compose(layers: FrameLayers, before: np.ndarray, refined: np.ndarray, options: RefineOptions) -> np.ndarray:
    """Premultiplied linear RGB of the refined frame: the model's change added to the unclipped
    display colour, blended in by :func:`blend_weight`; pixels of weight 0 keep their bits."""
    weight = blend_weight(layers.synthetic, options.feather)
    changed = before + (refined - np.clip(before, 0, 1))
    linear = srgb_to_linear(changed) * layers.alpha[..., None]
    mixed = layers.rgb + weight[..., None] * (linear - layers.rgb)
    return np.where(weight[..., None] > 0, mixed, layers.rgb).astype(np.float32)


def fill_holes(refiner: Refiner, plate: np.ndarray, layers: FrameLayers, noise: torch.Tensor,
               options: RefineOptions) -> np.ndarray:
    """The clean pass (H, W, 4) with its holes painted by the model: the background the comp
    would build around them (plate, clean render, classical fill) denoised from
    ``hole_strength`` in the holes only, with alpha 1 there; other pixels keep their bits."""
    background = fill_clean_plate(plate, layers.clean, grow_footprint(layers.structure))
    image = torch.from_numpy(np.clip(linear_to_srgb(background), 0, 1)).permute(2, 0, 1)[None]
    holes = layers.holes > 0
    strength = torch.from_numpy(np.where(holes, options.hole_strength, 0.0).astype(np.float32))[None, None]
    painted = srgb_to_linear(refiner.refine(image, strength, noise[None], options.steps)[0].permute(1, 2, 0).numpy())
    clean = layers.clean.copy()
    clean[holes, :3] = painted[holes]
    clean[holes, 3] = 1.0
    return clean


# --- the sequence --------------------------------------------------------------------------------

@dataclass
class _Pending:
    path: Path
    out: Path
    channels: dict[str, np.ndarray]
    header: Any
    layers: FrameLayers
    colour: np.ndarray
    noise: torch.Tensor
    key: str
    plate: np.ndarray | None  # scene-linear RGB, when the clean plate's holes are painted


def refine_key(refiner: Refiner, options: RefineOptions, source: Path, plate: np.ndarray | None = None) -> str:
    """What an output frame was made from: model, settings, the render file's bytes (and the
    plate's pixels when holes are painted)."""
    digest = hashlib.sha256(json.dumps({"model": refiner.describe(), "options": asdict(options)},
                                       sort_keys=True, default=str).encode())
    digest.update(hashlib.sha256(source.read_bytes()).digest())
    if plate is not None:
        digest.update(hashlib.sha256(np.ascontiguousarray(plate).tobytes()).digest())
    return digest.hexdigest()[:32]


def refine_sequence(frames: Sequence[tuple[int, Path]], out_dir: PathLike, refiner: Refiner,
                    options: RefineOptions, progress: bool = True,
                    plates: PlateReader | None = None) -> dict[str, Any]:
    """Refine ``frames`` (from :func:`render_frames`) into ``out_dir``; returns figures.
    ``plates`` reads the plate of a frame, needed to paint holes (``options.fill_holes``)."""
    if options.fill_holes and plates is None:
        raise ValueError("painting clean-plate holes needs the plates")
    out_dir = Path(out_dir)
    warper: NoiseWarper | None = None
    previous: tuple[int, torch.Tensor | None, torch.Tensor | None] | None = None
    pending: list[_Pending] = []
    figures = {"frames": len(frames), "refined": 0, "kept": 0, "untouched": 0, "holes_filled": 0,
               "mean_abs_change": []}
    items = track(frames, "refine") if progress else frames
    for number, path in items:
        channels, header = read_exr(path)
        layers = frame_layers(path, channels)
        shape = refiner.noise_shape(*layers.rgb.shape[:2])
        if warper is None or warper.shape != shape or previous is None or number != previous[0] + 1:
            warper = NoiseWarper(shape, options.seed + number, factor=options.noise_factor)
        else:
            warper.step(previous[1] if previous[1] is not None else torch.zeros((*shape[1:], 2)), previous[2])
        previous = (number, *_noise_motion(layers, shape, refiner.noise_scale))
        out = out_dir / path.name
        paint = options.fill_holes and layers.has_holes
        plate = plates(number) if paint else None
        key = refine_key(refiner, options, path, plate)
        if _already_refined(out, key):
            figures["kept"] += 1
            continue
        if not (layers.synthetic > 0).any() and not paint:
            _write_frame(out, channels, header, key)
            figures["untouched"] += 1
            continue
        if pending and pending[0].layers.rgb.shape != layers.rgb.shape:
            _flush(pending, refiner, options, figures)
        pending.append(_Pending(path, out, channels, header, layers, display_colour(layers),
                                warper.noise.clone(), key, plate))
        if len(pending) >= options.batch:
            _flush(pending, refiner, options, figures)
    _flush(pending, refiner, options, figures)
    changes = figures.pop("mean_abs_change")
    figures["mean_abs_change"] = float(np.mean(changes)) if changes else 0.0
    return figures


def _noise_motion(layers: FrameLayers, shape: tuple[int, int, int],
                  cell: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """This frame's motion and depth on the noise grid (for warping to the next frame)."""
    if layers.motion is None:
        return None, None
    depth = None if layers.depth is None else torch.from_numpy(layers.depth)
    return motion_at(torch.from_numpy(layers.motion), shape[1:], cell, depth)


def _flush(pending: list[_Pending], refiner: Refiner, options: RefineOptions, figures: dict[str, Any]) -> None:
    """Refine the pending frames in one model call and write them."""
    if not pending:
        return
    images = torch.stack([torch.from_numpy(np.clip(p.colour, 0, 1)).permute(2, 0, 1) for p in pending])
    strength = torch.stack([torch.from_numpy(strength_map(p.layers, options))[None] for p in pending])
    noise = torch.stack([p.noise for p in pending])
    refined = refiner.refine(images, strength, noise, options.steps).permute(0, 2, 3, 1).numpy()
    for p, result in zip(pending, refined):
        rgb = compose(p.layers, p.colour, result, options)
        channels = dict(p.channels)
        for i, name in enumerate(COLOUR):
            channels[name] = rgb[..., i]
        mask = p.layers.synthetic > 0
        if mask.any():
            figures["mean_abs_change"].append(float(np.abs(rgb - p.layers.rgb)[mask].mean()))
        if p.plate is not None:
            clean = fill_holes(refiner, p.plate, p.layers, p.noise, options)
            for i, name in enumerate(CLEAN):
                channels[name] = clean[..., i]
            figures["holes_filled"] += 1
        _write_frame(p.out, channels, p.header, p.key)
        figures["refined"] += 1
    pending.clear()


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
    return shot.refine_dir / "model"


def training_dir(shot: Shot) -> Path:
    return shot.refine_dir / "training"


def choose_model(shot: Shot, model: PathLike | None = None, trained: bool = False) -> Path:
    """The model folder to refine with: ``model`` (``--model``), the built-in model just
    trained (``--train``), or ``[refine] model``, in that order."""
    if model is not None:
        return Path(model)
    if trained:
        return builtin_model_dir(shot)
    if shot.config.refine.model is not None:
        return shot.path(shot.config.refine.model)
    raise InputError(shot.toml_path, "[refine] model is not set: set it (\"refine/model\" for the built-in "
                                     "refiner), or run `splatfx refine SHOT --train` or `--model DIR`")


def options_from_shot(shot: Shot, **overrides: Any) -> RefineOptions:
    """:class:`RefineOptions` from ``[refine]`` (seed defaulting to ``[shot] seed``) and overrides."""
    section = shot.config.refine
    seed = section.seed if section.seed is not None else shot.config.shot.seed
    options = RefineOptions(steps=section.steps, strength=section.strength, seed=seed)
    return replace(options, **{k: v for k, v in overrides.items() if v is not None})


def run_refine(shot: Shot, *, model: PathLike | None = None, trained: bool = False,
               options: RefineOptions | None = None, device: str = "auto",
               model_settings: dict[str, Any] | None = None, force: bool = False,
               progress: bool = True) -> StageResult:
    """``splatfx refine``: refine ``render/`` into ``refine/`` (see the module doc)."""
    options = options or options_from_shot(shot)
    folder = choose_model(shot, model, trained)
    model_kind(folder)
    model_settings = dict(model_settings or {})
    frames = render_frames(shot.render_dir)
    outputs = [shot.refine_dir / path.name for _, path in frames]
    config = {"model": shot.relative(folder), **asdict(options), **model_settings}

    inputs: dict[str, Any] = {"render": shot.render_dir, "model": folder}
    if options.fill_holes:
        inputs["plates"] = shot.plate_files()

    def work() -> dict[str, Any]:
        refiner = load_refiner(folder, device=device, **model_settings)
        _remove_stale(shot.refine_dir, {p.name for p in outputs})
        with shot.open_plates() if options.fill_holes else contextlib.nullcontext() as plates:
            reader = None if plates is None else (lambda frame: plate_linear(plates.read(frame), plates.encoding))
            figures = refine_sequence(frames, shot.refine_dir, refiner, options, progress=progress, plates=reader)
        return {**figures, "refiner": refiner.describe()}

    return run_stage(shot, "refine", config, inputs=inputs, outputs=outputs, fn=work, force=force, seed=options.seed)


def plate_linear(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """A plate frame's scene-linear RGB (grey repeated, alpha dropped), as the comp decodes it."""
    rgb = pixels[..., :3] if pixels.shape[2] >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    return srgb_to_linear(rgb) if encoding == "srgb" else rgb


def _remove_stale(folder: Path, keep: set[str]) -> None:
    """Delete refined frames whose render frame is gone (refine/ holds only current frames)."""
    if not folder.is_dir():
        return
    for path in folder.glob("*.exr"):
        if path.name not in keep:
            path.unlink()


def _early_checkpoints(scene_dir: Path, most: int = 2) -> list[Any]:
    """Gaussians of the training checkpoints older than the newest (degraded reconstructions)."""
    from splatfx.checkpoint import list_checkpoints, load_checkpoint
    from splatfx.train import gaussians_from_params

    found = list_checkpoints(scene_dir / "checkpoints")[:-1]
    return [gaussians_from_params(load_checkpoint(path).params) for _, path in found[:most]]


def run_refine_train(shot: Shot, settings: TrainSettings | None = None, pairs: PairSettings | None = None, *,
                     device: str = "auto", force: bool = False) -> StageResult:
    """``splatfx refine --train``: train the built-in refiner on the shot's own scene and plates,
    resuming its checkpoint in ``refine/training/`` when one is there."""
    from splatfx.dataset import load_dataset
    from splatfx.formats import read_gaussians
    from splatfx.refine.builtin import make_pairs, train_refiner

    settings = settings or TrainSettings(seed=shot.config.shot.seed)
    pairs = pairs or PairSettings()
    scene_path = shot.scene_dir / "scene.ply"
    if not scene_path.is_file():
        raise InputError(scene_path, "scene.ply does not exist (run `splatfx train` first)")
    config = {"training": asdict(settings), "pairs": asdict(pairs)}

    def work() -> dict[str, Any]:
        scene = read_gaussians(scene_path)
        dataset = load_dataset(shot.solve_dir, split="all")
        early = _early_checkpoints(shot.scene_dir)
        training_pairs = make_pairs(scene, dataset, pairs, early=early, seed=settings.seed)
        _, figures = train_refiner(training_pairs, builtin_model_dir(shot), training_dir(shot), settings,
                                   key=_file_digest(scene_path), device=device)
        return figures

    return run_stage(shot, "refine-train", config, inputs={"scene": scene_path, "solve": shot.solve_dir},
                     outputs=[builtin_model_dir(shot)], fn=work, force=force, seed=settings.seed)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
