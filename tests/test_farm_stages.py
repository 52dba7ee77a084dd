"""The per-frame stages on the farm (issue 9): render, refine and comp spread over a local
process pool and a local Ray cluster write the same bytes as one process, and the driver
records every frame (ledger, manifest) so skipping and resuming keep working.

Real data: the comp tests' real-plate shot (south_building plates, a scene with a structure
that collapses) for render and comp; lego views as render frames and a tiny random
pixel-space diffusion model (its output depends on the noise, on the batch's make-up and on
the thread count: a wrong noise replay or batch would change the bits) for refine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from splatfx.cli import cli
from splatfx.comp.stage import run_comp
from splatfx.shot.farm import with_farm
from splatfx.io.images import write_png
from splatfx.refine.stage import RefineOptions, run_refine
from splatfx.render.stage import run_render
from splatfx.shot.runner import FrameLedger
from splatfx.shot.folder import Shot, create_shot

from test_comp import make_shot
from test_refine import _lego, _render_frame, _tiny_pixel_model

FRAMES = (1001, 1002, 1003)
REFINE_FRAMES = 5


def same_files(mine: Path, reference: Path, pattern: str) -> list[str]:
    """Assert ``mine`` holds exactly the files of ``reference`` matching ``pattern``, byte for
    byte, and no temporaries; returns their names."""
    names = sorted(p.name for p in reference.glob(pattern))
    assert names, f"no {pattern} in {reference}"
    assert sorted(p.name for p in mine.glob(pattern)) == names
    assert [p.name for p in mine.iterdir() if ".tmp" in p.name] == []
    for name in names:
        assert (mine / name).read_bytes() == (reference / name).read_bytes(), name
    return names


def ledger_records(shot: Shot, stage: str) -> dict[str, tuple[str, dict]]:
    return {frame: (entry["key"], entry["files"]) for frame, entry in FrameLedger(shot, stage).entries.items()}


def last_figures(shot: Shot, stage: str) -> dict:
    runs = [r for r in json.loads(shot.manifest_path.read_text())["runs"] if r["stage"] == stage]
    return runs[-1]["figures"]


def invoke(*args: str) -> None:
    result = CliRunner().invoke(cli, [*args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


# --- render and comp ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory, data_dir) -> Shot:
    """A three-frame real-plate shot with its fx done, nothing rendered yet."""
    return make_shot(tmp_path_factory.mktemp("farm_base"), data_dir, frames=len(FRAMES))


def copy_shot(shot: Shot, where: Path) -> Shot:
    return Shot.open(shutil.copytree(shot.root, where / "shot", symlinks=True))


@pytest.fixture(scope="module")
def reference(base, tmp_path_factory) -> Shot:
    """The base shot rendered and composited in this process (the default)."""
    shot = copy_shot(base, tmp_path_factory.mktemp("farm_reference"))
    assert run_render(shot).value["farm"]["executor"] == "in-process"
    assert run_comp(shot).value["farm"]["executor"] == "in-process"
    return shot


def check_render_and_comp(shot: Shot, reference: Shot) -> None:
    """Frames, ledgers and per-frame provenance equal the in-process run's."""
    assert same_files(shot.render_dir, reference.render_dir, "*.exr") == [f"frame.{f}.exr" for f in FRAMES]
    assert ledger_records(shot, "render") == ledger_records(reference, "render")
    same_files(shot.comp_dir, reference.comp_dir, "comp.*.exr")
    same_files(shot.comp_dir, reference.comp_dir, "comp.*.png")
    assert ledger_records(shot, "comp") == ledger_records(reference, "comp")
    assert last_figures(shot, "comp")["per_frame"] == last_figures(reference, "comp")["per_frame"]
    for name in ("shot.mp4", "review.mp4", "contact_sheet.png"):  # made by the driver after every frame
        assert (shot.comp_dir / name).stat().st_size > 0, name


def test_local_pool_renders_and_composites_the_same_bytes(base, reference, tmp_path):
    shot = copy_shot(base, tmp_path)
    result = run_render(with_farm(shot, workers=2, chunk_size=1))
    farm = result.value["farm"]
    assert (farm["executor"], farm["workers"], farm["chunks"]) == ("local", 2, 3)
    assert (result.value["rendered"], result.value["gaussians_max"]) == (3, reference_figure(reference, "render"))
    invoke("comp", str(shot.root), "--workers", "2", "--chunk-size", "2")
    assert last_figures(shot, "comp")["farm"]["chunks"] == 2
    check_render_and_comp(shot, reference)


def reference_figure(shot: Shot, stage: str) -> int:
    return last_figures(shot, stage)["gaussians_max"]


def test_ray_cluster_renders_and_composites_the_same_bytes_and_resumes(base, reference, tmp_path, ray_cluster,
                                                                      monkeypatch):
    shot = copy_shot(base, tmp_path)
    monkeypatch.chdir(tmp_path)  # a relative shot path: Ray's workers run in other directories
    invoke("render", "shot", "--executor", "ray", "--chunk-size", "2")
    farm = last_figures(shot, "render")["farm"]
    assert (farm["executor"], farm["chunk_size"], farm["chunks"]) == ("ray", 2, 2)
    result = run_comp(with_farm(shot, executor="ray", chunk_size=1))
    assert result.value["farm"]["chunks"] == 3
    check_render_and_comp(shot, reference)

    # A lost frame is all that runs again, on the cluster, and it comes back the same.
    (shot.render_dir / "frame.1002.exr").unlink()
    again = run_render(with_farm(shot, executor="ray", chunk_size=2)).value
    assert (again["rendered"], again["skipped"], again["farm"]["chunks"]) == (1, 2, 1)
    (shot.comp_dir / "comp.1003.png").unlink()
    again = run_comp(with_farm(shot, executor="ray")).value
    assert (again["composited"], again["skipped"]) == (1, 2)
    check_render_and_comp(shot, reference)


# --- refine --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pixel_model(tmp_path_factory) -> Path:
    return _tiny_pixel_model(tmp_path_factory.mktemp("farm_models"))


def lego_shot(root: Path, data_dir: Path) -> Shot:
    """Render-stage EXRs of lego views (motion one pixel right per frame, depth) and plates."""
    for k in range(REFINE_FRAMES):
        rgba = _lego(data_dir, k)
        write_png(root / "plates" / f"plate.{1001 + k:04d}.png", rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:]))
        _render_frame(root / "shot" / "render" / f"frame.{1001 + k:04d}.exr", 1001 + k, rgba)
    return create_shot(root / "shot", root / "plates", fps=24.0)


def refine(shot: Shot, model: Path, batch: int, seed: int = 3) -> dict:
    options = RefineOptions(steps=2, strength=0.4, seed=seed, batch=batch)
    return run_refine(shot, model=model, options=options, device="cpu", progress=False).value


@pytest.mark.parametrize(("executor", "workers", "chunk_size", "batch", "chunks"), [
    ("local", 2, 1, 2, 3),  # chunk size rounded up to the batch: 1001-1002, 1003-1004, 1005
    ("ray", None, 2, 1, 3),  # 1001-1002, 1003-1004, 1005: every later chunk replays the warp
])
def test_refine_chunks_replay_the_noise_and_match_one_pass(executor, workers, chunk_size, batch, chunks,
                                                           pixel_model, data_dir, tmp_path, request):
    if executor == "ray":
        request.getfixturevalue("ray_cluster")
    reference = lego_shot(tmp_path / "reference", data_dir)
    one_pass = refine(reference, pixel_model, batch)
    assert (one_pass["refined"], one_pass["farm"]["executor"]) == (REFINE_FRAMES, "in-process")

    shot = with_farm(lego_shot(tmp_path / "farm", data_dir), executor=executor, workers=workers,
                     chunk_size=chunk_size)
    figures = refine(shot, pixel_model, batch)
    assert (figures["farm"]["executor"], figures["farm"]["chunks"]) == (executor, chunks)
    assert same_files(shot.refine_dir, reference.refine_dir, "*.exr") == \
        [f"frame.{1001 + k}.exr" for k in range(REFINE_FRAMES)]
    assert {k: v for k, v in figures.items() if k != "farm"} == {k: v for k, v in one_pass.items() if k != "farm"}

    if executor == "local":
        # The frames depend on their noise: another seed changes the last frame's bits, so a
        # chunk that did not replay the warp (fresh noise at its first frame) could not match.
        other = lego_shot(tmp_path / "other_seed", data_dir)
        refine(other, pixel_model, batch, seed=4)
        last = f"frame.{1000 + REFINE_FRAMES}.exr"
        assert (other.refine_dir / last).read_bytes() != (reference.refine_dir / last).read_bytes()
    else:
        # A lost frame is all that is refined again (its chunk's other frame is kept), the same.
        (shot.refine_dir / "frame.1004.exr").unlink()
        again = refine(shot, pixel_model, batch)
        assert (again["kept"], again["refined"], again["farm"]["chunks"]) == (REFINE_FRAMES - 1, 1, 3)
        same_files(shot.refine_dir, reference.refine_dir, "*.exr")
