"""Training: convergence on real data, exact resume, densification, checkpoints, CLI outputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import fern_shot

from splatfx.io.checkpoint import (Checkpoint, gaussians_from_params, latest_checkpoint, list_checkpoints, load_checkpoint,
                                   save_checkpoint)
from splatfx.cli import cli
from splatfx.io.dataset import Dataset, load_dataset
from splatfx.recon.densify import ADCStrategy, MCMCStrategy, crossed, relocation_correction
from splatfx.recon.evaluate import evaluate_split
from splatfx.io.formats.ply import read_ply
from splatfx.core.errors import ConfigError
from splatfx.recon.exposure import apply_exposure, exposure_for
from splatfx.recon.metrics import psnr
from splatfx.recon.train import (TrainConfig, Trainer, identity_exposure, learnt_exposure, make_strategy,
                                 means_lr_at)
from splatfx.recon.recipe import CLOCK_SPAN, FULL_GAUSSIANS, REFERENCE_STEPS, STEPS_AT_CAP, choose_recipe
from splatfx.recon.working_size import CPU_COST, TARGET_STEPS, choose_working_size
from splatfx.shot.config import config_from_dict, override

# Measured: 300 MCMC steps on 20 lego views at 50×50 give 19.4 dB on 10 held-out views
# (the random initialisation scores ≈ 11 dB).
PSNR_FLOOR = 17.5


def subset(dataset: Dataset, count: int) -> Dataset:
    """``count`` views spread evenly over a split."""
    frames = dataset.frames[:: max(1, len(dataset) // count)][:count]
    return Dataset(frames, source=dataset.source, layout=dataset.layout, split=dataset.split,
                   points=dataset.points, background=dataset.background)


def tiny_config(**changes) -> TrainConfig:
    """A fast schedule given in exact steps (not scaled)."""
    values = dict(max_steps=40, downscale=4, random_points=300, scale_schedule=False, refine_start=5,
                  refine_every=10, refine_stop=35, reset_every=25, sh_degree_interval=10, checkpoint_every=1000,
                  progress=False, eval_split=None, threads=2)
    values.update(changes)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def lego(data_dir) -> Path:
    return data_dir / "lego_200"


def lego_trainer(lego: Path, out: Path, config: TrainConfig, views: int = 10) -> Trainer:
    train_views = subset(load_dataset(lego, "train", downscale=config.downscale), views)
    return Trainer(lego, out, config, dataset=train_views)


def test_short_training_reaches_psnr_floor_on_held_out_views(lego, tmp_path) -> None:
    config = TrainConfig(max_steps=300, downscale=4, random_points=2000, strategy="mcmc", max_gaussians=3000,
                         progress=False, eval_split=None, threads=2)
    trainer = lego_trainer(lego, tmp_path, config, views=20)
    trainer.train()
    test_views = subset(load_dataset(lego, "test", downscale=4), 10)
    summary = evaluate_split(gaussians_from_params(trainer.params), test_views, progress=False)
    print(f"held-out PSNR {summary.mean_psnr:.2f} dB, SSIM {summary.mean_ssim:.4f}")
    assert summary.mean_psnr > PSNR_FLOOR


@pytest.mark.parametrize("strategy,exposure", [("adc", "off"), ("mcmc", "off"), ("adc", "affine")])
def test_resume_continues_exactly(lego, tmp_path, strategy, exposure) -> None:
    config = tiny_config(strategy=strategy, max_gaussians=400, exposure=exposure)
    straight = lego_trainer(lego, tmp_path / "a", config)
    straight.train()

    first = lego_trainer(lego, tmp_path / "b", config)
    first.train(until=20)
    resumed = lego_trainer(lego, tmp_path / "b", config)
    resumed.restore(latest_checkpoint(tmp_path / "b" / "checkpoints"))
    assert resumed.step == 20
    resumed.train()

    assert resumed.step == straight.step == 40
    for name, value in straight.params.items():
        assert torch.equal(value, resumed.params[name]), name
    assert torch.equal(straight.generator.get_state(), resumed.generator.get_state())
    if exposure == "affine":
        assert not torch.equal(straight.exposure, identity_exposure(10, straight.device))
        assert torch.equal(straight.exposure, resumed.exposure)


def test_adc_grows_from_a_small_init_on_real_images(lego, tmp_path) -> None:
    config = tiny_config(random_points=100, max_steps=50, refine_stop=50, reset_every=1000)
    trainer = lego_trainer(lego, tmp_path, config)
    trainer.train()
    assert len(trainer.params["means"]) > 200  # cloned and split where the images need detail
    # optimiser state follows the parameter surgery
    for group in trainer.optimizer.param_groups:
        p = group["params"][0]
        assert trainer.optimizer.state[p]["exp_avg"].shape == p.shape


def test_adc_respects_max_gaussians(lego, tmp_path) -> None:
    config = tiny_config(random_points=100, max_steps=50, refine_stop=50, reset_every=1000, max_gaussians=150)
    trainer = lego_trainer(lego, tmp_path, config)
    trainer.train()
    assert 100 < len(trainer.params["means"]) <= 150


def test_adc_prunes_transparent_gaussians(lego, tmp_path) -> None:
    trainer = lego_trainer(lego, tmp_path, tiny_config(random_points=200))
    with torch.no_grad():
        trainer.params["opacities"][:50] = -10.0  # opacity 4.5e-5, below prune_opacity
    kept_means = trainer.params["means"][50:].detach().clone()
    strategy = ADCStrategy()
    removed = strategy.prune(trainer.params, trainer.optimizer, trainer.state, prune_large=False)
    assert removed == 50
    assert torch.equal(trainer.params["means"], kept_means)
    assert trainer.state.grad2d.shape == (150,)


def test_mcmc_holds_the_count_at_its_cap(lego, tmp_path) -> None:
    config = tiny_config(strategy="mcmc", random_points=280, max_gaussians=300, max_steps=45)
    trainer = lego_trainer(lego, tmp_path, config)
    trainer.train()
    assert len(trainer.params["means"]) == 300


def test_mcmc_relocates_dead_gaussians_onto_live_ones(lego, tmp_path) -> None:
    trainer = lego_trainer(lego, tmp_path, tiny_config(strategy="mcmc", random_points=200))
    with torch.no_grad():
        trainer.params["opacities"][:40] = -10.0
    strategy = MCMCStrategy()
    moved = strategy.relocate(trainer.params, trainer.optimizer, trainer.generator)
    assert moved == 40
    assert len(trainer.params["means"]) == 200
    assert bool((torch.sigmoid(trainer.params["opacities"]) > strategy.min_opacity).all())
    # every relocated Gaussian sits exactly on a live one
    means = trainer.params["means"].detach()
    assert all(bool((means[40:] == m).all(dim=1).any()) for m in means[:40])


def test_relocation_correction_preserves_total_opacity() -> None:
    opacities = torch.tensor([0.05, 0.3, 0.9, 0.99, 0.5])
    copies = torch.tensor([1, 2, 3, 10, 51])
    new_opacity, scale = relocation_correction(opacities, copies)
    combined = 1 - (1 - new_opacity.double()) ** copies.double()
    assert torch.allclose(combined, opacities.double(), atol=1e-6)
    assert scale[0] == pytest.approx(1.0)  # one copy: nothing changes
    assert bool((scale[1:] < 1).all() & (scale[1:] > 0).all())


def test_checkpoint_round_trip_keeps_the_newest(tmp_path) -> None:
    params = {"means": torch.randn(5, 3), "opacities": torch.randn(5)}
    moments = {"means": {"exp_avg": torch.randn(5, 3), "step": torch.tensor(7.0)}}
    for step in (10, 20, 30, 40):
        save_checkpoint(Checkpoint(step, params, moments, {"grad2d": torch.ones(5)}, torch.arange(4, dtype=torch.uint8),
                                   elapsed_s=1.5, extra={"k": step}), tmp_path, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [30, 40]
    ckpt = load_checkpoint(latest_checkpoint(tmp_path))
    assert ckpt.step == 40 and ckpt.elapsed_s == 1.5 and ckpt.extra == {"k": 40}
    assert torch.equal(ckpt.params["means"], params["means"])
    assert torch.equal(ckpt.moments["means"]["exp_avg"], moments["means"]["exp_avg"])
    assert torch.equal(ckpt.strategy["grad2d"], torch.ones(5))
    assert torch.equal(ckpt.rng_state, torch.arange(4, dtype=torch.uint8))


def test_time_budget_stops_cleanly_and_saves(lego, tmp_path) -> None:
    config = tiny_config(max_steps=100_000, max_minutes=0.05)
    trainer = lego_trainer(lego, tmp_path, config)
    figures = trainer.train()
    assert figures["stopped_by_time_budget"] and 0 < figures["steps"] < 100_000
    assert load_checkpoint(latest_checkpoint(tmp_path / "checkpoints")).step == figures["steps"]


def test_train_eval_render_cli_write_their_files(data_dir, tmp_path) -> None:
    fern = data_dir / "fern"  # real photos with SfM points: exercises initialisation from points
    out = tmp_path / "scene"
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "--data", str(fern), "--out", str(out), "--max-steps", "30",
                                 "--downscale", "8", "--checkpoint-every", "10", "--threads", "2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 30 and metrics["test_views"] == 3
    # the SfM-point initialisation scores 10.5 dB; 20 steps measured 14.2 dB
    assert metrics["test_psnr"] > 12.0 and 0 < metrics["test_ssim"] <= 1
    assert metrics["gaussians"] == len(read_ply(out / "scene.ply"))
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [10, 20, 30]

    result = runner.invoke(cli, ["eval", "--scene", str(out / "scene.ply"), "--data", str(fern), "--downscale", "8",
                                 "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["views"] == 3
    assert evaluated["psnr"] == pytest.approx(metrics["test_psnr"], abs=1e-3)
    assert len(list((tmp_path / "eval" / "renders").glob("*.png"))) == 3
    # fern's photos learn a per-plate exposure; scored at the scene's mean exposure instead:
    result = runner.invoke(cli, ["eval", "--scene", str(out / "scene.ply"), "--data", str(fern), "--downscale", "8",
                                 "--out", str(tmp_path / "eval_mean"), "--mean-exposure", "--no-images"])
    assert result.exit_code == 0, result.output
    at_mean = json.loads((tmp_path / "eval_mean" / "metrics.json").read_text())["psnr"]
    assert at_mean == pytest.approx(metrics["test_psnr_at_mean_exposure"], abs=1e-3)
    assert at_mean == pytest.approx(evaluated["psnr_at_mean_exposure"], abs=1e-3)

    result = runner.invoke(cli, ["render", "--scene", str(out / "scene.ply"), "--data", str(fern), "--split", "train",
                                 "--downscale", "8", "--out", str(tmp_path / "renders")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "renders").glob("*.png"))) == 17


def test_coarse_steps_see_the_plate_as_a_half_size_camera(data_dir, tmp_path) -> None:
    """A coarse step renders the view at half size with the intrinsics halved: on real fern photos
    and its SfM-point scene that is the full-size render box-averaged 2×2 (a camera off by half a
    pixel is not), and its target is the plate averaged the same way."""
    from splatfx.recon.train import halved

    config = TrainConfig(max_steps=100, downscale=1, progress=False, eval_split=None, threads=2)
    trainer = Trainer(data_dir / "fern", tmp_path, config)
    assert trainer.cameras[0].width == 504 and not trainer.coarse_at(0)  # 252 px would be below the floor
    with torch.no_grad():
        full = trainer.render(0, 0, trainer.background)[0][0]
        coarse = trainer.render(0, 0, trainer.background, coarse=True)[0][0]
        trainer.Ks[0, 0, 2] += 0.5
        shifted = trainer.render(0, 0, trainer.background, coarse=True)[0][0]
    assert coarse.shape == (189, 252, 3)
    match, off = psnr(coarse, halved(full)), psnr(shifted, halved(full))
    print(f"coarse render against the box-averaged full render: {match:.1f} dB; half a pixel off: {off:.1f} dB")
    assert match > 45.0 and match > off + 2.0  # measured 49.5 dB against 46.6 dB
    plate = torch.from_numpy(trainer.dataset.image(0))
    assert torch.allclose(halved(plate)[10, 20], plate[20:22, 40:42].mean(dim=(0, 1)))


def test_the_coarse_phase_opens_the_schedule_where_half_size_keeps_the_floor(data_dir, tmp_path) -> None:
    """``coarse_share`` of the schedule trains at half size, on plates of at least twice the floor."""
    config = TrainConfig(max_steps=1000, downscale=1, progress=False, eval_split=None, threads=2)
    for share, expected in ((0.25, [True, True, False]), (0.0, [False, False, False])):
        trainer = Trainer(data_dir / "fern", tmp_path / str(share), dataclasses.replace(config, coarse_share=share))
        trainer.cameras = [camera.scaled(2.0) for camera in trainer.cameras]  # 1008 px: halves to 504
        assert [trainer.coarse_at(at) for at in (0.0, 249.9, 250.0)] == expected


def test_train_shot_form_uses_shot_toml_and_skips_when_up_to_date(data_dir, tmp_path) -> None:
    """``splatfx train SHOT``: [train] from shot.toml, held-out views every Nth plate, the manifest
    records the run, a second run is skipped and a changed setting trains again."""
    shot = fern_shot(tmp_path / "shot", data_dir, max_steps="150", holdout_every="5", sh_degree="1", downscale="2.0")
    toml = shot / "shot.toml"
    runner = CliRunner()

    result = runner.invoke(cli, ["train", str(shot), "--threads", "2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((shot / "scene" / "metrics.json").read_text())
    assert metrics["steps"] == 150
    assert [v["name"] for v in metrics["per_view"]] == ["image000", "image005", "image010", "image015"]
    # measured 20.5 dB on the 4 held-out plates (the SfM-point initialisation scores ≈ 10.5 dB)
    assert metrics["test_psnr"] > 18.0
    assert metrics["gaussians"] == len(read_ply(shot / "scene" / "scene.ply"))
    runs = [r for r in json.loads((shot / "manifest.json").read_text())["runs"] if r["stage"] == "train"]
    assert [r["status"] for r in runs] == ["ok"]
    assert runs[0]["config"]["max_steps"] == 150 and runs[0]["config"]["holdout_every"] == 5
    assert runs[0]["figures"]["test_psnr"] == pytest.approx(metrics["test_psnr"])
    scene_bytes = (shot / "scene" / "scene.ply").read_bytes()

    result = runner.invoke(cli, ["train", str(shot), "--threads", "2"])
    assert result.exit_code == 0 and "up to date" in result.output, result.output
    assert (shot / "scene" / "scene.ply").read_bytes() == scene_bytes

    toml.write_text(toml.read_text().replace("max_steps = 150", "max_steps = 20"))
    result = runner.invoke(cli, ["train", str(shot), "--threads", "2"])
    assert result.exit_code == 0 and "up to date" not in result.output, result.output
    assert json.loads((shot / "scene" / "metrics.json").read_text())["steps"] == 20


# --- working size -------------------------------------------------------------------------------


def test_auto_working_size_buys_the_target_steps_at_the_largest_size() -> None:
    """12-MP plates in a 20-minute budget: the largest ladder size buying 2,000 steps, not full size."""
    chosen = choose_working_size((3072, 2304), downscale="auto", max_steps=30_000, max_minutes=20,
                                 gaussians=40_000, plates=24)
    assert chosen.size == (1536, 1152) and chosen.downscale == 2.0
    assert chosen.steps >= TARGET_STEPS and chosen.reason.startswith("auto")
    larger = choose_working_size((3072, 2304), downscale=1.5, max_steps=30_000, max_minutes=20,
                                 gaussians=40_000, plates=24)
    assert larger.steps < TARGET_STEPS  # the next size up would not buy them
    assert chosen.line(20) == f"training at 1536x1152 (plates 3072x2304 ÷ 2), ~{chosen.steps:,} steps in 20 min"


def test_working_size_floor_no_upsampling_and_forced_factor() -> None:
    # 2.5 minutes at 40k Gaussians cannot buy 2,000 steps at any size on 2 cores: the floor, never below it
    tight = choose_working_size((3072, 2304), downscale="auto", max_steps=30_000, max_minutes=2.5, gaussians=40_000)
    assert tight.size == (384, 288) and "floor" in tight.reason and 1000 < tight.steps < TARGET_STEPS
    small = choose_working_size((384, 288), downscale="auto", max_steps=1500, max_minutes=2.5, gaussians=20_000)
    assert small.size == (384, 288) and small.full_size  # the demo's plates stay at full size, never upsampled
    forced = choose_working_size((3072, 2304), downscale=2, max_steps=30_000, max_minutes=2.5, gaussians=40_000)
    assert forced.size == (1536, 1152) and forced.reason == "set: [train] downscale = 2"
    unlimited = choose_working_size((3072, 2304), downscale="auto", max_steps=30_000, max_minutes=None,
                                    gaussians=40_000)
    assert unlimited.full_size and "no time limit" in unlimited.line(None)
    few = choose_working_size((1536, 1152), downscale="auto", max_steps=100, max_minutes=10, gaussians=40_000)
    assert few.full_size and few.steps == 100  # 100 steps fit at full size: no reason to shrink


def test_downscale_setting_accepts_auto_or_a_number(tmp_path) -> None:
    assert TrainConfig().downscale == "auto"
    assert override(TrainConfig(), "--downscale", downscale=3).downscale == 3
    with pytest.raises(ConfigError, match="downscale"):
        override(TrainConfig(), "--downscale", downscale=0.5)
    with pytest.raises(ConfigError, match="auto"):
        override(TrainConfig(), "--downscale", downscale="automatic")
    section = config_from_dict({"train": {"downscale": "auto"}}).train
    assert section.downscale == "auto"
    assert config_from_dict({"train": {"downscale": 2}}).train.downscale == 2.0


def test_train_shot_picks_its_working_size_on_full_size_photos(data_dir, tmp_path) -> None:
    """Four 12-MP photos straight from the camera, solved, trained at ``downscale = "auto"`` with a
    tight budget: the trainer shrinks them itself, says so, records why, and writes the scene."""
    photos = sorted((data_dir / "south_building_full" / "images").iterdir())[:4]
    plates = tmp_path / "plates"
    plates.mkdir()
    for photo in photos:
        (plates / photo.name).symlink_to(photo)
    shot = tmp_path / "shot"
    runner = CliRunner()
    for args in (["init", str(shot), "--plates", str(plates)], ["solve", str(shot)]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    toml = shot / "shot.toml"
    text = toml.read_text()
    assert 'downscale = "auto"' in text  # the default, written out by init
    toml.write_text(text.replace('max_steps = "auto"', "max_steps = 4").replace(
        "# max_minutes (optional, unset)", "max_minutes = 0.1\n# was"))

    result = runner.invoke(cli, ["train", str(shot), "--threads", "2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((shot / "scene" / "metrics.json").read_text())
    working = metrics["working_size"]
    plate_w, plate_h = working["plate_size"]
    assert plate_w > 3000 and plate_h > 2250  # the solve's undistorted full-size images
    expected = choose_working_size((plate_w, plate_h), downscale="auto", max_steps=4, max_minutes=0.1,
                                   gaussians=working["gaussians"], plates=4)
    assert working["size"] == list(expected.size) and working["downscale"] == expected.downscale > 1
    assert working["reason"].startswith("auto")
    assert f"training at {expected.size[0]}x{expected.size[1]} (plates {plate_w}x{plate_h} ÷ " in result.output
    assert metrics["steps"] >= 1 and metrics["gaussians"] == len(read_ply(shot / "scene" / "scene.ply"))
    runs = [r for r in json.loads((shot / "manifest.json").read_text())["runs"] if r["stage"] == "train"]
    assert runs[-1]["figures"]["working_size"]["size"] == list(expected.size)


# --- the recipe the machine can afford (splatfx.recon.recipe) ------------------------------------


def test_recipe_lays_the_schedule_over_a_cpu_budget_and_keeps_3dgs_on_a_gpu() -> None:
    working = choose_working_size((800, 800), downscale="auto", max_steps=REFERENCE_STEPS, max_minutes=10,
                                  gaussians=200_000)
    cpu = choose_recipe(max_steps="auto", max_gaussians="auto", max_minutes=10, working=working, device="cpu")
    assert cpu.clock and cpu.max_steps == working.steps > 0
    # at the cap a step leaves the budget STEPS_AT_CAP steps, by the same cost model
    pixels = working.size[0] * working.size[1]
    assert CPU_COST.step_seconds(pixels, cpu.max_gaussians) * STEPS_AT_CAP == pytest.approx(600, rel=1e-3)
    assert cpu.line("adc", 10) == (f"recipe: ADC, the 3DGS schedule over {CLOCK_SPAN:g} × 10 min, cut at 10, "
                                   f"≤ {cpu.max_gaussians:,} Gaussians (a CPU with a time limit)")

    gpu = choose_recipe(max_steps="auto", max_gaussians="auto", max_minutes=10, working=working, device="cuda")
    unlimited = choose_recipe(max_steps="auto", max_gaussians="auto", max_minutes=None, working=working, device="cpu")
    for full in (gpu, unlimited):
        assert (full.max_steps, full.max_gaussians, full.clock) == (REFERENCE_STEPS, FULL_GAUSSIANS, False)
    asked = choose_recipe(max_steps=5000, max_gaussians=60_000, max_minutes=10, working=working, device="cpu")
    assert (asked.max_steps, asked.max_gaussians, asked.clock, asked.reason) == (5000, 60_000, False, "set in [train]")
    # a cap is never below the count the working size was chosen for
    tiny_budget = choose_recipe(max_steps="auto", max_gaussians="auto", max_minutes=0.05, working=working,
                                device="cpu")
    assert tiny_budget.max_gaussians == working.gaussians


def test_crossing_a_schedule_event_is_the_modulo_rule_for_whole_steps() -> None:
    for every in (1, 7, 25):
        for step in range(0, 100):
            assert crossed(step - 1, step, every) == (step > 0 and step % every == 0)
    assert crossed(24.6, 25.4, 25) and not crossed(25.4, 26.2, 25) and crossed(20.0, 51.0, 25)


def test_clock_recipe_finishes_the_schedule_inside_the_budget(lego, tmp_path) -> None:
    """A CPU run with max_steps = "auto" and a time limit: the schedule follows the clock (here a
    clock that spends 0.5 s a step, so 30 s buy 60 steps, whatever the cost model predicted),
    spanning CLOCK_SPAN × the budget. Densification stays in the schedule's first half, opacity
    resets fall at its tenths, the learning rate decays as far as the cut, the SH degree reaches
    its top, and the budget ends the run."""
    config = TrainConfig(max_minutes=0.5, downscale=4, random_points=300, refine_every=5, progress=False,
                         eval_split=None, threads=2, device="cpu")
    trainer = lego_trainer(lego, tmp_path, config)
    assert trainer.recipe.clock and trainer.config.max_steps == trainer.working.steps
    assert trainer.recipe.span == CLOCK_SPAN
    nominal = trainer.config.max_steps

    def place(step: int) -> float:  # where step (0-based) stands on the schedule
        return nominal * step / (60 * CLOCK_SPAN)

    events: list[tuple[int, dict]] = []
    after_step = trainer.strategy.after_step

    def recording(params, optimizer, state, step, info, generator):
        report = after_step(params, optimizer, state, step, info, generator)
        events.append((step, report))
        return report

    trainer.strategy.after_step = recording
    ticks = iter(range(10_000))
    figures = trainer.train(clock=lambda: 0.5 * next(ticks))

    assert figures["stopped_by_time_budget"] and figures["steps"] == 60
    grown = [step for step, report in events if report.get("cloned", 0) + report.get("split", 0)]
    half = min(step for step in range(60) if place(step) >= trainer.config.scaled(15_000))
    assert 40 <= half <= 43  # the schedule's first half: 70 % of the budget
    assert grown and max(grown) < half
    assert not any(report for step, report in events if step >= half)
    resets = [step for step, report in events if report.get("reset")]
    reset_every = trainer.strategy.reset_every
    assert resets == [step for step in range(1, half) if crossed(place(step - 1), place(step), reset_every)]
    assert len(resets) >= 3
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(means_lr_at(place(59), trainer.config, trainer.extent))
    assert trainer.sh_degree_at(place(59)) == 3


# --- per-plate exposure ([train] exposure) ---------------------------------------------------------


def test_affine_exposure_learns_each_plates_gain(lego, tmp_path) -> None:
    """Real lego views, four of ten taken 40 % darker (as a plate shot at another exposure): the
    per-plate transforms learn that gain, the mean transform stays the identity, and the scene
    fits the plates better than without them. A dark plate left out of the table gets the gain
    back from its dark neighbours in the capture, and its render through that estimate matches
    the plate far better than at the mean exposure."""
    dark = {1, 2, 3, 7}
    fits = {}
    for mode in ("affine", "off"):
        # a faster rate than the default (1e-3, made for runs of thousands of steps over many plates)
        config = tiny_config(max_steps=300, exposure=mode, refine_stop=150, reset_every=1000, random_points=1000,
                             exposure_lr=1e-2)
        trainer = lego_trainer(lego, tmp_path / mode, config)
        image = trainer.dataset.image
        trainer.dataset.image = lambda i, image=image: image(i) * (0.6 if i in dark else 1.0)
        figures = [trainer.train_step()["psnr"] for _ in range(300)]
        fits[mode] = sum(figures[-50:]) / 50
        if mode == "affine":
            # the gain each plate's transform gives the scene's colours (lego: mostly its white background)
            colours = trainer.dataset.image(0).reshape(-1, 3)
            gains = torch.stack([(torch.from_numpy(colours) @ m[:, :3].T + m[:, 3]).mean()
                                 for m in trainer.exposure.detach()])
            ratio = gains[sorted(dark)].mean() / gains[[i for i in range(10) if i not in dark]].mean()
            print(f"learnt dark/bright gain {ratio:.3f} (applied 0.6)")
            assert ratio == pytest.approx(0.6, abs=0.06)
            mean = trainer.exposure.detach().mean(dim=0)
            assert torch.allclose(mean, torch.eye(3, 4), atol=1e-5)
            check_held_out_plate_estimate(trainer, held_out=2)
    print(f"training PSNR over the last 50 steps: affine {fits['affine']:.2f} dB, off {fits['off']:.2f} dB")
    assert fits["affine"] > fits["off"] + 1.0


def check_held_out_plate_estimate(trainer: Trainer, held_out: int) -> None:
    """Plate ``held_out``'s transform estimated from the others alone, as for a held-out plate."""
    names = trainer.dataset.plate_names
    others = {name: m for name, m in learnt_exposure(trainer).items() if name != names[held_out]}
    estimate = torch.from_numpy(exposure_for(names[held_out], others, names))
    colours = torch.from_numpy(trainer.dataset.image(0).reshape(-1, 3))
    own = trainer.exposure.detach()[held_out]
    estimated_gain, own_gain = (float((colours @ m[:, :3].T + m[:, 3]).mean() / colours.mean())
                                for m in (estimate, own))
    # against the mean exposure (4 plates at 0.6, 6 at 1): 0.6 / 0.84 = 0.71
    print(f"held-out plate: estimated gain {estimated_gain:.3f}, its own transform's {own_gain:.3f}")
    assert estimated_gain == pytest.approx(own_gain, abs=0.05) and estimated_gain < 0.8
    with torch.no_grad():
        render = trainer.render(held_out, trainer.sh_degree_at(trainer.step), trainer.background)[0][0]
    plate = torch.from_numpy(trainer.dataset.image(held_out))
    at_mean, at_estimate = psnr(render, plate), psnr(apply_exposure(render, estimate), plate)
    print(f"held-out plate PSNR: {at_mean:.2f} dB at the mean exposure, {at_estimate:.2f} dB at the estimate")
    assert at_estimate > at_mean + 3.0


def test_exposure_auto_follows_the_capture(data_dir, lego) -> None:
    from splatfx.recon.train import learns_exposure

    assert not learns_exposure(TrainConfig(), load_dataset(lego, "train"))  # rendered: one exposure
    assert learns_exposure(TrainConfig(), load_dataset(data_dir / "fern", "train"))  # photographed
    assert learns_exposure(TrainConfig(exposure="affine"), load_dataset(lego, "train"))
    assert not learns_exposure(TrainConfig(exposure="off"), load_dataset(data_dir / "fern", "train"))


@pytest.mark.parametrize("max_steps", [200, 475, 1000, 1898, 3000, 30_000])
def test_two_opacity_resets_fit_in_the_densification_window_on_the_clock(max_steps) -> None:
    """On the clock a reset leaves at least 3 refinements before the next (when the window
    allows), and at least two resets fall inside densification, however short the nominal
    schedule; a step-counted run keeps the 3-refinement floor (a 60-step run never resets)."""
    strategy = make_strategy(TrainConfig(max_steps=max_steps), clock=True)
    assert 2 * strategy.reset_every < strategy.refine_stop
    assert strategy.reset_every >= min(3 * strategy.refine_every, strategy.refine_stop // 3)
    counted = make_strategy(TrainConfig(max_steps=max_steps))
    assert counted.reset_every >= 3 * counted.refine_every
    if max_steps == 30_000:
        assert (strategy.reset_every, strategy.refine_stop) == (3_000, 15_000) == (counted.reset_every,
                                                                                 counted.refine_stop)
