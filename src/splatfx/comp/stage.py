"""The ``comp`` stage: the rendered effect composited into the plates.

Per frame, in scene-linear light (plates decoded from sRGB unless they are EXR):

1. ``F`` = the structure's footprint in the plate (``mask.structure``, held out by real
   objects in front of it), doubled, grown by 2 px and softened
   (:func:`splatfx.render.cleanfill.grow_footprint`);
2. background ``B = P·(1 − F) + clean·F``: the plate with the structure replaced by the
   clean plate (clean render over an inpainted backing, :func:`~splatfx.render.cleanfill.fill_clean_plate`);
3. ``out = fx + (1 − S)·B``: the effect's elements (``fx.R,G,B``, premultiplied, alpha
   ``S = mask.synthetic``) over it. Static Gaussians occluded the effect in the same render,
   so real foreground stays in front;
4. light wrap: the blurred background bleeds over the inner edge of ``S``;
5. grain: Gaussian noise (seeded per frame) with the plates' own per-channel noise level
   (measured in flat regions of up to 5 frames, in display code values) times ``[comp] grain``
   times ``1 − (1 − S)(1 − F)``, the synthetic share.

Where that share is 0 the output *is* the plate, bit for bit (EXR: its linear decode;
PNG from 8-bit sRGB plates: its codes). Outputs in ``comp/``: ``comp.####.exr``
(``R,G,B`` float + ``mask.synthetic``), ``comp.####.png`` (display), ``shot.mp4`` and
``review.mp4`` (plate | comp, H.264), ``contact_sheet.png``. Display encoding is the sRGB
curve, or an OCIO config's default display and view when ``[comp] ocio`` is set
(:mod:`splatfx.comp.display`). The render frames are read through :mod:`splatfx.render.layers`.

At a proxy (``[shot] proxy``) the comp works at that fraction of the plates' size: each plate
is area-averaged to it in linear light, and the render, refined and comp frames are the
proxy's (``proxy/<proxy>/…``, :meth:`~splatfx.shot.folder.Shot.stage_name`), so full-size
and proxy frames never meet.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from splatfx.comp.display import (
    COMP_COMPRESSION,
    CONTACT_SHEET_FRAMES,
    MOVIE_PRESET,
    DisplayTransform,
    contact_sheet,
    refined_frame_path,
    spread_frames,
    thumbnail,
)
from splatfx.comp.virtual import virtual_frames, virtual_inputs
from splatfx.render.cleanfill import MATTE_EPS, fill_clean_plate, grow_footprint
from splatfx.render.layers import FX, SYNTHETIC, RenderLayers, read_render_layers
from splatfx.core.color import linear_to_srgb, srgb_to_linear, to_uint8
from splatfx.shot.config import CompSection, config_to_dict
from splatfx.comp.credentials import MOVIES, Signing, frame_manifest, load_signing, movie_manifest
from splatfx.core.errors import ConfigError, InputError
from splatfx.shot.farm import FrameOutput, farm_out, for_workers
from splatfx.io.images import read_exr, read_image, write_exr, write_png
from splatfx.io.plates import ImagePlates, Plates
from splatfx.shot.folder import Shot
from splatfx.shot.runner import FrameLedger, StageResult, frame_key, run_stage
from splatfx.io.video import write_mp4

#: Light-wrap blur as a fraction of the image width.
LIGHT_WRAP_WIDTH = 0.005
#: Grain is measured on the residual of a Gaussian blur of this sigma (pixels) ...
GRAIN_BLUR_SIGMA = 1.0
_GRAIN_KSIZE = 9
#: ... in the flattest share of the plate (lowest local gradient), away from clipping.
GRAIN_FLAT_SHARE = 0.25
#: Frames sampled to measure the plates' grain.
GRAIN_SAMPLES = 5
#: Display frames for the movies are kept in memory up to this size (else read twice), so the
#: movies' memory does not grow with the shot's length or its plates' size.
MOVIE_MEMORY_BYTES = 256 << 20


# --- layers in, frame out --------------------------------------------------------------------------
#: The render layers the comp cannot do without.
NEEDED = (*FX, SYNTHETIC)


def read_layers(path: Path) -> RenderLayers:
    """The comp's layers of the render frame at ``path`` (InputError naming what it lacks)."""
    return read_render_layers(path, NEEDED, " that the comp needs (keep \"mask\" in [render] passes and render "
                                            "again)")


def with_refinement(layers: RenderLayers, refined_path: Path) -> RenderLayers:
    """``layers`` with the refiner's change to the beauty (refined − rendered ``R,G,B``,
    nonzero only on synthetic pixels) carried into the effect's colour, and the refined
    clean pass (its holes painted by the model, ``[refine] fill_holes``) in place of the
    rendered one."""
    refined = read_render_layers(refined_path)
    if layers.rgb is None or refined.rgb is None:
        raise InputError(refined_path, "and its render need R,G,B to carry the refinement into the comp")
    if refined.rgb.shape != layers.rgb.shape:
        raise InputError(refined_path, f"is {refined.rgb.shape[1]}x{refined.rgb.shape[0]} but its render is "
                                       f"{layers.rgb.shape[1]}x{layers.rgb.shape[0]}; run `splatfx refine` again")
    delta = refined.rgb - layers.rgb
    fx = np.maximum(layers.fx + delta * (layers.synthetic[..., None] > 0), 0.0).astype(np.float32)
    clean = refined.clean if refined.clean is not None else layers.clean
    return replace(layers, fx=fx, clean=clean)


@dataclass
class CompFrame:
    """One composited frame."""

    rgb: np.ndarray  # (H,W,3) scene-linear
    synthetic: np.ndarray  # (H,W) share of each pixel that is not the plate
    grain: np.ndarray  # (3,) standard deviation of the grain added (display code values, 0-1)

    @property
    def affected(self) -> np.ndarray:
        return self.synthetic > 0


def composite(plate: np.ndarray, layers: RenderLayers, settings: CompSection, grain: np.ndarray,
              rng: np.random.Generator) -> CompFrame:
    """Composite one frame (see the module doc). ``plate`` is scene-linear RGB; ``grain`` the
    plate's noise level per channel (:func:`measure_grain`), added × ``settings.grain``."""
    s = np.where(layers.synthetic >= MATTE_EPS, np.clip(layers.synthetic, 0.0, 1.0), 0.0).astype(np.float32)
    fx = np.where((s > 0)[..., None], layers.fx, 0.0).astype(np.float32)
    footprint = grow_footprint(layers.structure) if layers.structure is not None else np.zeros_like(s)
    background = plate
    if footprint.any():
        clean = fill_clean_plate(plate, layers.clean, footprint)
        background = plate + footprint[..., None] * (clean - plate)
    out = fx + (1.0 - s)[..., None] * background
    out = light_wrap(out, background, s, settings.light_wrap)
    share = 1.0 - (1.0 - s) * (1.0 - footprint)
    affected = share > 0
    sigma = np.asarray(grain, np.float32) * settings.grain
    if sigma.any() and affected.any():
        out = add_grain(out, sigma, share, rng)
    out = np.where(affected[..., None], out, plate).astype(np.float32)
    return CompFrame(out, share.astype(np.float32), sigma)


def light_wrap(comp: np.ndarray, background: np.ndarray, synthetic: np.ndarray, amount: float) -> np.ndarray:
    """Let the blurred background bleed over the inner edge of the synthetic matte:
    ``comp·(1 − k) + blur(B)·k`` with ``k = amount · S · (1 − blur(S))`` (0 where S is 0)."""
    if amount <= 0 or not synthetic.any():
        return comp
    sigma = max(1.0, LIGHT_WRAP_WIDTH * comp.shape[1])
    edge = synthetic * (1.0 - cv2.GaussianBlur(synthetic, (0, 0), sigma))
    glow = cv2.GaussianBlur(np.ascontiguousarray(background, dtype=np.float32), (0, 0), sigma)
    k = (amount * np.clip(edge, 0.0, 1.0))[..., None]
    return comp * (1.0 - k) + glow * k


def measure_grain(display: np.ndarray) -> np.ndarray:
    """The plate's noise level per channel (standard deviation in display code values, 0-1).

    The residual of a Gaussian blur is taken in the flattest quarter of the image (lowest
    smoothed gradient, away from clipped values); its robust spread (1.4826 × median
    absolute value) is corrected for the part of the noise the blur keeps.
    """
    img = np.ascontiguousarray(display[..., :3], dtype=np.float32)
    smooth = cv2.GaussianBlur(img, (_GRAIN_KSIZE, _GRAIN_KSIZE), GRAIN_BLUR_SIGMA)
    residual = img - smooth
    grey = smooth.mean(axis=2)
    gradient = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    structure = cv2.GaussianBlur(gradient, (0, 0), 3.0)
    usable = (smooth.min(axis=2) > 0.02) & (smooth.max(axis=2) < 0.98)
    if usable.sum() < 256:
        return np.zeros(3, np.float32)
    flat = usable & (structure <= np.quantile(structure[usable], GRAIN_FLAT_SHARE))
    mad = np.median(np.abs(residual[flat]), axis=0)
    return (1.4826 * mad / np.sqrt(_residual_gain())).astype(np.float32)


def plate_grain(plates: Plates, frames: list[int], is_srgb: bool, samples: int = GRAIN_SAMPLES,
                size: tuple[int, int] | None = None) -> np.ndarray:
    """The plates' noise level: the per-channel median of :func:`measure_grain` over up to
    ``samples`` evenly spaced frames (one level for the shot, so the grain does not flicker),
    measured on the plates at the comp's ``size`` (a proxy's plates are less noisy)."""
    picks = spread_frames(frames, samples)
    levels = [measure_grain(_plate_rgb(plates.read(f), is_srgb, size)[0]) for f in picks]
    return np.median(np.stack(levels), axis=0).astype(np.float32)


def _residual_gain() -> float:
    """Variance of white noise left by ``x − blur(x)`` per unit input variance."""
    k = cv2.getGaussianKernel(_GRAIN_KSIZE, GRAIN_BLUR_SIGMA).ravel()
    centre = k[len(k) // 2] ** 2
    return float(1.0 - 2.0 * centre + (k @ k) ** 2)


def add_grain(linear: np.ndarray, sigma: np.ndarray, weight: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add display-space Gaussian noise of ``sigma`` (3,) scaled by ``weight`` (H,W) to
    scene-linear pixels (only where the weight is non-zero)."""
    where = weight > 0
    noise = rng.standard_normal((int(where.sum()), 3)).astype(np.float32) * sigma * weight[where][:, None]
    out = linear.copy()
    out[where] = srgb_to_linear(linear_to_srgb(linear[where]) + noise)
    return out


# --- display -----------------------------------------------------------------------------------------
def display_frame(comp: CompFrame, plate_display: np.ndarray, transform: DisplayTransform,
                  plate_is_srgb: bool) -> np.ndarray:
    """The comp in display values; where nothing changed, the plate's own display values."""
    shown = transform(comp.rgb)
    if transform.is_srgb and plate_is_srgb:
        shown = np.where(comp.affected[..., None], shown, plate_display)
    return np.clip(shown, 0.0, 1.0)


# --- the stage ---------------------------------------------------------------------------------------
def run_comp(shot: Shot, *, force: bool = False) -> StageResult:
    """``splatfx comp SHOT``: composite every frame, write frames, movies and contact sheet
    (``force``: the stage and every frame, even those up to date)."""
    section = shot.config.comp
    if not {"exr", "png"} & set(section.outputs):
        raise ConfigError(f"{shot.toml_path} [comp] outputs", "must include \"exr\" or \"png\" (the movies and the "
                                                              "contact sheet are made from the frames)")
    ocio_path = shot.path(section.ocio) if section.ocio is not None else None
    signing = load_signing(shot, section)  # checked before anything is read or made
    signing_input = {"c2pa_cert": signing.cert} if signing is not None else {}
    if shot.config.render.camera == "virtual":  # a fully synthetic shot: no plate to composite over
        inputs = {**virtual_inputs(shot), **({"ocio": ocio_path} if ocio_path is not None else {}), **signing_input}
        return run_stage(shot, shot.stage_name("comp"), section, inputs, [shot.comp_dir],
                         lambda: virtual_frames(shot, section, ocio_path, redo=force, signing=signing), force=force)
    inputs: dict = {"render": shot.render_dir, "plates": shot.plate_files(), **signing_input}
    if shot.config.refine.model is not None and shot.refine_dir.is_dir():
        inputs["refine"] = shot.refine_dir
    if ocio_path is not None:
        inputs["ocio"] = ocio_path
    return run_stage(shot, shot.stage_name("comp"), section, inputs, [shot.comp_dir],
                     lambda: comp_frames(shot, section, ocio_path, redo=force, signing=signing), force=force)


def comp_frames(shot: Shot, section: CompSection, ocio_path: Path | None, redo: bool = False,
                signing: Signing | None = None) -> dict:
    """Composite each frame not already up to date (every frame with ``redo``); then the
    movies and the contact sheet. With ``signing`` the PNG frames and the movies carry
    signed C2PA Content Credentials (:mod:`splatfx.comp.credentials`)."""
    transform = DisplayTransform(ocio_path)
    seed = shot.config.shot.seed
    settings = {k: v for k, v in config_to_dict(section).items()  # what shapes the pixels
                if k != "outputs" and not k.startswith("c2pa_")}
    if signing is not None and ("png" in section.outputs or "exr" in section.outputs):
        settings["c2pa"] = signing.identity  # a new certificate re-signs every frame
    ledger = FrameLedger(shot, shot.stage_name("comp"))
    gaps = shot.plate_gaps()  # no plate to composite over: skipped, held over in the movies
    frames = [f for f in shot.frames if f not in gaps]
    timings: dict[str, float] = {}
    provenance: dict[str, dict] = {}
    todo: dict[int, FrameJob] = {}
    with shot.open_plates() as plates:
        full = (plates.width, plates.height)
        size = shot.scaled(full)  # the plates' size, or a proxy's
        plate_is_srgb = plates.encoding == "srgb"
        grain = plate_grain(plates, frames, plate_is_srgb, size=size) if section.grain > 0 \
            else np.zeros(3, np.float32)
        for frame in frames:
            render_path = shot.render_frame(frame)
            if not render_path.is_file():
                raise InputError(render_path, "does not exist (run `splatfx render` first)")
            refined_path = refined_frame_path(shot, frame)
            plate_file = _plate_file(plates, frame)
            render_sha256 = ledger.sha256(render_path)
            key = frame_key(stage="comp", frame=frame, settings=settings, seed=seed, display=transform.description,
                            grain=grain, render=render_sha256, plate=ledger.sha256(plate_file),
                            refined=ledger.sha256(refined_path) if refined_path else None)
            if not redo and ledger.is_current(frame, key, _frame_outputs(shot, frame, section)):
                provenance[str(frame)] = ledger.entry(frame)["figures"]
            else:
                todo[frame] = FrameJob(key, render_sha256, refined_path)

    def record(frame: int, output: FrameOutput) -> None:
        figures = output.info["figures"]
        ledger.record(frame, todo[frame].key, _frame_outputs(shot, frame, section), figures)
        provenance[str(frame)] = figures
        for name, seconds in output.info["seconds"].items():
            timings[name] = timings.get(name, 0.0) + seconds

    # Workers may run in another directory: every path they get is absolute.
    sent = None if signing is None else replace(signing, cert=signing.cert.resolve(), key=signing.key.resolve())
    job = CompJob(for_workers(shot), section, None if ocio_path is None else ocio_path.resolve(), grain, sent, todo,
                  size)
    farm = farm_out(sorted(todo), functools.partial(comp_chunk, job), shot.config.farm, record,
                    description="compositing")
    provenance = dict(sorted(provenance.items(), key=lambda item: int(item[0])))
    done = len(todo)
    ledger.prune(frames, lambda f: [shot.comp_frame(f, s) for s in ("exr", "png")])
    _remove_unrequested(shot, frames, section.outputs)
    t = time.perf_counter()
    sheet = write_review(shot, frames, section, transform)
    if signing is not None and "mp4" in section.outputs:
        for name in MOVIES:
            signing.sign(shot.comp_dir / name, movie_manifest(shot, name, provenance))
    _lap(timings, "movies", t)
    shares = [p["synthetic_share"] for p in provenance.values()]
    return {"frames": len(frames), **({"gaps": gaps} if gaps else {}), "composited": done,
            "skipped": len(frames) - done, **shot.size_figures(full),
            "seconds": {k: round(v, 3) for k, v in timings.items()},
            "synthetic_share_mean": round(float(np.mean(shares)), 6) if shares else 0.0,
            "display": transform.description, "plate_grain": [round(float(g), 6) for g in grain],
            "contact_sheet": sheet, "per_frame": provenance,
            "content_credentials": signing.describe() if signing else "unsigned ([comp] c2pa_cert not set)",
            "farm": farm}


def _frame_outputs(shot: Shot, frame: int, section: CompSection) -> list[Path]:
    return [shot.comp_frame(frame, s) for s in ("exr", "png") if s in section.outputs]


@dataclass(frozen=True)
class FrameJob:
    """One frame to composite: its key, its render EXR's sha256, the refined frame if used."""

    key: str
    render_sha256: str
    refined_path: Path | None


@dataclass(frozen=True)
class CompJob:
    """What a comp worker needs, as plain picklable data: the shot (folder and settings), the
    comp settings, the OCIO config, the plates' grain level, the signing identity (paths),
    the frames to composite and the size to composite at (the plates', or a proxy's)."""

    shot: Shot
    section: CompSection
    ocio_path: Path | None
    grain: np.ndarray
    signing: Signing | None
    frames: dict[int, FrameJob]
    size: tuple[int, int]


def comp_chunk(job: CompJob, frames: Sequence[int]) -> Iterator[tuple[int, FrameOutput]]:
    """Composite ``frames`` of ``job`` (in a worker, or in this process), opening the plates
    once; yields ``(frame, its outputs and figures)`` as each frame is written."""
    transform = DisplayTransform(job.ocio_path)
    with job.shot.open_plates() as plates:
        for frame in frames:
            yield frame, comp_frame(job, plates, transform, frame)


def comp_frame(job: CompJob, plates: Plates, transform: DisplayTransform, frame: int) -> FrameOutput:
    """Composite one frame and write its outputs (each atomically); its paths and figures."""
    shot, section, plan = job.shot, job.section, job.frames[frame]
    seed = shot.config.shot.seed
    plate_is_srgb = plates.encoding == "srgb"
    render_path = shot.render_frame(frame)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    plate_display, plate_linear = _plate_rgb(plates.read(frame), plate_is_srgb, job.size)
    layers = read_layers(render_path)
    if plan.refined_path is not None:
        layers = with_refinement(layers, plan.refined_path)
    _lap(timings, "read", t)
    if layers.synthetic.shape != plate_linear.shape[:2]:
        at = f" at proxy {shot.proxy:g}" if shot.is_proxy else ""
        raise InputError(render_path, f"is {layers.synthetic.shape[1]}x{layers.synthetic.shape[0]} but the "
                                      f"comp works at {job.size[0]}x{job.size[1]} (the plates{at}); set [render] "
                                      "resolution_scale = 1 and render again")
    t = time.perf_counter()
    result = composite(plate_linear, layers, section, job.grain, np.random.default_rng([seed, frame]))
    _lap(timings, "composite", t)
    figures = {"synthetic_share": round(float(result.synthetic.mean()), 6),
               "affected_share": round(float(result.affected.mean()), 6),
               "grain": [round(float(g), 6) for g in result.grain], "seed": seed, "key": plan.key,
               "render_sha256": plan.render_sha256, "render_key": layers.key}
    t = time.perf_counter()
    _write_frame(shot, frame, result, plate_display, transform, plate_is_srgb, section, figures, job.signing)
    _lap(timings, "write", t)
    return FrameOutput(tuple(str(p) for p in _frame_outputs(shot, frame, section)),
                       {"figures": figures, "seconds": timings})


def _remove_unrequested(shot: Shot, frames: list[int], outputs: tuple[str, ...]) -> None:
    """Delete outputs of kinds no longer asked for, so comp/ holds only what this run made."""
    stale = [shot.comp_frame(f, s) for f in frames for s in ("exr", "png") if s not in outputs]
    if "mp4" not in outputs:
        stale += [shot.comp_dir / "shot.mp4", shot.comp_dir / "review.mp4"]
    for path in stale:
        path.unlink(missing_ok=True)


def _lap(timings: dict[str, float], name: str, t0: float) -> None:
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def _plate_file(plates: Plates, frame: int) -> Path:
    return plates.path(frame) if isinstance(plates, ImagePlates) else Path(plates.source)


def _plate_rgb(pixels: np.ndarray, is_srgb: bool,
               size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(display, scene-linear) RGB of a plate frame (grey is repeated, alpha dropped), at
    ``size`` (a proxy's) when given: area-averaged in linear light, as a compositor's proxy."""
    rgb = pixels[..., :3] if pixels.shape[2] >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    if size is not None and size != (rgb.shape[1], rgb.shape[0]):
        linear = srgb_to_linear(rgb) if is_srgb else rgb
        linear = cv2.resize(linear, size, interpolation=cv2.INTER_AREA)
        return np.clip(linear_to_srgb(linear), 0.0, 1.0).astype(np.float32), linear
    if is_srgb:
        return rgb, srgb_to_linear(rgb)
    return np.clip(linear_to_srgb(rgb), 0.0, 1.0), rgb


def _write_frame(shot: Shot, frame: int, result: CompFrame, plate_display: np.ndarray, transform: DisplayTransform,
                 plate_is_srgb: bool, section: CompSection, figures: dict, signing: Signing | None = None) -> None:
    if "exr" in section.outputs:
        channels = {"R": result.rgb[..., 0], "G": result.rgb[..., 1], "B": result.rgb[..., 2],
                    SYNTHETIC: result.synthetic}
        write_exr(shot.comp_frame(frame, "exr"), channels, half={SYNTHETIC},
                  compression=COMP_COMPRESSION, frame=frame,
                  fps=shot.config.shot.fps, attributes={
                      "splatfx/stage": "comp", "splatfx/seed": int(figures["seed"]),
                      "splatfx/synthetic_share": float(figures["synthetic_share"]),
                      "splatfx/render_sha256": figures["render_sha256"], "splatfx/key": figures["key"]})
        if signing is not None:  # OpenEXR cannot embed a manifest: a signed sidecar beside it
            exr = shot.comp_frame(frame, "exr")
            signing.sign_sidecar(exr, frame_manifest(shot, frame, figures, exr.name))
    if "png" in section.outputs:
        png = shot.comp_frame(frame, "png")
        write_png(png, display_frame(result, plate_display, transform, plate_is_srgb))
        if signing is not None:
            signing.sign(png, frame_manifest(shot, frame, figures, png.name))


# --- movies and contact sheet -------------------------------------------------------------------------
def _display_frames(shot: Shot, frames: list[int], transform: DisplayTransform) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(plate, comp) display frames as uint8, read back from the written frames."""
    with shot.open_plates() as plates:
        size = shot.scaled((plates.width, plates.height))
        for frame in frames:
            plate_display, _ = _plate_rgb(plates.read(frame), plates.encoding == "srgb", size)
            png = shot.comp_frame(frame, "png")
            if png.is_file():
                comp = read_image(png).pixels[..., :3]
            else:
                channels, _ = read_exr(shot.comp_frame(frame, "exr"))
                comp = np.clip(transform(np.stack([channels[c] for c in "RGB"], axis=2)), 0.0, 1.0)
            yield to_uint8(plate_display), to_uint8(comp)


def hold_counts(frames: list[int], shot_frames: list[int]) -> list[int]:
    """How many movie frames each of ``frames`` (those with a plate) fills in the movie of
    ``shot_frames``: itself and the gap frames after it (the first also those before it), so
    a gap holds the frame before it and the movie keeps the shot's timing, frame for frame."""
    counts = [0] * len(frames)
    at = 0
    for frame in shot_frames:
        while at + 1 < len(frames) and frames[at + 1] <= frame:
            at += 1
        counts[at] += 1
    return counts


def _held(pairs: Iterator[tuple[np.ndarray, np.ndarray]], holds: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each display pair repeated as :func:`hold_counts` says."""
    for pair, count in zip(pairs, holds):
        for _ in range(count):
            yield pair


def write_review(shot: Shot, frames: list[int], section: CompSection, transform: DisplayTransform) -> str:
    """``shot.mp4``, ``review.mp4`` (plate | comp) when "mp4" is an output, and the contact sheet.

    The display frames are read back once and kept in memory when they fit in
    :data:`MOVIE_MEMORY_BYTES`, else read again for each movie.
    """
    fps = shot.config.shot.fps
    picks = spread_frames(frames, CONTACT_SHEET_FRAMES)
    holds = hold_counts(frames, list(shot.frames))
    with shot.open_plates() as plates:
        width, height = shot.scaled((plates.width, plates.height))
        size = 2 * len(frames) * width * height * 3
    if "mp4" in section.outputs:
        if size <= MOVIE_MEMORY_BYTES:
            pairs = list(_display_frames(shot, frames, transform))
            source = lambda: iter(pairs)  # noqa: E731
        else:
            source = lambda: _display_frames(shot, frames, transform)  # noqa: E731
        write_mp4(shot.comp_dir / "shot.mp4", (c for _, c in _held(source(), holds)), fps, preset=MOVIE_PRESET)
        write_mp4(shot.comp_dir / "review.mp4", (np.concatenate(pc, axis=1) for pc in _held(source(), holds)), fps,
                  preset=MOVIE_PRESET)
        thumbs = [(f, thumbnail(c)) for f, (_, c) in zip(frames, source()) if f in picks]
    else:
        thumbs = [(f, thumbnail(c)) for f, (_, c) in zip(picks, _display_frames(shot, picks, transform))]
    path = shot.comp_dir / "contact_sheet.png"
    write_png(path, contact_sheet(thumbs))
    return shot.relative(path)
