"""The ``comp`` stage of a fully synthetic shot (``[render] camera = "virtual"``).

A virtual camera move has no plate to composite over: its frames are the render itself,
the refined beauty where ``[refine] model`` is set, every pixel generated. Per frame:
``comp/comp.####.exr`` (premultiplied scene-linear ``R,G,B,A`` and ``mask.synthetic`` = 1)
and ``comp/comp.####.png`` (the display transform of the colour over black); then
``shot.mp4`` and the contact sheet. There is no side-by-side review movie: there is no plate
to put beside it. Frames already made from the same render (and refined) files and
settings are kept, as in the plate comp.
"""

from __future__ import annotations

import time
from pathlib import Path

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
from splatfx.core.color import to_uint8
from splatfx.shot.config import CompSection, config_to_dict
from splatfx.comp.credentials import Signing, frame_manifest, movie_manifest
from splatfx.core.errors import InputError
from splatfx.io.images import read_exr, read_image, write_exr, write_png
from splatfx.render.layers import RGBA, SYNTHETIC, read_render_layers
from splatfx.core.progress import track
from splatfx.shot.folder import Shot
from splatfx.shot.runner import FrameLedger, frame_key
from splatfx.io.video import write_mp4

#: The movie of a synthetic shot (the comp's ``shot.mp4``).
MOVIE = "shot.mp4"


def virtual_inputs(shot: Shot) -> dict[str, Path]:
    """What a synthetic comp reads: the render, and the refined frames when refining."""
    inputs = {"render": shot.render_dir}
    if shot.config.refine.model is not None and shot.refine_dir.is_dir():
        inputs["refine"] = shot.refine_dir
    return inputs


def beauty(render_path: Path, refined_path: Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Premultiplied scene-linear RGB (H,W,3), alpha (H,W) and the render's key of one frame:
    the refined colour when there is a refined frame, else the rendered one."""
    layers = read_render_layers(refined_path or render_path, RGBA)
    return layers.rgb, layers.alpha, layers.key


def virtual_frames(shot: Shot, section: CompSection, ocio_path: Path | None, redo: bool = False,
                   signing: Signing | None = None) -> dict:
    """Write the synthetic shot's frames (those not up to date, or all with ``redo``), then
    ``shot.mp4`` and the contact sheet; returns the stage's figures. With ``signing`` the PNG
    frames and the movie carry signed C2PA Content Credentials."""
    transform = DisplayTransform(ocio_path)
    seed = shot.config.shot.seed
    settings = {k: v for k, v in config_to_dict(section).items() if k != "outputs" and not k.startswith("c2pa_")}
    if signing is not None and ("png" in section.outputs or "exr" in section.outputs):
        settings["c2pa"] = signing.identity  # a new certificate re-signs every frame
    ledger = FrameLedger(shot, shot.stage_name("comp"))
    frames = list(shot.frames)
    provenance: dict[str, dict] = {}
    timings = {"read": 0.0, "write": 0.0}
    done = 0
    for frame in track(frames, "compositing (synthetic)"):
        render_path = shot.render_frame(frame)
        if not render_path.is_file():
            raise InputError(render_path, "does not exist (run `splatfx render` first)")
        refined_path = refined_frame_path(shot, frame)
        key = frame_key(stage="comp", kind="virtual", frame=frame, settings=settings, seed=seed,
                        display=transform.description, render=ledger.sha256(render_path),
                        refined=ledger.sha256(refined_path) if refined_path else None)
        outputs = [shot.comp_frame(frame, s) for s in ("exr", "png") if s in section.outputs]
        if not redo and ledger.is_current(frame, key, outputs):
            provenance[str(frame)] = ledger.entry(frame)["figures"]
            continue
        t = time.perf_counter()
        rgb, alpha, render_key = beauty(render_path, refined_path)
        timings["read"] += time.perf_counter() - t
        figures = {"synthetic_share": 1.0, "seed": seed, "key": key, "render_sha256": ledger.sha256(render_path),
                   "render_key": render_key, "refined": refined_path is not None}
        t = time.perf_counter()
        _write_frame(shot, frame, rgb, alpha, transform, section, figures, signing)
        timings["write"] += time.perf_counter() - t
        ledger.record(frame, key, outputs, figures)
        provenance[str(frame)] = figures
        done += 1
    ledger.prune(frames, lambda f: [shot.comp_frame(f, s) for s in ("exr", "png")])
    (shot.comp_dir / "review.mp4").unlink(missing_ok=True)  # left from a plate comp of this shot
    t = time.perf_counter()
    sheet = write_movie_and_sheet(shot, frames, section, transform)
    if signing is not None and "mp4" in section.outputs:
        signing.sign(shot.comp_dir / MOVIE, movie_manifest(shot, MOVIE, provenance))
    timings["movies"] = time.perf_counter() - t
    return {"frames": len(frames), "composited": done, "skipped": len(frames) - done, "camera": "virtual",
            **shot.size_figures(shot.render_size(full=True)),
            "seconds": {k: round(v, 3) for k, v in timings.items()}, "synthetic_share_mean": 1.0,
            "display": transform.description, "contact_sheet": sheet, "per_frame": provenance,
            "content_credentials": signing.describe() if signing else "unsigned ([comp] c2pa_cert not set)"}


def _write_frame(shot: Shot, frame: int, rgb: np.ndarray, alpha: np.ndarray, transform: DisplayTransform,
                 section: CompSection, figures: dict, signing: Signing | None = None) -> None:
    if "exr" in section.outputs:
        channels = {"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2], "A": alpha,
                    SYNTHETIC: np.ones_like(alpha)}
        write_exr(shot.comp_frame(frame, "exr"), channels, half={SYNTHETIC},
                  compression=COMP_COMPRESSION, frame=frame, fps=shot.config.shot.fps,
                  attributes={"splatfx/stage": "comp", "splatfx/seed": int(figures["seed"]),
                              "splatfx/synthetic_share": 1.0, "splatfx/render_sha256": figures["render_sha256"],
                              "splatfx/key": figures["key"]})
        if signing is not None:  # OpenEXR cannot embed a manifest: a signed sidecar beside it
            exr = shot.comp_frame(frame, "exr")
            signing.sign_sidecar(exr, frame_manifest(shot, frame, figures, exr.name))
    if "png" in section.outputs:
        png = shot.comp_frame(frame, "png")
        write_png(png, display(rgb, transform))
        if signing is not None:
            signing.sign(png, frame_manifest(shot, frame, figures, png.name))


def display(rgb: np.ndarray, transform: DisplayTransform) -> np.ndarray:
    """Display code values (0-1) of premultiplied linear colour over black."""
    return np.clip(transform(np.clip(rgb, 0.0, None)), 0.0, 1.0).astype(np.float32)


def _display_frames(shot: Shot, frames: list[int], transform: DisplayTransform):
    """uint8 display frames, read back from the written PNGs (else the EXRs)."""
    for frame in frames:
        png = shot.comp_frame(frame, "png")
        if png.is_file():
            yield to_uint8(read_image(png).pixels[..., :3])
        else:
            channels, _ = read_exr(shot.comp_frame(frame, "exr"))
            yield to_uint8(display(np.stack([channels[c] for c in "RGB"], axis=-1), transform))


def write_movie_and_sheet(shot: Shot, frames: list[int], section: CompSection, transform: DisplayTransform) -> str:
    """``shot.mp4`` (when "mp4" is an output) and the contact sheet; returns the sheet's path."""
    picks = spread_frames(frames, CONTACT_SHEET_FRAMES)
    if "mp4" in section.outputs:
        write_mp4(shot.comp_dir / MOVIE, _display_frames(shot, frames, transform), shot.config.shot.fps,
                  preset=MOVIE_PRESET)
    else:
        (shot.comp_dir / MOVIE).unlink(missing_ok=True)
    thumbs = [(f, thumbnail(c)) for f, c in zip(picks, _display_frames(shot, picks, transform))]
    path = shot.comp_dir / "contact_sheet.png"
    write_png(path, contact_sheet(thumbs))
    return shot.relative(path)
