"""Benchmark of the CPU rasterizer ``splatfx.raster.rasterize(backend="cpu")``.

Usage::

    python benchmarks/raster.py [--quick] [--only SCENE] [--repeats N] [--threads N] [--json FILE]
    python benchmarks/raster.py --stages --threads 1 [--quick]   # CPU time per pipeline stage

Measures, per scene, the median (and best) wall time and the median CPU time of the
forward pass and of forward + backward, for the compiled CPU kernels and, where affordable,
the tiled pure-PyTorch renderer ``splatfx.raster.reference.rasterize_torch_tiled`` in the
same process (runs alternate, so that load from other processes falls on both alike), with
the speed-ups of the medians. The first call (numba cache load, warm-up) is not timed.
Memory is the peak resident set size (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``
just before the render) minus the resident size at that moment, for one forward (+ backward)
in a fresh subprocess after a tiny warm-up render; tracemalloc is not used because it sees
neither torch's nor numba's allocations.

On a loaded machine torch's OpenMP workers busy-wait and lose most of their time slices, so
the PyTorch baseline's wall time (and the speed-up) swings by 10× and more with the load;
``--threads 1`` (both renderers single-threaded) and the CPU-time columns are the steadier
comparison.

Scenes:

- synthetic ``N``/``W×H``: one camera (fov ≈ 64°) looking into a frustum filled with N
  random anisotropic Gaussians at depth 2–6, 10 % reaching outside the frame, RGB colours,
  opacities ``sigmoid(N(0, 1.5²))``; screen-space sizes are chosen so that the mean depth
  complexity (Gaussians whose 2-sigma disk covers a pixel) is about 20, as in trained scenes.
- ``fern-100k``: a stand-in for a trained reconstruction: fern's 10 091 COLMAP points, each
  split into 10 Gaussians jittered by half its nearest-neighbour distance, anisotropic
  scales of 0.4× that distance, random rotations, SH degree 3 (DC from the point colour),
  seen by fern's first camera as a 512×512 centre crop. Forward only, reported as fps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from _memory import peak_growth_mib  # noqa: E402  (benchmarks/, first on sys.path)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPLATFX_DATA", REPO.parent / "shared" / "data"))
DEPTH_COMPLEXITY = 20.0


@dataclass(frozen=True)
class Case:
    name: str
    n: int
    width: int
    height: int
    baseline: bool  # also run the tiled PyTorch renderer
    backward: bool = True


CASES = (
    Case("5k / 128²", 5_000, 128, 128, baseline=True),
    Case("100k / 512²", 100_000, 512, 512, baseline=False),
    Case("500k / 1280×720", 500_000, 1280, 720, baseline=False),
    Case("fern-100k / 512²", 100_000, 512, 512, baseline=False, backward=False),
)


# --- scenes -------------------------------------------------------------------------------


def synthetic_scene(n: int, width: int, height: int, seed: int = 0) -> dict:
    """Random Gaussians filling the view of one camera at the origin (OpenCV axes)."""
    gen = torch.Generator().manual_seed(seed)
    focal = 0.8 * width
    z = torch.rand(n, generator=gen) * 4.0 + 2.0
    x = (torch.rand(n, generator=gen) - 0.5) * 1.1 * width / focal * z
    y = (torch.rand(n, generator=gen) - 0.5) * 1.1 * height / focal * z
    sigma_px = math.sqrt(DEPTH_COMPLEXITY * width * height / (4.0 * math.pi * n))
    size = sigma_px * torch.exp(0.5 * torch.randn(n, 1, generator=gen)) * z[:, None] / focal
    scales = size * torch.exp(0.3 * torch.randn(n, 3, generator=gen))
    ks = torch.tensor([[[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]]])
    return {
        "means": torch.stack([x, y, z], dim=1), "quats": torch.randn(n, 4, generator=gen), "scales": scales,
        "opacities": torch.sigmoid(1.5 * torch.randn(n, generator=gen)), "features": torch.rand(n, 3, generator=gen),
        "viewmats": torch.eye(4)[None], "Ks": ks, "width": width, "height": height, "sh_degree": None,
    }


def fern_scene(width: int = 512, height: int = 512, per_point: int = 10, seed: int = 0) -> dict:
    """A trained-looking 100k-Gaussian scene grown from fern's sparse points (see module doc)."""
    from splatfx.core.camera import Camera
    from splatfx.io.colmap import read_points3D
    from splatfx.core.sh import rgb_to_sh
    from splatfx.raster.views import camera_tensors

    gen = torch.Generator().manual_seed(seed)
    points = read_points3D(DATA / "fern" / "sparse" / "0" / "points3D.bin")
    xyz = torch.tensor(np.ascontiguousarray(points.xyz), dtype=torch.float32)
    rgb = torch.tensor(np.ascontiguousarray(points.rgb), dtype=torch.float32) / 255.0
    nn = torch.cat([torch.cdist(xyz[i : i + 2048], xyz).topk(4, largest=False).values[:, 1:].mean(1)
                    for i in range(0, len(xyz), 2048)])
    parent = torch.arange(len(xyz)).repeat_interleave(per_point)
    n = len(parent)
    means = xyz[parent] + 0.5 * nn[parent, None] * torch.randn(n, 3, generator=gen)
    scales = 0.4 * nn[parent, None] * torch.exp(0.4 * torch.randn(n, 3, generator=gen))
    sh = torch.randn(n, 16, 3, generator=gen) * 0.05
    sh[:, 0] = rgb_to_sh(rgb[parent])
    poses = np.load(DATA / "fern" / "poses_bounds.npy")
    wide = Camera.from_llff(poses[0], round(height * 4 / 3), height)  # fern is 4:3; crop its centre
    cam = Camera(width, height, wide.fx, wide.fy, wide.cx - (wide.width - width) / 2, wide.cy, wide.R, wide.t)
    viewmats, ks = camera_tensors([cam])
    return {
        "means": means, "quats": torch.randn(n, 4, generator=gen), "scales": scales,
        "opacities": torch.sigmoid(2.0 * torch.randn(n, generator=gen) + 1.0), "features": sh,
        "viewmats": viewmats, "Ks": ks, "width": width, "height": height, "sh_degree": 3,
    }


# --- measurement ----------------------------------------------------------------------------

NAMES = ("means", "quats", "scales", "opacities", "features")


def make_scene(case: Case) -> dict:
    return fern_scene(case.width, case.height) if case.name.startswith("fern") else synthetic_scene(
        case.n, case.width, case.height)


def renderer(impl: str):
    """``rasterize``-like callable of an implementation: "cpu" (ours) or "torch" (tiled PyTorch)."""
    if impl == "cpu":
        from splatfx.raster import rasterize

        return lambda *a, **k: rasterize(*a, backend="cpu", **k)
    from splatfx.raster.reference import rasterize_torch_tiled

    return rasterize_torch_tiled


def forward(render, scene: dict) -> tuple:
    with torch.no_grad():
        return render(*(scene[k] for k in NAMES), scene["viewmats"], scene["Ks"], scene["width"], scene["height"],
                      sh_degree=scene["sh_degree"])


def forward_backward(render, scene: dict) -> None:
    """One training-like step: render with gradients, weighted-sum loss, backward."""
    leaves = [scene[k].clone().requires_grad_(True) for k in NAMES]
    images, alphas, _ = render(*leaves, scene["viewmats"], scene["Ks"], scene["width"], scene["height"],
                               sh_degree=scene["sh_degree"])
    weights = torch.linspace(-1.0, 1.0, images.numel()).reshape(images.shape)
    ((images * weights).sum() + alphas.sum()).backward()


@contextmanager
def torch_threads_for(impl: str) -> Iterator[None]:
    """torch's intra-op threads while ``impl`` runs: all of them for the PyTorch renderer, one for ours.

    Our renderer's threads are numba's; the torch operations around it (loss, autograd
    glue) are small. Left at two threads, torch's OpenMP workers busy-wait after each of
    those operations (libgomp's default when the PyTorch renderer runs first and no
    ``OMP_WAIT_POLICY`` is set) and take a core from our kernels. Users of splatfx do not
    see this: the package sets ``OMP_WAIT_POLICY=PASSIVE`` when it is imported first.
    """
    threads = torch.get_num_threads()
    if impl == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


SETTLE_S = 0.02  # longer than torch's OpenMP workers busy-wait after their last operation (≈ 8 ms here)


def settle(step: Callable, render: Callable, scene: dict) -> None:
    """Untimed runs of ``step`` for at least SETTLE_S seconds (and at least one)."""
    until = time.perf_counter() + SETTLE_S
    step(render, scene)
    while time.perf_counter() < until:
        step(render, scene)


def measure_times(case: Case, repeats: int) -> dict[str, dict]:
    """Median wall and CPU seconds (and best wall) per renderer and step.

    Renderers alternate run by run in this process, so that load from other processes falls
    on both alike; each timed run follows untimed ones of the same renderer (:func:`settle`),
    so that neither is timed while the other's threads are still winding down. CPU time
    (``time.process_time``: all threads of this process) does not count time spent waiting
    for a core, so it is the steadier figure on a busy machine.
    """
    scene = make_scene(case)
    impls = ("cpu", "torch") if case.baseline else ("cpu",)
    renders = {impl: renderer(impl) for impl in impls}
    steps = {"forward": forward} | ({"forward_backward": forward_backward} if case.backward else {})
    wall: dict = {impl: {step: [] for step in steps} for impl in impls}
    cpu: dict = {impl: {step: [] for step in steps} for impl in impls}
    for impl, render in renders.items():  # warm-up: numba cache load, thread pools, allocator
        with torch_threads_for(impl):
            for step in steps.values():
                step(render, scene)
    for step_name, step in steps.items():
        for _ in range(repeats):
            for impl, render in renders.items():
                with torch_threads_for(impl):
                    settle(step, render, scene)
                    start_wall, start_cpu = time.perf_counter(), time.process_time()
                    step(render, scene)
                    wall[impl][step_name].append(time.perf_counter() - start_wall)
                    cpu[impl][step_name].append(time.process_time() - start_cpu)
    _, alphas, meta = forward(renders["cpu"], scene)
    out = {}
    for impl in impls:
        out[impl] = {f"{k}_s": statistics.median(v) for k, v in wall[impl].items()}
        out[impl] |= {f"{k}_best_s": min(v) for k, v in wall[impl].items()}
        out[impl] |= {f"{k}_cpu_s": statistics.median(v) for k, v in cpu[impl].items()}
    out["cpu"] |= {"coverage": float(alphas.mean()), "visible": int((meta["radii"] > 0).all(-1).sum())}
    return out


def measure_memory(case: Case, impl: str) -> float:
    """Peak RSS growth (MiB) of one forward(+backward) of ``case``; call in a fresh process.

    A tiny render first loads the compiled kernels and thread pools; then the kernel's
    peak-RSS mark is reset (``/proc/self/clear_refs``), so the figure is the render's own
    working memory: inputs excluded, outputs and autograd state included.
    """
    render = renderer(impl)
    forward_backward(render, synthetic_scene(50, 32, 32))
    scene = make_scene(case)
    return peak_growth_mib(lambda: (forward_backward if case.backward else forward)(render, scene))


def memory_in_subprocess(case_index: int, impl: str) -> float:
    cmd = [sys.executable, __file__, "--memory-worker", str(case_index), impl]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return float(out.stdout.strip().splitlines()[-1])


STAGES = ("project_forward", "bin_gaussians", "gather_splats", "rasterize_forward", "rasterize_backward",
          "project_backward")


def measure_stages(case: Case, repeats: int) -> dict[str, float]:
    """CPU seconds (best of ``repeats``) of each pipeline stage in one forward + backward of ``case``.

    Wraps the stage functions the autograd glue calls (``splatfx.raster._autograd``), so
    the figures are the stages as the renderer runs them; meant for one thread
    (``--threads 1``), where CPU time is the work itself. ``intersections`` is the
    number of (splat, tile) pairs.
    """
    from splatfx.raster import _autograd

    times: dict[str, list[float]] = {name: [] for name in STAGES}
    originals = {name: getattr(_autograd, name) for name in STAGES}
    found: dict[str, int] = {}

    def timed(name: str) -> Callable:
        def run(*args: object, **kwargs: object) -> object:
            start = time.process_time()
            out = originals[name](*args, **kwargs)
            times[name].append(time.process_time() - start)
            if name == "bin_gaussians":
                found["intersections"] = out.n_isects
            return out
        return run

    scene = make_scene(case)
    step = forward_backward if case.backward else forward
    render = renderer("cpu")
    step(render, scene)
    try:
        for name in STAGES:
            setattr(_autograd, name, timed(name))
        for _ in range(repeats):
            step(render, scene)
    finally:
        for name, function in originals.items():
            setattr(_autograd, name, function)
    return {name: min(values) for name, values in times.items() if values} | found


def stage_table(rows: list[tuple[str, dict]]) -> str:
    """A Markdown table of :func:`measure_stages` results."""
    lines = ["| scene | intersections | " + " | ".join(STAGES) + " |", "|---|---:|" + "---:|" * len(STAGES)]
    for name, r in rows:
        cells = [f"{r[s] * 1e3:.2f} ms" if s in r else "–" for s in STAGES]
        lines.append(f"| {name} | {r['intersections']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- report -------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1e3:,.1f}"


def table(rows: list[dict]) -> str:
    """A Markdown table of the results: wall medians (best), CPU medians, speed-ups of both."""
    lines = [
        "| scene | renderer | forward ms: wall (best) / CPU | fwd+bwd ms: wall (best) / CPU | forward fps "
        "| peak RSS Δ MiB | speed-up fwd / fwd+bwd: wall; CPU |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = []
        for step in ("forward", "forward_backward"):
            cells.append("–" if f"{step}_s" not in r else
                         f"{_ms(r[f'{step}_s'])} ({_ms(r[f'{step}_best_s'])}) / {_ms(r[f'{step}_cpu_s'])}")
        speed = "–"
        if "speedup" in r:
            w, c = r["speedup"]["wall"], r["speedup"]["cpu"]
            speed = f"{w[0]:.0f}× / {w[1]:.0f}×; {c[0]:.0f}× / {c[1]:.0f}×"
        lines.append(f"| {r['case']} | {r['impl']} | {cells[0]} | {cells[1]} | {1 / r['forward_s']:.1f} | "
                     f"{r['peak_rss_mib']:,.0f} | {speed} |")
    return "\n".join(lines)


def selected(case: Case, args: argparse.Namespace) -> bool:
    """Whether the command line asks for ``case`` (``--quick`` skips 500k, ``--only`` picks by name)."""
    return not (args.quick and case.n >= 500_000) and (not args.only or case.name.startswith(args.only))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats, skip the 500k case")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (median)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both renderers (numba and torch); default: all cores")
    parser.add_argument("--only", default=None, help="run only the scenes whose name starts with this (e.g. 5k)")
    parser.add_argument("--stages", action="store_true",
                        help="instead: CPU time per pipeline stage (use with --threads 1), best of the repeats")
    parser.add_argument("--memory-worker", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:  # before numba is imported; inherited by the memory subprocesses
        os.environ["NUMBA_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        print(measure_memory(CASES[int(args.memory_worker[0])], args.memory_worker[1]))
        return
    repeats = args.repeats or (3 if args.quick else 7)

    import numba

    print(f"# splatfx raster benchmark: {os.cpu_count()} CPUs, numba threads {numba.config.NUMBA_NUM_THREADS}, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}, "
          f"median of {repeats}", flush=True)
    if args.stages:
        stage_rows = [(case.name, measure_stages(case, repeats)) for case in CASES if selected(case, args)]
        print(stage_table(stage_rows))
        return
    rows = []
    for index, case in enumerate(CASES):
        if not selected(case, args):
            continue
        results = measure_times(case, repeats)
        for impl, label in (("cpu", "splatfx cpu"), ("torch", "tiled PyTorch")):
            if impl in results:
                results[impl] |= {"case": case.name, "impl": label, "peak_rss_mib": memory_in_subprocess(index, impl)}
        if "torch" in results:
            ours, base = results["cpu"], results["torch"]
            ours["speedup"] = {
                kind: tuple(base[f"{step}{suffix}"] / ours[f"{step}{suffix}"] for step in ("forward", "forward_backward"))
                for kind, suffix in (("wall", "_s"), ("cpu", "_cpu_s"))
            }
        rows += list(results.values())
        print(f"  {case.name}: coverage {results['cpu']['coverage']:.2f}, visible {results['cpu']['visible']:,}, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
    print(table(rows))
    if args.json:
        from splatfx.core.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
