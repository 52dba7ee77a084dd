"""Faults during stages: ``kill -9``, a full disk and a read-only shot folder.

A stage killed with SIGKILL and started again with the same command continues from its
last completed unit of work (fx: the stage; train: the last checkpoint; render and comp:
the last finished frame), and its final outputs equal those of an uninterrupted run. A
stage that cannot write (no space, read-only folder) fails with one clear line and leaves
the shot folder as it was: outputs and the manifest's earlier records unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from splatfx.cli import main
from splatfx.comp.stage import run_comp
from splatfx.shot.config import config_from_dict, config_to_dict, save_config
from splatfx.io.formats import write_gaussians
from splatfx.core.gaussians import Gaussians
from splatfx.io.images import read_exr, read_image
from splatfx.shot.scene_frame import Plane, SceneFrame
from splatfx.render.stage import run_render
from splatfx.core.sh import rgb_to_sh
from splatfx.shot.folder import Shot, create_shot

from test_comp import make_shot
from test_fx import shell

CLI = [sys.executable, "-c", "import sys; from splatfx.cli import main; sys.argv[0] = 'splatfx'; main()"]
RENDER_SHOT = [*CLI, "render"]


# --- helpers ---------------------------------------------------------------------------------------

def kill_when(command: list[str], ready: Callable[[], bool], log: Path, timeout: float = 300.0) -> None:
    """Run ``command`` in a child process and SIGKILL it as soon as ``ready()`` holds."""
    shown = " ".join(command[3:])  # what follows ``python -c CODE``
    with open(log, "wb") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        try:
            while not ready():
                if child.poll() is not None:
                    pytest.fail(f"{shown} ended (code {child.returncode}) before it could be "
                                f"killed:\n{log.read_text(errors='replace')[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"{shown}: the moment to kill it never came")
                time.sleep(0.01)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL


def last_run(shot_root: Path, stage: str) -> dict | None:
    """The newest manifest record of ``stage`` (None before the manifest or the run exists)."""
    try:
        runs = json.loads((shot_root / "manifest.json").read_text())["runs"]
    except (FileNotFoundError, ValueError, KeyError):
        return None
    mine = [r for r in runs if r["stage"] == stage]
    return mine[-1] if mine else None


def runs_of(shot_root: Path) -> list[dict]:
    return json.loads((shot_root / "manifest.json").read_text())["runs"]


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def assert_same_npz(a: Path, b: Path) -> None:
    left, right = npz_arrays(a), npz_arrays(b)
    assert sorted(left) == sorted(right)
    for key in left:
        np.testing.assert_array_equal(left[key], right[key], err_msg=key)


def ledger_has(shot: Shot, stage: str, frame: int) -> Callable[[], bool]:
    """Whether a per-frame stage has recorded ``frame`` as finished (its output is then trusted)."""
    path = shot.state_dir / f"{stage}_frames.json"

    def recorded() -> bool:
        try:
            return str(frame) in json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return False
    return recorded


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def set_settings(shot: Shot, change: Callable[[dict], None]) -> Shot:
    settings = config_to_dict(shot.config)
    change(settings)
    save_config(config_from_dict(settings, shot.toml_path), shot.toml_path)
    return Shot.open(shot.root)


# --- an fx shot ------------------------------------------------------------------------------------

def make_fx_shot(root: Path, data_dir: Path, fragments: int = 8) -> Shot:
    """12 real plates, a z-up scene frame scaled and rotated from the solve, a small building
    on a ground plane, and [fx] settings for a quick collapse and snow."""
    plates = root / "plates_src"
    plates.mkdir(parents=True)
    for src in sorted((data_dir / "south_building" / "images").iterdir())[:12]:
        (plates / src.name).symlink_to(src)
    shot = create_shot(root / "shot", plates, fps=24.0)
    rotation = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    shot.solve_dir.mkdir()
    SceneFrame(up=np.array([0, 0, 1.0]), ground=Plane(np.array([0, 0, 1.0]), 0.0), up_source="test",
               ground_inlier_fraction=1.0, camera_up_angle_deg=0.0, scale=2.0, scale_source="test",
               rotation=rotation, translation=np.zeros(3)).save(shot.solve_dir / "scene.json")
    rng = np.random.default_rng(0)
    building = shell((4.0, 3.0, 6.0), 2000) + (-2.0, -1.5, 0.0)
    ground = np.column_stack([rng.uniform(-8, 8, 3000), rng.uniform(-8, 8, 3000), np.zeros(3000)])
    ground = ground[(np.abs(ground[:, 0]) > 2.5) | (np.abs(ground[:, 1]) > 2.0)][:1500]
    world = np.concatenate([building, ground])
    n = len(world)
    sh = np.zeros((n, 4, 3), np.float32)
    sh[:, 0] = rgb_to_sh(np.where(np.arange(n)[:, None] < len(building), [0.7, 0.5, 0.4], [0.3, 0.4, 0.3]))
    scene = Gaussians.from_arrays({"means": (world / 2.0) @ rotation, "quats": np.tile([1.0, 0, 0, 0], (n, 1)),
                                   "log_scales": np.full((n, 3), -3.5), "opacity_logits": np.full(n, 3.0), "sh": sh})
    shot.scene_dir.mkdir()
    write_gaussians(scene, shot.scene_dir / "scene.ply")

    def fx(settings: dict) -> None:
        settings["fx"] = {"effects": ["collapse", "snow"],
                          "select": {"shape": "box", "center": [0.0, 0.0, 3.2], "size": [4.5, 3.5, 6.5]},
                          "collapse": {"fragments": fragments, "debris": 150, "dust": 50, "fill_max": 800,
                                       "trigger_frame": 1002, "substeps": 6},
                          "snow": {"density": 2.0}}
    return set_settings(Shot.open(shot.root), fx)


def with_fragments(shot: Shot, fragments: int) -> Shot:
    return set_settings(shot, lambda s: s["fx"]["collapse"].update(fragments=fragments))


@pytest.fixture(scope="module")
def fx_reference(tmp_path_factory, data_dir) -> Shot:
    """An uninterrupted select + collapse (10 fragments) + snow."""
    shot = make_fx_shot(tmp_path_factory.mktemp("fx_reference"), data_dir, fragments=10)
    for stage in ("select", "collapse", "snow"):
        main(["fx", stage, str(shot.root)])
    return shot


@pytest.fixture()
def fx_shot(tmp_path, data_dir) -> Shot:
    """A shot whose last good state is a finished collapse with 8 fragments (settings now ask for 10)."""
    shot = make_fx_shot(tmp_path, data_dir, fragments=8)
    main(["fx", "select", str(shot.root)])
    main(["fx", "collapse", str(shot.root)])
    return with_fragments(shot, 10)


# --- kill -9 ---------------------------------------------------------------------------------------

def test_fx_collapse_killed_keeps_last_good_output_and_reruns(fx_shot, fx_reference, tmp_path):
    out = fx_shot.fx_dir / "collapse.npz"
    good = out.read_bytes()
    before = runs_of(fx_shot.root)
    def started() -> bool:
        record = last_run(fx_shot.root, "fx.collapse")
        return record is not None and record["status"] == "running"
    kill_when([*CLI, "fx", "collapse", str(fx_shot.root)], started, tmp_path / "collapse.log")

    assert out.read_bytes() == good  # the killed run never replaced the last good output
    after = runs_of(fx_shot.root)
    assert after[:len(before)] == before and [r["status"] for r in after[len(before):]] == ["running"]

    main(["fx", "collapse", str(fx_shot.root)])  # the same command again
    assert last_run(fx_shot.root, "fx.collapse")["status"] == "ok"
    assert [r["stage"] for r in runs_of(fx_shot.root)].count("fx.select") == 1  # select was not redone
    assert_same_npz(out, fx_reference.fx_dir / "collapse.npz")
    main(["fx", "snow", str(fx_shot.root)])
    assert_same_npz(fx_shot.fx_dir / "snow.npz", fx_reference.fx_dir / "snow.npz")


TRAIN_ARGS = ["--max-steps", "60", "--downscale", "8", "--no-eval", "--checkpoint-every", "10", "--sh-degree", "1",
              "--threads", "1", "--backend", "cpu", "--seed", "3"]


def test_train_killed_resumes_from_its_last_checkpoint(tmp_path, data_dir):
    fern = str(data_dir / "fern")
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    threads = torch.get_num_threads()
    try:
        main(["train", "--data", fern, "--out", str(reference), *TRAIN_ARGS])
    finally:
        torch.set_num_threads(threads)
    checkpoints = resumed / "checkpoints"
    kill_when([*CLI, "train", "--data", fern, "--out", str(resumed), *TRAIN_ARGS],
              lambda: (checkpoints / "step_00020.safetensors").is_file(), tmp_path / "train.log")
    assert not (resumed / "scene.ply").exists()
    done_before = sorted(p.name for p in checkpoints.glob("step_*.safetensors"))
    assert "step_00060.safetensors" not in done_before

    log = tmp_path / "resume.log"
    with open(log, "wb") as out:
        subprocess.run([*CLI, "train", "--data", fern, "--out", str(resumed), *TRAIN_ARGS, "--resume"],
                       stdout=out, stderr=subprocess.STDOUT, check=True)
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["steps"] == 60
    steps_run = 60 - int(done_before[-1][len("step_"):-len(".safetensors")])
    assert metrics["s_per_step"] is not None and steps_run < 60  # it continued, it did not start over
    assert (resumed / "scene.ply").read_bytes() == (reference / "scene.ply").read_bytes()


@pytest.fixture(scope="module")
def comp_reference(tmp_path_factory, data_dir) -> Shot:
    """Two real-plate frames rendered and composited without interruption."""
    shot = make_shot(tmp_path_factory.mktemp("comp_reference"), data_dir, frames=2)
    run_render(shot)
    run_comp(shot)
    return shot


def test_render_and_comp_killed_resume_at_the_next_frame(tmp_path, data_dir, comp_reference):
    shot = make_shot(tmp_path / "killed", data_dir, frames=2)
    kill_when([*RENDER_SHOT, str(shot.root)], ledger_has(shot, "render", 1001), tmp_path / "render.log")
    assert last_run(shot.root, "render")["status"] == "running"
    assert not shot.render_frame(1002).exists()

    result = run_render(Shot.open(shot.root))  # the same stage again
    assert (result.value["rendered"], result.value["skipped"]) == (1, 1)
    for frame in (1001, 1002):
        mine, theirs = read_exr(shot.render_frame(frame)), read_exr(comp_reference.render_frame(frame))
        assert sorted(mine[0]) == sorted(theirs[0])
        for name in mine[0]:
            np.testing.assert_array_equal(mine[0][name], theirs[0][name], err_msg=f"{frame} {name}")

    kill_when([*CLI, "comp", str(shot.root)], ledger_has(shot, "comp", 1001), tmp_path / "comp.log")
    assert last_run(shot.root, "comp")["status"] == "running"
    result = run_comp(Shot.open(shot.root))
    assert (result.value["composited"], result.value["skipped"]) == (1, 1)
    for frame in (1001, 1002):
        for name in (f"comp.{frame}.png", f"comp.{frame}.exr"):
            np.testing.assert_array_equal(read_image(shot.comp_dir / name).pixels,
                                          read_image(comp_reference.comp_dir / name).pixels, err_msg=name)


REFINE_ARGS = ["--steps", "2", "--batch", "1", "--device", "cpu"]


def test_refine_killed_resumes_at_the_next_frame(tmp_path, data_dir):
    """Refine with a small built-in model (untrained, fixed weights) on quarter-size renders."""
    from splatfx.refine.builtin import BuiltinRefiner

    shot = make_shot(tmp_path / "killed", data_dir, frames=2)
    shot = set_settings(shot, lambda s: s["render"].update(resolution_scale=0.25))
    run_render(shot)
    reference = Shot.open(shutil.copytree(shot.root, tmp_path / "reference" / "shot", symlinks=True))
    torch.manual_seed(0)
    model = tmp_path / "model"
    BuiltinRefiner.create(channels=(8, 16, 16), device="cpu").save_pretrained(model)
    main(["refine", str(reference.root), "--model", str(model), *REFINE_ARGS])

    first = shot.refined_frame(1001)
    kill_when([*CLI, "refine", str(shot.root), "--model", str(model), *REFINE_ARGS], first.is_file,
              tmp_path / "refine.log")
    assert last_run(shot.root, "refine")["status"] == "running"
    main(["refine", str(shot.root), "--model", str(model), *REFINE_ARGS])
    figures = last_run(shot.root, "refine")["figures"]
    assert (figures["kept"], figures["refined"]) == (1, 1)
    for frame in (1001, 1002):
        name = shot.render_frame(frame).name
        mine, theirs = read_exr(shot.refine_dir / name)[0], read_exr(reference.refine_dir / name)[0]
        assert sorted(mine) == sorted(theirs)
        for channel in mine:
            np.testing.assert_array_equal(mine[channel], theirs[channel], err_msg=f"{name} {channel}")


# --- a full disk and a read-only folder -------------------------------------------------------------

@contextlib.contextmanager
def tiny_disk(folder: Path, size: int) -> Iterator[Callable[[int], None]]:
    """A tmpfs of ``size`` bytes at ``folder`` (root only); yields a function that resizes it."""
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")

    def resize(new_size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new_size}", str(folder)], check=True)

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def run_in_process(args: list[str], capsys) -> tuple[int, str]:
    """``splatfx ARGS`` in this process: its exit code and what it printed to stderr."""
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def run_with_file_limit(args: list[str], limit_bytes: int) -> tuple[int, str]:
    """``splatfx ARGS`` in a child process that cannot grow any file past ``limit_bytes``."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, preexec_fn=limit, timeout=600)
    return done.returncode, done.stderr


def assert_failed_cleanly(outcome: tuple[int, str], shot: Shot, files_before: dict[str, bytes],
                          runs_before: list[dict], *words: str) -> str:
    """One clear error line; outputs as they were; earlier manifest records untouched; no debris.
    Returns the error line."""
    code, stderr = outcome
    assert code != 0
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and all(w in errors[0] for w in words), stderr
    assert snapshot(shot.fx_dir) == files_before  # no new, changed or half-written file (hidden ones included)
    runs = runs_of(shot.root)
    assert runs[:len(runs_before)] == runs_before
    assert all(r["status"] != "ok" for r in runs[len(runs_before):])
    return errors[0]


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_full_disk_is_a_clear_error_and_keeps_the_last_good_state(how, fx_shot, fx_reference, tmp_path, capsys):
    files_before, runs_before = snapshot(fx_shot.fx_dir), runs_of(fx_shot.root)
    npz_size = (fx_shot.fx_dir / "collapse.npz").stat().st_size
    if how == "tmpfs":
        with tiny_disk(tmp_path / "disk", 64 << 20) as resize:
            shutil.copytree(fx_shot.root, tmp_path / "disk" / "shot", symlinks=True)
            shot = Shot.open(tmp_path / "disk" / "shot")
            used = int(subprocess.run(["df", "--output=used", "-B1", str(tmp_path / "disk")], capture_output=True,
                                      text=True, check=True).stdout.split()[-1])
            resize(used + npz_size // 2)  # room for the manifest and the hash cache, not for a new cache file
            outcome = run_in_process(["fx", "collapse", str(shot.root)], capsys)
            assert_failed_cleanly(outcome, shot, files_before, runs_before, "No space left on device")
            resize(64 << 20)  # space freed: the same command completes
            assert run_in_process(["fx", "collapse", str(shot.root)], capsys)[0] == 0
            assert_same_npz(shot.fx_dir / "collapse.npz", fx_reference.fx_dir / "collapse.npz")
    else:
        manifest_size = (fx_shot.root / "manifest.json").stat().st_size
        outcome = run_with_file_limit(["fx", "collapse", str(fx_shot.root)], max(manifest_size * 4, npz_size // 2))
        assert_failed_cleanly(outcome, fx_shot, files_before, runs_before, "File too large")
        assert run_in_process(["fx", "collapse", str(fx_shot.root)], capsys)[0] == 0
        assert_same_npz(fx_shot.fx_dir / "collapse.npz", fx_reference.fx_dir / "collapse.npz")


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` read-only: a read-only bind mount as root (root ignores modes), else chmod."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
            yield
        finally:
            subprocess.run(["umount", str(folder)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if not p.is_symlink()}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)


def test_read_only_shot_folder_is_a_clear_error(fx_shot, capsys):
    files_before, runs_before = snapshot(fx_shot.fx_dir), runs_of(fx_shot.root)
    manifest = (fx_shot.root / "manifest.json").read_bytes()
    with read_only(fx_shot.root):
        outcome = run_in_process(["fx", "collapse", str(fx_shot.root)], capsys)
    assert (fx_shot.root / "manifest.json").read_bytes() == manifest
    line = assert_failed_cleanly(outcome, fx_shot, files_before, runs_before, "Read-only file system")
    assert str(fx_shot.root) in line


def test_write_errors_name_the_output_not_a_temporary(fx_shot, capsys):
    with read_only(fx_shot.root):
        code, stderr = run_in_process(["fx", "collapse", str(fx_shot.root)], capsys)
    line = next(line for line in stderr.splitlines() if line.startswith("error:"))
    assert code == 1 and "unexpected" not in line and ".tmp." not in line
