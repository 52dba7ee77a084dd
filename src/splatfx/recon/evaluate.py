"""Rendering a trained scene from a capture's own cameras, and scoring it against the photos.

:func:`evaluate_split` renders every view of a split (``test`` by default: NeRF-synthetic's
test set, every 8th LLFF image) and computes PSNR/SSIM against the images composited on
the capture's background; :func:`render_split` just renders the views to PNGs;
:func:`write_eval` does the former and writes ``metrics.json`` and the renders. The
capture is read lazily, one image at a time, so memory stays flat for long captures.

With the per-plate exposure training learnt (``exposure.json``, :mod:`splatfx.recon.exposure`)
each view is rendered at its plate's exposure: its own transform, or for a held-out plate the one
of the training plates beside it in the capture.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import torch

from splatfx.core.atomic import write_text_atomic
from splatfx.io.dataset import Dataset, load_dataset
from splatfx.core.errors import InputError
from splatfx.core.gaussians import Gaussians
from splatfx.io.images import write_png
from splatfx.recon.exposure import Transforms, apply_exposure, exposure_beside, exposure_for
from splatfx.recon.metrics import MetricSummary
from splatfx.core.progress import track
from splatfx.raster.views import render_view, resolve_device

PathLike = str | os.PathLike[str]
Background = tuple[float, float, float] | str | None


def frame_stem(name: str, index: int) -> str:
    """A file-safe stem for a frame name (``train/r_0.png`` → ``r_0``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem)
    return stem or f"{index:05d}"


def open_views(data: PathLike | Dataset, split: str, downscale: float = 1.0, background: Background = None) -> Dataset:
    """``data`` itself when it is a Dataset, else that split of the capture folder."""
    if isinstance(data, Dataset):
        return data
    return load_dataset(data, split=split, background=background, downscale=downscale)


def _renders(gaussians: Gaussians, dataset: Dataset, backend: str, device: torch.device | str | None,
             description: str, progress: bool):
    """Yield (index, render on the CPU) for every view of ``dataset``, at the mean exposure, unclamped."""
    scene = gaussians.to(resolve_device("auto") if device is None else device)
    background = torch.from_numpy(dataset.background)
    views = range(len(dataset))
    for i in track(views, description) if progress else views:
        yield i, render_view(scene, dataset.frames[i].camera, background, backend).cpu()


def at_plate_exposure(render: torch.Tensor, plate: str, exposure: Transforms | None,
                      order: list[str]) -> torch.Tensor:
    """``render`` turned to the exposure of ``plate`` (unchanged without ``exposure``), clamped to [0, 1]."""
    if exposure is None:
        return render.clamp(0, 1)
    transform = torch.from_numpy(exposure_for(plate, exposure, order)).to(render)
    return apply_exposure(render, transform).clamp(0, 1)


def exposure_for_capture(scene_path: PathLike, data: PathLike) -> Transforms | None:
    """The per-plate exposure written beside ``scene_path``, when it belongs to the capture ``data``."""
    return exposure_beside(scene_path, load_dataset(data, split="all").plate_names)


def evaluate_split(gaussians: Gaussians, data: PathLike | Dataset, split: str = "test", *, downscale: float = 1.0,
                   background: Background = None, backend: str = "auto", device: torch.device | str | None = None,
                   image_dir: PathLike | None = None, progress: bool = True,
                   exposure: Transforms | None = None) -> MetricSummary | None:
    """PSNR/SSIM of every view of ``split`` (None when it has no views).

    References are the capture's images on its background, shrunk by ``downscale`` like
    the training images. With ``exposure`` each render is scored at its plate's exposure (and
    its PSNR at the mean exposure is kept beside). With ``image_dir`` each render is also
    written as ``<frame>.png``.
    """
    dataset = open_views(data, split, downscale, background)
    if len(dataset) == 0:
        return None
    order = dataset.plate_names
    summary = MetricSummary()
    for i, render in _renders(gaussians, dataset, backend, device, f"eval {split}", progress):
        name = frame_stem(dataset.frames[i].name, i)
        image = at_plate_exposure(render, order[i], exposure, order)
        summary.add(name, image, torch.from_numpy(dataset.image(i)),
                    at_mean_exposure=None if exposure is None else render.clamp(0, 1))
        if image_dir is not None:
            write_png(Path(image_dir) / f"{name}.png", image.numpy())
    return summary


def render_split(gaussians: Gaussians, data: PathLike | Dataset, split: str, out_dir: PathLike, *,
                 downscale: float = 1.0, background: Background = None, backend: str = "auto",
                 device: torch.device | str | None = None, progress: bool = True,
                 exposure: Transforms | None = None) -> list[Path]:
    """Render every view of ``split`` (at its plate's exposure, given ``exposure``) to
    ``out_dir/<frame>.png``; returns the paths written."""
    dataset = open_views(data, split, downscale, background)
    order = dataset.plate_names
    written = []
    for i, render in _renders(gaussians, dataset, backend, device, f"render {split}", progress):
        path = Path(out_dir) / f"{frame_stem(dataset.frames[i].name, i)}.png"
        write_png(path, at_plate_exposure(render, order[i], exposure, order).numpy())
        written.append(path)
    return written


def write_eval(gaussians: Gaussians, data: PathLike, split: str, out_dir: PathLike, *,
               scene_path: PathLike | None = None, downscale: float = 1.0, background: Background = None,
               backend: str = "auto", write_images: bool = True, progress: bool = True,
               exposure: Transforms | None = None) -> dict:
    """Evaluate ``split``; write ``out_dir/metrics.json`` (and ``out_dir/renders/*.png``)."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    summary = evaluate_split(gaussians, data, split, downscale=downscale, background=background, backend=backend,
                             image_dir=out_dir / "renders" if write_images else None, progress=progress,
                             exposure=exposure)
    if summary is None:
        raise InputError(data, f"the {split} split has no views to evaluate")
    result = {
        "scene": None if scene_path is None else str(scene_path), "data": str(data), "split": split,
        "downscale": downscale, "gaussians": len(gaussians), **summary.to_dict(),
        "seconds": time.perf_counter() - t0,
    }
    write_text_atomic(out_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
    return result
