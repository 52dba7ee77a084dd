"""Benchmark of the refine stage: the built-in per-scene sharpening pass's quality on held-out
views and its cost, and the stability that warped noise buys on a moving camera.

Usage::

    python benchmarks/refine.py [--parts quality stability] [--captures lego_200 fern south_building]
                                [--recon-steps 600] [--refiner-steps 400] [--threads 1] [--work DIR]
                                [--solve DIR] [--json FILE]
    python benchmarks/refine.py --stability [--stability-capture fern] [--stability-frames 16]
                                [--stability-size 768 576] [--stability-strength 0.3 0.6 1.0]

**Quality** (``--parts quality``), for each capture:

1. **An under-trained reconstruction**: ``splatfx.recon.train`` for ``--recon-steps`` steps on the
   train split (SH degree 1; checkpoints every fifth of the run, kept as the "early
   checkpoints" degradation). Kept in ``--work`` and reused by later runs. south_building has
   photos alone: its cameras are solved first (``splatfx.recon.solve``, default settings, kept in
   ``--work``; ``--solve DIR`` reuses a solve made earlier).
2. **Unrefined**: its renders of the held-out views (lego: the 200 ``test`` views on white;
   fern and south_building: every 8th image by name), PSNR and SSIM against the real images.
3. **The built-in sharpening pass**, trained from scratch on pairs rendered from degraded
   versions of that reconstruction on the *training* views (the scene as trained, early
   checkpoints, 30 % of the Gaussians dropped, positions jittered, half resolution) against the
   training images, for ``--refiner-steps`` steps (``--refiner-minutes`` caps the wall time).
4. **Refined**: the held-out renders refined (DDIM, strength 0.3, 1 step; independent noise per
   view), PSNR and SSIM against the same images; and the cost of one model call on a 768×576
   frame (the held-out render resized, median of 3).

**Stability** (``--stability``): the capture's reconstruction (as above; reused) rendered by
the render stage's :func:`splatfx.render.passes.render_passes` along a camera trucking from the
middle training view past its nearest neighbour (``--stability-travel`` times their distance,
``--stability-frames`` frames at ``--stability-size``), every Gaussian marked synthetic, into
render-stage EXRs with exact ``motion.u/v`` and ``depth.Z``. The refiner the quality part
trained (else one trained now) refines the sequence through the stage's
:func:`~splatfx.refine.stage.refine_sequence` twice per strength: with the stage's warped
noise, and with independent noise per frame (the same frames numbered 2 apart, so the stage
restarts its noise at every frame). The warp error is the mean absolute difference, in 8-bit
sRGB codes, between each frame and the next one warped back along the motion vectors
(bilinear), over the pixels seen in both frames (the reprojected depth agrees with the next
frame's, the motion vector with the exact reprojection); the unrefined renders give the
baseline. Then the time per frame of one model call and one noise warp step, and their peak
resident-set growth (``VmHWM`` after ``/proc/self/clear_refs``, in a fresh process) for
batches of 1 and 4 frames. Exits 1 if warped noise is not the more stable at every strength.

Prints the figures and the load average: the machine may be shared, which inflates the times.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from _memory import peak_growth_mib  # noqa: E402  (benchmarks/, first on sys.path)

from splatfx.core.camera import Camera
from splatfx.io.checkpoint import gaussians_from_params, list_checkpoints, load_checkpoint
from splatfx.io.dataset import load_dataset
from splatfx.raster.views import render_view
from splatfx.io.formats import read_gaussians
from splatfx.fx.animation import ELEMENTS, FrameGaussians
from splatfx.io.images import read_exr
from splatfx.recon.metrics import MetricSummary
from splatfx.render.passes import render_passes
from splatfx.refine.builtin import BuiltinRefiner, PairSettings, TrainSettings, make_pairs, train_refiner
from splatfx.refine.noise_warp import NoiseWarper, motion_at, warp_noise
from splatfx.refine.base import BUILTIN_CONFIG
from splatfx.refine.stage import RefineOptions, display_colour, frame_layers, refine_sequence
from splatfx.render.layers import RenderLayers, write_render_exr
from splatfx.recon.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]


def default_data() -> Path:
    return Path(os.environ.get("SPLATFX_DATA", REPO.parent / "shared" / "data"))


def capture_folder(name: str, args: argparse.Namespace) -> Path:
    """The capture folder with cameras: the data's own, or, for a capture of photos alone
    (south_building), a camera solve of its images (``splatfx.recon.solve``, default settings)
    kept in ``--work`` (or ``--solve DIR``, a solve made earlier)."""
    data = args.data / name
    if any((data / f).exists() for f in ("transforms_train.json", "poses_bounds.npy", "sparse")):
        return data
    solved = args.solve if args.solve is not None else args.work / name / "solve"
    if not (solved / "sparse").is_dir():
        from splatfx.recon.solve import solve_images

        print(f"== {name}: camera solve of {data / 'images'} into {solved}", flush=True)
        solve_images(data / "images", solved)
    return solved


def reconstruct(data: Path, out: Path, steps: int, threads: int) -> dict:
    """Train (or reuse) the under-trained reconstruction; its figures."""
    metrics = out / "metrics.json"
    if (out / "scene.ply").is_file() and metrics.is_file():
        figures = json.loads(metrics.read_text())
        if figures.get("steps") == steps:
            return figures | {"reused": True}
    config = TrainConfig(max_steps=steps, sh_degree=1, checkpoint_every=max(1, steps // 5), keep_checkpoints=5,
                         eval_split=None, threads=threads, random_points=20_000, progress=True)
    t0 = time.perf_counter()
    result = train(data, out, config)
    return result.metrics | {"wall_seconds": time.perf_counter() - t0}


def early_reconstructions(out: Path, most: int = 2) -> list:
    """The checkpoints before the last (earlier, worse reconstructions), newest first."""
    found = list_checkpoints(out / "checkpoints")[:-1]
    return [gaussians_from_params(load_checkpoint(p).params) for _, p in found[::-1][:most]]


def held_out(scene, data: Path) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str]]:
    """Renders of the held-out views, their real images, and their names."""
    dataset = load_dataset(data, "test")
    background = torch.from_numpy(dataset.background)
    renders, targets = [], []
    for i in range(len(dataset)):
        renders.append(render_view(scene, dataset.frames[i].camera, background).clamp(0, 1).permute(2, 0, 1))
        targets.append(torch.from_numpy(dataset.image(i)).permute(2, 0, 1))
    return renders, targets, dataset.names


def score(images: list[torch.Tensor], targets: list[torch.Tensor], names: list[str]) -> MetricSummary:
    summary = MetricSummary()
    for name, image, target in zip(names, images, targets):
        summary.add(name, image.permute(1, 2, 0), target.permute(1, 2, 0))
    return summary


def refine_views(model: BuiltinRefiner, renders: list[torch.Tensor], strength: float, steps: int,
                 seed: int) -> list[torch.Tensor]:
    """Each held-out render refined on its own (views are not a sequence: independent noise)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for render in renders:
        h, w = render.shape[-2:]
        noise = torch.randn((1, *model.noise_shape(h, w)), generator=generator)
        out.append(model.refine(render[None], torch.full((1, 1, h, w), strength), noise, steps)[0])
    return out


def cost_per_frame(model: BuiltinRefiner, render: torch.Tensor, size: tuple[int, int] = (768, 576),
                   strength: float = 0.3, repeats: int = 3) -> float:
    """Median seconds of one model call (1 step) on a ``size`` (width, height) frame: ``render``
    resized to it, as a shot's plate-sized frame would be."""
    w, h = size
    image = torch.nn.functional.interpolate(render[None], size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    noise = torch.randn((1, *model.noise_shape(h, w)), generator=torch.Generator().manual_seed(0))
    model.refine(image[..., :64, :64], torch.full((1, 1, 64, 64), strength), noise[..., :64, :64], 1)  # warm-up
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.refine(image, torch.full((1, 1, h, w), strength), noise, 1)
        seconds.append(time.perf_counter() - t0)
    return float(np.median(seconds))


def bench_capture(name: str, args: argparse.Namespace) -> dict:
    data = capture_folder(name, args)
    work = args.work / name
    print(f"== {name}: reconstruction ({args.recon_steps} steps)", flush=True)
    recon = reconstruct(data, work / "scene", args.recon_steps, args.threads)
    scene = read_gaussians(work / "scene" / "scene.ply")
    renders, targets, names = held_out(scene, data)
    before = score(renders, targets, names)
    print(f"   unrefined: PSNR {before.mean_psnr:.3f} dB, SSIM {before.mean_ssim:.4f} on {len(names)} views", flush=True)

    print(f"== {name}: training pairs and the built-in sharpening pass ({args.refiner_steps} steps)", flush=True)
    model, trained = train_builtin(scene, data, work, args)

    frame_s = cost_per_frame(model, renders[0])
    print(f"   cost: {frame_s:.2f} s per 768x576 frame (model call, 1 step, {args.threads} thread"
          f"{'s' if args.threads > 1 else ''}); training {trained['train_seconds_total']:.0f} s "
          f"({trained['steps']} steps, {trained['pairs']} pairs)", flush=True)
    results = {}
    for strength in args.strength:
        for steps in args.steps:
            t_refine = time.perf_counter()
            refined = refine_views(model, renders, strength, steps, seed=1)
            seconds_per_view = (time.perf_counter() - t_refine) / len(renders)
            after = score(refined, targets, names)
            results[f"strength_{strength:g}_steps_{steps}"] = {
                "strength": strength, "steps": steps, "psnr": after.mean_psnr, "ssim": after.mean_ssim,
                "psnr_gain": after.mean_psnr - before.mean_psnr, "ssim_gain": after.mean_ssim - before.mean_ssim,
                "seconds_per_view": seconds_per_view}
            print(f"   refined (strength {strength:g}, {steps} step{'s' if steps > 1 else ''}): "
                  f"PSNR {after.mean_psnr:.3f} dB ({after.mean_psnr - before.mean_psnr:+.3f}), "
                  f"SSIM {after.mean_ssim:.4f} ({after.mean_ssim - before.mean_ssim:+.4f}), "
                  f"{seconds_per_view:.2f} s/view", flush=True)
    return {
        "capture": name, "held_out_views": len(names),
        "reconstruction": {k: recon.get(k) for k in ("steps", "gaussians", "train_seconds", "reused")},
        "unrefined": {"psnr": before.mean_psnr, "ssim": before.mean_ssim},
        "refined": results,
        "refiner": trained,
        "seconds_per_frame_768x576": frame_s,
    }


def train_builtin(scene, data: Path, work: Path, args: argparse.Namespace) -> tuple[BuiltinRefiner, dict]:
    """The built-in refiner trained from scratch on pairs from ``scene``'s training views
    (saved in ``work/refiner``); the model and its training figures."""
    t0, c0 = time.perf_counter(), time.process_time()
    train_set = load_dataset(data, "train")
    pairs = make_pairs(scene, train_set, PairSettings(views=args.pair_views), early=early_reconstructions(work / "scene"),
                       seed=0)
    pair_seconds = time.perf_counter() - t0
    settings = TrainSettings(max_steps=args.refiner_steps, max_minutes=args.refiner_minutes, seed=0)
    model, figures = train_refiner(pairs, work / "refiner", work / "refiner-training", settings, resume=False)
    return model, {"pairs": len(pairs), "pair_seconds": pair_seconds, "steps": figures["steps"],
                   "train_seconds_total": time.perf_counter() - t0, "cpu_seconds_total": time.process_time() - c0,
                   "loss_ema": figures["loss_ema"], "patch": figures["patch"],
                   "settings": {"channels": list(settings.channels), "batch": settings.batch, "lr": settings.lr}}


# --- stability: warped against independent noise on a moving camera ------------------------------

def camera_path(cameras: list[Camera], frames: int, size: tuple[int, int], travel: float) -> list[Camera]:
    """``frames`` cameras (``size`` = width, height) trucking from the middle training view
    towards its nearest neighbour and on, ``travel`` times their distance in all, keeping the
    middle view's orientation."""
    centres = np.stack([c.center for c in cameras])
    a = len(cameras) // 2
    distance = np.linalg.norm(centres - centres[a], axis=1)
    distance[a] = np.inf
    b = int(np.argmin(distance))
    start = cameras[a].resized(*size)
    return [start.with_pose(start.R, -start.R @ (centres[a] + s * travel * (centres[b] - centres[a])))
            for s in np.linspace(0.0, 1.0, frames)]


def render_sequence(scene, cameras: list[Camera], folder: Path, first: int = 1001) -> list[tuple[int, Path]]:
    """Render-stage EXRs of ``scene`` along ``cameras`` (:func:`splatfx.render.passes.render_passes`:
    colour, depth, motion to the next frame, masks), every Gaussian marked synthetic so the
    whole frame is refined; written as the render stage writes them."""
    element = np.full(len(scene), ELEMENTS["fragment"], np.int64)
    animated = FrameGaussians(scene, element, np.zeros((len(scene), 3)), np.arange(len(scene)))
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, camera in enumerate(cameras):
        following = cameras[i + 1] if i + 1 < len(cameras) else None
        channels = render_passes(animated, camera, following).channels()
        path = folder / f"frame.{first + i:04d}.exr"
        write_render_exr(path, channels, frame=first + i, fps=24)
        frames.append((first + i, path))
    return frames


def read_frame(path: Path) -> RenderLayers:
    channels, header = read_exr(path)
    return frame_layers(path, channels, header)


def unproject(camera: Camera, depth: np.ndarray) -> np.ndarray:
    """World points (H, W, 3) of every pixel centre at its depth (camera z), pinhole."""
    h, w = depth.shape
    x, y = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    local = np.stack([(x - camera.cx) / camera.fx * depth, (y - camera.cy) / camera.fy * depth, depth], axis=-1)
    return (local - camera.t) @ camera.R  # R^T (p - t), row vectors


def visible_pairs(a: RenderLayers, b: RenderLayers, camera_a: Camera, camera_b: Camera,
                  tolerance: float = 0.02, agree_px: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Where frame ``a``'s pixels land in frame ``b`` along ``a``'s motion vectors (H, W, 2, in
    pixel coordinates with centres at +0.5), and which of them are seen in both frames:
    synthetic and covered in ``a``; inside ``b``; the surface's depth reprojected into ``b``
    within the depths of ``b``'s 2x2 pixels around the landing point (± ``tolerance``), so
    neither occluded there nor on a depth edge; and a motion vector within ``agree_px`` of the
    surface's exact reprojection (a blended vector at a silhouette is nobody's motion)."""
    h, w = a.depth.shape
    x, y = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    landing = np.stack([x, y], axis=-1) + a.motion
    finite = np.isfinite(a.depth)
    exact, z = camera_b.project(unproject(camera_a, np.where(finite, a.depth, 1.0)).reshape(-1, 3))
    exact, z = exact.reshape(h, w, 2), z.reshape(h, w)
    c0 = np.clip(np.floor(landing[..., 0] - 0.5).astype(int), 0, w - 1)
    r0 = np.clip(np.floor(landing[..., 1] - 0.5).astype(int), 0, h - 1)
    c1, r1 = np.minimum(c0 + 1, w - 1), np.minimum(r0 + 1, h - 1)
    around = np.stack([b.depth[r0, c0], b.depth[r0, c1], b.depth[r1, c0], b.depth[r1, c1]])
    inside = (landing[..., 0] >= 0.5) & (landing[..., 0] <= w - 0.5) & (landing[..., 1] >= 0.5) & \
        (landing[..., 1] <= h - 0.5)
    with np.errstate(invalid="ignore"):
        depth_ok = (z >= around.min(axis=0) * (1 - tolerance)) & (z <= around.max(axis=0) * (1 + tolerance))
    seen = finite & (a.synthetic > 0) & (a.alpha > 0.5) & inside & (z > 0) & np.isfinite(around).all(axis=0) & \
        depth_ok & (np.linalg.norm(landing - exact, axis=-1) <= agree_px)
    return landing, seen


def warp_back(image: np.ndarray, landing: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3) of the next frame sampled (bilinear) where this frame's pixels land."""
    coords = [landing[..., 1] - 0.5, landing[..., 0] - 0.5]
    return np.stack([ndimage.map_coordinates(image[..., c], coords, order=1, mode="nearest")
                     for c in range(image.shape[-1])], axis=-1)


def colours_of(frames: list[Path]) -> list[np.ndarray]:
    """Each frame's display colour (sRGB-encoded, straight, clipped to [0, 1]), H x W x 3."""
    return [np.clip(display_colour(read_frame(p)), 0, 1) for p in frames]


def warp_error(colours: list[np.ndarray], geometry: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean absolute difference (8-bit sRGB code values) between each frame and the next one
    warped back along the motion vectors, over the pixels seen in both (:func:`visible_pairs`)."""
    total, count = 0.0, 0
    for (landing, seen), a, b in zip(geometry, colours[:-1], colours[1:]):
        diff = np.abs(warp_back(b, landing) - a)[seen]
        total += float(diff.sum())
        count += diff.size
    return 255.0 * total / count


def load_or_train(scene, data: Path, work: Path, args: argparse.Namespace) -> tuple[BuiltinRefiner, dict]:
    """The refiner the quality part trained for this capture, else one trained now."""
    folder = work / "refiner"
    if (folder / BUILTIN_CONFIG).is_file():
        model = BuiltinRefiner.from_pretrained(folder, device="cpu")
        return model, {"reused": str(folder), "steps": model.info.get("steps")}
    return train_builtin(scene, data, work, args)


def noise_sensitivity(model: BuiltinRefiner, colour: np.ndarray, strength: float, steps: int) -> float:
    """How far the model's output moves (mean absolute difference, 8-bit codes) when its noise
    is redrawn: the most that any noise schedule can change about its flicker."""
    image = torch.from_numpy(colour).permute(2, 0, 1)[None]
    h, w = colour.shape[:2]
    generator = torch.Generator().manual_seed(5)
    a, b = (model.refine(image, torch.full((1, 1, h, w), strength),
                         torch.randn((1, *model.noise_shape(h, w)), generator=generator), steps) for _ in range(2))
    return 255.0 * float((a - b).abs().mean())


def time_per_frame(model: BuiltinRefiner, layers: RenderLayers, strength: float, steps: int,
                   repeats: int = 3) -> dict[str, float]:
    """Median seconds of one frame's model call and one step of its noise warp."""
    h, w = layers.rgb.shape[:2]
    image = torch.from_numpy(np.clip(display_colour(layers), 0, 1)).permute(2, 0, 1)[None]
    shape = model.noise_shape(h, w)
    warper = NoiseWarper(shape, 0)
    motion, depth = motion_at(torch.from_numpy(layers.motion), shape[1:], model.noise_scale,
                              torch.from_numpy(layers.depth))
    model_s, warp_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.refine(image, torch.full((1, 1, h, w), strength), warper.noise[None], steps)
        model_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        warper.step(motion, depth)
        warp_s.append(time.perf_counter() - t0)
    return {"model_s": float(np.median(model_s)), "noise_warp_s": float(np.median(warp_s))}


def memory_worker(model_dir: Path, frame: Path, batch: int, strength: float, steps: int, threads: int) -> None:
    """In a fresh process: peak RSS growth (MiB) of one model call on ``batch`` copies of
    ``frame`` and of one noise warp step; prints them as JSON. A tiny call first loads the
    thread pools, so the figures are the work's own memory (inputs excluded)."""
    torch.set_num_threads(threads)
    model = BuiltinRefiner.from_pretrained(model_dir, device="cpu")
    layers = read_frame(frame)
    h, w = layers.rgb.shape[:2]
    model.refine(torch.rand(1, 3, 32, 32), torch.full((1, 1, 32, 32), strength), torch.randn(1, 3, 32, 32), steps)
    warp_noise(torch.randn(3, 8, 8), torch.zeros(8, 8, 2), torch.Generator().manual_seed(0))
    image = torch.from_numpy(np.clip(display_colour(layers), 0, 1)).permute(2, 0, 1)[None].repeat(batch, 1, 1, 1)
    strength_map = torch.full((batch, 1, h, w), strength)
    shape = model.noise_shape(h, w)
    noise = torch.randn((batch, *shape))
    motion, depth = motion_at(torch.from_numpy(layers.motion), shape[1:], model.noise_scale,
                              torch.from_numpy(layers.depth))
    warper = NoiseWarper(shape, 0)
    refine_mib = peak_growth_mib(lambda: model.refine(image, strength_map, noise, steps))
    warp_mib = peak_growth_mib(lambda: warper.step(motion, depth))
    print(json.dumps({"refine_mib": refine_mib, "noise_warp_mib": warp_mib}))


def memory_in_subprocess(model_dir: Path, frame: Path, batch: int, strength: float, steps: int,
                         threads: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--memory-worker", str(model_dir), str(frame), str(batch), str(strength),
           str(steps), str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_stability(name: str, args: argparse.Namespace) -> dict:
    """Warp error of consecutive refined frames along a moving camera: warped noise (the
    stage's), independent noise per frame, and the unrefined renders; time and memory per frame."""
    data = args.data / name
    work = args.work / name
    print(f"== {name} stability: reconstruction ({args.recon_steps} steps)", flush=True)
    reconstruct(data, work / "scene", args.recon_steps, args.threads)
    scene = read_gaussians(work / "scene" / "scene.ply")
    model, trained = load_or_train(scene, data, work, args)
    cameras = camera_path([f.camera for f in load_dataset(data, "train").frames], args.stability_frames,
                          tuple(args.stability_size), args.stability_travel)
    t0 = time.perf_counter()
    frames = render_sequence(scene, cameras, work / "stability" / "render")
    render_s = (time.perf_counter() - t0) / len(frames)
    layers = [read_frame(p) for _, p in frames]
    geometry = [visible_pairs(a, b, ca, cb) for a, b, ca, cb in zip(layers[:-1], layers[1:], cameras[:-1], cameras[1:])]
    speed = float(np.mean([np.linalg.norm(f.motion, axis=-1).mean() for f in layers[:-1]]))
    seen = float(np.mean([s.mean() for _, s in geometry]))
    renders = colours_of([p for _, p in frames])
    baseline = warp_error(renders, geometry)
    w, h = args.stability_size
    print(f"   {len(frames)} frames at {w}x{h}, mean motion {speed:.2f} px/frame, {100 * seen:.1f} % of pixels "
          f"seen in both frames of a pair; unrefined warp error {baseline:.3f} (8-bit codes)", flush=True)
    results = {}
    for strength in args.stability_strength:
        row = {"strength": strength, "steps": args.stability_steps}
        for kind in ("warped", "independent"):
            out = work / "stability" / kind
            shutil.rmtree(out, ignore_errors=True)
            # the stage restarts the noise after a gap in the frame numbers: numbering the same
            # frames 2 apart gives every frame fresh, independent noise through the same code
            numbered = frames if kind == "warped" else [(2 * n, p) for n, p in frames]
            options = RefineOptions(steps=args.stability_steps, strength=strength, seed=0)
            t0 = time.perf_counter()
            refine_sequence(numbered, out, model, options, progress=False)
            row[f"{kind}_stage_s_per_frame"] = (time.perf_counter() - t0) / len(frames)
            refined = colours_of([out / p.name for _, p in frames])
            row[kind] = warp_error(refined, geometry)
            # the refinement's own flicker: the warp error of its change to each frame
            row[f"{kind}_change"] = warp_error([r - c for r, c in zip(refined, renders)], geometry)
            row[f"{kind}_mean_change"] = 255.0 * float(np.mean([np.abs(r - c).mean() for r, c in zip(refined, renders)]))
        row["ratio"] = row["warped"] / row["independent"]
        row["change_ratio"] = row["warped_change"] / row["independent_change"]
        row["noise_sensitivity"] = noise_sensitivity(model, renders[0], strength, args.stability_steps)
        results[f"strength_{strength:g}"] = row
        print(f"   strength {strength:g}: warp error warped {row['warped']:.3f}, independent {row['independent']:.3f} "
              f"(ratio {row['ratio']:.3f}); of the change alone {row['warped_change']:.3f} vs "
              f"{row['independent_change']:.3f} (ratio {row['change_ratio']:.3f}); mean change "
              f"{row['warped_mean_change']:.3f}, noise sensitivity {row['noise_sensitivity']:.3f}", flush=True)
    timing = time_per_frame(model, layers[0], args.stability_strength[0], args.stability_steps)
    memory = {batch: memory_in_subprocess(work / "refiner", frames[0][1], batch, args.stability_strength[0],
                                          args.stability_steps, args.threads) for batch in (1, 4)}
    print(f"   per frame ({args.threads} thread{'s' if args.threads > 1 else ''}): model {timing['model_s']:.3f} s, "
          f"noise warp {timing['noise_warp_s']:.3f} s, render {render_s:.2f} s; peak RSS growth: model "
          f"{memory[1]['refine_mib']:.0f} MiB (batch 1), {memory[4]['refine_mib']:.0f} MiB (batch 4), "
          f"noise warp {memory[1]['noise_warp_mib']:.0f} MiB", flush=True)
    return {"capture": name, "frames": len(frames), "size": [w, h], "mean_motion_px": speed, "seen_share": seen,
            "unrefined": baseline, "refined": results, "time_per_frame": timing | {"render_s": render_s},
            "memory_mib": {f"batch_{b}": m for b, m in memory.items()}, "refiner": trained}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="the reference captures")
    parser.add_argument("--captures", nargs="+", default=["lego_200", "fern", "south_building"])
    parser.add_argument("--solve", type=Path, default=None,
                        help="a camera solve of south_building to reuse (default: solved into --work)")
    parser.add_argument("--recon-steps", type=int, default=600, help="steps of the under-trained reconstruction")
    parser.add_argument("--refiner-minutes", type=float, default=10.0, help="wall-time cap on the refiner's training")
    parser.add_argument("--refiner-steps", type=int, default=TrainSettings().max_steps,
                        help="steps of the sharpening pass's training (default: its default, [refine] train_steps)")
    parser.add_argument("--pair-views", type=int, default=64, help="training views rendered for pairs")
    parser.add_argument("--strength", type=float, nargs="+", default=[0.3], help="strengths to evaluate")
    parser.add_argument("--steps", type=int, nargs="+", default=[1],
                        help="DDIM steps to evaluate (the built-in pass runs 1 whatever it is asked)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest on a busy shared machine)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "splatfx-bench-refine",
                        help="reconstructions and models (kept: a second run reuses the reconstructions)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument("--parts", nargs="+", choices=("quality", "stability"), default=["quality", "stability"],
                        help="which parts to run")
    parser.add_argument("--stability", dest="parts", action="store_const", const=["stability"],
                        help="only the stability part (same as --parts stability)")
    parser.add_argument("--stability-capture", default="fern", help="capture of the moving-camera sequence")
    parser.add_argument("--stability-frames", type=int, default=16, help="frames of the camera move")
    parser.add_argument("--stability-travel", type=float, default=2.0,
                        help="camera travel, in multiples of the distance between the two nearest training views")
    parser.add_argument("--stability-size", type=int, nargs=2, default=[768, 576], metavar=("W", "H"),
                        help="frame size of the sequence")
    parser.add_argument("--stability-strength", type=float, nargs="+", default=[0.3, 0.6, 1.0],
                        help="strengths to compare warped and independent noise at")
    parser.add_argument("--stability-steps", type=int, default=1, help="DDIM steps of the stability part")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    print(f"load average {load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f} (1 / 5 / 15 min, "
          f"{os.cpu_count()} cores), {args.threads} torch thread{'s' if args.threads > 1 else ''}", flush=True)
    t0 = time.perf_counter()
    figures: dict = {}
    if "quality" in args.parts:
        figures["captures"] = [bench_capture(name, args) for name in args.captures]
    if "stability" in args.parts:
        figures["stability"] = bench_stability(args.stability_capture, args)
    figures.update({"wall_seconds": time.perf_counter() - t0, "threads": args.threads,
                    "load_before": load_before, "load_after": os.getloadavg()})
    print(f"load average before {load_before[0]:.1f}, after {figures['load_after'][0]:.1f} (2 cores)")
    failed = [c["capture"] for c in figures.get("captures", [])
              if not all(r["psnr_gain"] > 0 and r["ssim_gain"] > 0 for r in c["refined"].values())]
    unstable = [r["strength"] for r in figures.get("stability", {}).get("refined", {}).values()
                if not r["warped"] < r["independent"]]
    figures["improved_everywhere"] = not failed
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if failed:
        print(f"the refiner did not improve both PSNR and SSIM on: {', '.join(failed)}", file=sys.stderr)
    if unstable:
        print(f"warped noise was not more stable than independent noise at strength {unstable}", file=sys.stderr)
    return 1 if failed or unstable else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory-worker"]:
        model_dir, frame, batch, strength, steps, threads = sys.argv[2:8]
        memory_worker(Path(model_dir), Path(frame), int(batch), float(strength), int(steps), int(threads))
        sys.exit(0)
    sys.exit(main())
