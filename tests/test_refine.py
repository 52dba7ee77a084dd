"""Diffusion refinement (splatfx.refine): local diffusers models loaded offline, the stage's
mask discipline, and the built-in per-scene refiner's training and resumption.

The local-model tests build a tiny, randomly initialised Stable Diffusion img2img pipeline
(UNet2DConditionModel, AutoencoderKL, CLIP text encoder and a character-level CLIP
tokenizer; needs ``transformers``) and a tiny unconditional pixel-space one (UNet2DModel
only), save them with ``save_pretrained`` and load them with the network switched off.
Frames are real: lego views, whose alpha is the synthetic matte.
"""

from __future__ import annotations

import json
import math
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from splatfx.core.color import linear_to_srgb, srgb_to_linear
from splatfx.core.errors import InputError
from splatfx.io.images import read_exr, write_exr, write_png
from splatfx.refine.builtin import (BuiltinRefiner, PairSettings, RefinerTrainer, TrainingPairs, TrainSettings,
                                    make_pairs)
from splatfx.refine.pipeline import load_refiner
from splatfx.refine.stage import RefineOptions, blend_weight, choose_model, compose, refine_sequence, render_frames
from splatfx.render.layers import RenderLayers
from splatfx.shot.folder import Shot, create_shot

SIZE = 46  # not a multiple of the models' size multiples: padding is exercised
FRAMES = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # these models are tiny


@pytest.fixture()
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- tiny models ---------------------------------------------------------------------------------

def _tiny_sd(folder: Path, inpainting: bool = False) -> Path:
    """A random tiny Stable Diffusion img2img (or inpainting) pipeline saved to ``folder``."""
    pytest.importorskip("transformers")
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline,
                           StableDiffusionInpaintPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=9 if inpainting else 4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=16, intermediate_size=32, num_attention_heads=2,
        num_hidden_layers=2, vocab_size=64, max_position_embeddings=77))
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{c: 2 + i for i, c in enumerate(letters)},
             **{c + "</w>": 28 + i for i, c in enumerate(letters)}}
    source = folder / "tokenizer-source"
    source.mkdir(parents=True)
    (source / "vocab.json").write_text(json.dumps(vocab))
    (source / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(source / "vocab.json"), str(source / "merges.txt"), model_max_length=77)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    kind = StableDiffusionInpaintPipeline if inpainting else StableDiffusionImg2ImgPipeline
    pipe = kind(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder / "sd", safe_serialization=True)
    return folder / "sd"


def _tiny_pixel_model(folder: Path) -> Path:
    """A random tiny unconditional pixel-space pipeline (UNet2DModel + DDPM) saved to ``folder``."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(1)
    unet = UNet2DModel(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, add_attention=False,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(folder / "pixel", safe_serialization=True)
    return folder / "pixel"


# --- a shot with rendered frames -----------------------------------------------------------------

def _lego(data_dir: Path, i: int) -> np.ndarray:
    """Test view ``i`` of lego as straight RGBA (sRGB codes / 255), SIZE x SIZE."""
    with Image.open(data_dir / "lego_200" / "test" / f"r_{i}.png") as im:
        return np.asarray(im.convert("RGBA").resize((SIZE, SIZE), Image.Resampling.BOX), np.float32) / 255


def _render_frame(path: Path, frame: int, rgba: np.ndarray) -> None:
    """A render-stage EXR: premultiplied linear colour, the lego as the synthetic matte,
    motion one pixel right per frame, depth, ids (half-float mask as the render writes it)."""
    alpha = rgba[..., 3]
    rgb = srgb_to_linear(rgba[..., :3]) * alpha[..., None]
    channels = {"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2], "A": alpha,
                "depth.Z": np.where(alpha > 0, 4.0, np.inf).astype(np.float32),
                "motion.u": np.ones_like(alpha), "motion.v": np.zeros_like(alpha),
                "mask.synthetic": alpha, "id": (alpha > 0).astype(np.uint32) * 7}
    write_exr(path, channels, half={"mask.synthetic"}, frame=frame, fps=24,
              attributes={"splatfx/stage": "render"})


@pytest.fixture()
def shot(tmp_path, data_dir) -> Shot:
    plates = tmp_path / "plates"
    for k in range(FRAMES):
        rgba = _lego(data_dir, k)
        write_png(plates / f"plate.{1001 + k:04d}.png", rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:]))
        _render_frame(tmp_path / "shot" / "render" / f"frame.{1001 + k:04d}.exr", 1001 + k, rgba)
    return create_shot(tmp_path / "shot", plates, fps=24.0)


def _check_refined(shot: Shot) -> float:
    """Every refined frame keeps its non-colour channels and its plate pixels bit for bit;
    returns the mean colour change on synthetic pixels."""
    changes = []
    for _, render_path in render_frames(shot.render_dir):
        before, header_before = read_exr(render_path)
        after, header_after = read_exr(shot.refine_dir / render_path.name)
        assert set(after) == set(before)
        assert header_after.frame == header_before.frame and header_after.pixel_types == header_before.pixel_types
        for name in before:
            if name not in ("R", "G", "B"):
                assert after[name].tobytes() == before[name].tobytes(), name
        plate = before["mask.synthetic"] == 0
        assert plate.sum() > 100 and (~plate).sum() > 100
        for name in ("R", "G", "B"):
            assert after[name][plate].tobytes() == before[name][plate].tobytes(), name
            assert np.isfinite(after[name]).all()
            changes.append(np.abs(after[name] - before[name])[~plate].mean())
    return float(np.mean(changes))


# --- local diffusers models ----------------------------------------------------------------------

def test_tiny_img2img_pipeline_loads_offline_and_refines_a_shot_end_to_end(tmp_path, shot, offline):
    from splatfx.cli import cli

    model = _tiny_sd(tmp_path / "models")
    args = ["refine", str(shot.root), "--model", str(model), "--steps", "3", "--strength", "0.5",
            "--prompt", "a toy digger", "--guidance", "2", "--batch", "3"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert _check_refined(shot) > 1e-3  # a random model changes the synthetic pixels a lot
    record = json.loads(shot.manifest_path.read_text())
    assert "refine" in json.dumps(record)
    # Unchanged inputs: the stage is skipped; the refined frames stay as they are.
    stamp = [(shot.refine_dir / p.name).stat().st_mtime_ns for _, p in render_frames(shot.render_dir)]
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert again.exit_code == 0
    assert stamp == [(shot.refine_dir / p.name).stat().st_mtime_ns for _, p in render_frames(shot.render_dir)]


def test_pixel_model_refines_a_sequence_and_an_interrupted_run_resumes(tmp_path, shot, offline):
    refiner = load_refiner(_tiny_pixel_model(tmp_path / "models"), device="cpu")
    assert refiner.noise_shape(SIZE, SIZE) == (3, SIZE, SIZE)
    options = RefineOptions(steps=2, strength=0.4, seed=3, batch=2)
    frames = render_frames(shot.render_dir)
    figures = refine_sequence(frames, shot.refine_dir, refiner, options, progress=False)
    assert figures["refined"] == FRAMES and figures["mean_abs_change"] > 0
    assert _check_refined(shot) > 0
    last = shot.refine_dir / frames[-1][1].name
    first, _ = read_exr(last)
    last.unlink()  # as if the stage had been interrupted before the last frame
    figures = refine_sequence(frames, shot.refine_dir, refiner, options, progress=False)
    assert (figures["kept"], figures["refined"]) == (FRAMES - 1, 1)
    # The same noise (warped from the first frame) gives the same result; alone rather than
    # in a batch of two, the convolutions may round differently in the last bits.
    again, _ = read_exr(last)
    for name in ("R", "G", "B"):
        np.testing.assert_allclose(again[name], first[name], atol=1e-5, rtol=0)


def test_inpainting_model_gets_the_repaint_mask_and_keeps_strength_zero_latents(tmp_path, data_dir, offline):
    refiner = load_refiner(_tiny_sd(tmp_path / "models", inpainting=True), device="cpu", prompt="bricks")
    assert refiner.inpainting and refiner.noise_shape(SIZE, SIZE) == (4, 24, 24)
    image = torch.from_numpy(_lego(data_dir, 0)[..., :3]).permute(2, 0, 1)[None]
    strength = torch.zeros(1, 1, SIZE, SIZE)
    strength[..., 8:24, 8:24] = 1.0
    noise = torch.randn((1, 4, 24, 24), generator=torch.Generator().manual_seed(0))
    out = refiner.refine(image, strength, noise, steps=2)
    assert out.shape == image.shape and torch.isfinite(out).all()
    # Latent cells of strength 0 come back as the image's own latents. (Seen through the
    # latents themselves: the decoder's attention spreads any change over the whole frame.)
    refiner.decode = lambda z: F.interpolate(z[:, :3], scale_factor=2, mode="nearest")
    held = refiner.refine(image, strength, noise, steps=2)
    reference = refiner.refine(image, torch.zeros_like(strength), noise, steps=2)
    outside = torch.ones(SIZE, SIZE, dtype=torch.bool)
    outside[8:24, 8:24] = False
    assert torch.equal(held[..., outside], reference[..., outside])
    assert float((held - reference)[..., 8:24, 8:24].abs().mean()) > 1e-3


def test_a_folder_that_is_no_model_and_a_shot_without_one_are_clear_errors(tmp_path, shot):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither model_index.json"):
        load_refiner(tmp_path / "empty")
    with pytest.raises(InputError, match=r"shot.toml: \[refine\] model is not set"):
        choose_model(shot)


# --- blending ------------------------------------------------------------------------------------

def test_blend_weight_is_zero_off_the_matte_and_ramps_inside_its_edge():
    mask = np.zeros((20, 20), np.float32)
    mask[5:15, 5:15] = 1.0
    w = blend_weight(mask, feather=2.0)
    assert (w[mask == 0] == 0).all()
    assert w[10, 10] == 1.0 and 0 < w[5, 10] < w[6, 10] < w[7, 10] <= 1.0


def test_compose_keeps_unweighted_pixels_bit_exact_and_hdr_excess():
    rgb = np.full((4, 4, 3), 3.5, np.float32)  # a bright highlight, above display white
    rgb[0] = 0.2
    layers = RenderLayers(rgb=rgb, alpha=np.ones((4, 4), np.float32), synthetic=np.ones((4, 4), np.float32))
    layers.synthetic[0] = 0
    before = linear_to_srgb(rgb)
    refined = np.clip(before, 0, 1) - 0.1  # the model darkens everything a little
    out = compose(layers, before, refined, RefineOptions(feather=0))
    assert out[0].tobytes() == rgb[0].tobytes()
    assert (out[1:] > 1.0).all() and (out[1:] < rgb[1:]).all()  # darker, yet still above 1


def test_fill_holes_paints_the_clean_plate_holes_only(tmp_path, data_dir):
    """A frame whose removed structure left a hole in the clean pass: with fill_holes the model
    paints the hole (alpha 1 there, so the comp takes it as solid); nothing else changes."""
    rgba = _lego(data_dir, 0)
    path = tmp_path / "render" / "frame.1001.exr"
    _render_frame(path, 1001, rgba)
    hole = _add_holes(path, data_dir)
    channels, _ = read_exr(path)
    plate = srgb_to_linear(_lego(data_dir, 2)[..., :3])
    refiner = load_refiner(_tiny_pixel_model(tmp_path / "models"), device="cpu")
    options = RefineOptions(steps=2, strength=0.4, fill_holes=True)
    figures = refine_sequence(render_frames(path.parent), tmp_path / "refine", refiner, options, progress=False,
                              plates=lambda frame: plate)
    assert figures["holes_filled"] == 1
    after, _ = read_exr(tmp_path / "refine" / path.name)
    assert (after["clean.A"][hole] == 1.0).all()
    assert np.abs(np.stack([after[c] for c in ("clean.R", "clean.G", "clean.B")], -1)[hole]).mean() > 1e-3
    for name in ("clean.R", "clean.G", "clean.B", "clean.A"):
        assert after[name][~hole].tobytes() == channels[name][~hole].tobytes(), name
    for name in ("mask.structure", "mask.holes", "depth.Z", "motion.u", "id", "A"):
        assert after[name].tobytes() == channels[name].tobytes(), name
    plate_pixels = channels["mask.synthetic"] == 0
    assert after["R"][plate_pixels].tobytes() == channels["R"][plate_pixels].tobytes()


# --- shot.toml [refine] --------------------------------------------------------------------------

def _add_holes(path: Path, data_dir: Path) -> np.ndarray:
    """Give a render frame a clean pass (a removed structure) with a hole where nothing was ever
    seen behind it; returns the hole mask."""
    channels, header = read_exr(path)
    clean = np.concatenate([srgb_to_linear(_lego(data_dir, 1)[..., :3]), np.ones((SIZE, SIZE, 1), np.float32)], -1)
    structure = np.zeros((SIZE, SIZE), np.float32)
    structure[4:30, 4:40] = 1.0
    holes = np.zeros((SIZE, SIZE), np.float32)
    holes[10:20, 10:30] = 1.0
    clean[holes > 0] = 0.0
    channels |= {"clean.R": clean[..., 0], "clean.G": clean[..., 1], "clean.B": clean[..., 2],
                 "clean.A": clean[..., 3], "mask.structure": structure, "mask.holes": holes}
    write_exr(path, channels, frame=header.frame, fps=24)
    return holes > 0


def test_shot_refine_keys_reach_the_model_and_the_frames_and_flags_override_them(tmp_path, shot, data_dir, offline):
    from splatfx.cli import cli
    from splatfx.shot.manifest import Manifest

    hole = _add_holes(shot.render_dir / "frame.1002.exr", data_dir)
    _tiny_sd(shot.root / "models")
    section = replace(shot.config.refine, model="models/sd", steps=2, strength=0.5, prompt="a toy digger",
                      negative_prompt="blurry", guidance=2.0, fill_holes=True, hole_strength=0.8, feather=0.0,
                      batch=3)
    shot.with_config(replace(shot.config, refine=section)).save()

    result = CliRunner().invoke(cli, ["refine", str(shot.root)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = Manifest.load(shot.manifest_path).last("refine")
    model = record.figures["refiner"]
    assert (model["prompt"], model["negative_prompt"], model["guidance"]) == ("a toy digger", "blurry", 2.0)
    assert {k: record.config[k] for k in ("steps", "strength", "fill_holes", "hole_strength", "feather", "batch")} \
        == {"steps": 2, "strength": 0.5, "fill_holes": True, "hole_strength": 0.8, "feather": 0.0, "batch": 3}
    assert record.figures["holes_filled"] == 1  # fill_holes from shot.toml painted the one frame with holes
    after, _ = read_exr(shot.refine_dir / "frame.1002.exr")
    assert (after["clean.A"][hole] == 1.0).all()

    # Flags override the file for one run.
    args = ["refine", str(shot.root), "--no-fill-holes", "--prompt", "bricks", "--guidance", "1"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = Manifest.load(shot.manifest_path).last("refine")
    assert (record.figures["refiner"]["prompt"], record.figures["refiner"]["guidance"]) == ("bricks", 1.0)
    assert record.figures["holes_filled"] == 0 and record.config["fill_holes"] is False
    after, _ = read_exr(shot.refine_dir / "frame.1002.exr")
    assert (after["clean.A"][hole] == 0.0).all()  # the render's unpainted hole


def test_shot_training_keys_set_the_builtin_refiners_training(shot):
    from splatfx.shot.config import config_from_dict, config_to_dict, override_table
    from splatfx.core.errors import ConfigError
    from splatfx.refine.stage import training_from_shot

    section = replace(shot.config.refine, train_steps=120, train_minutes=0.5, train_patch=32, train_widths=(8, 16),
                      train_views=5)
    configured = shot.with_config(replace(shot.config, refine=section))
    settings, pairs = training_from_shot(configured)
    assert (settings.max_steps, settings.max_minutes, settings.patch, settings.channels, pairs.views) == \
        (120, 0.5, 32, (8, 16), 5)
    assert settings.seed == shot.config.shot.seed
    flagged = configured.with_config(override_table(configured.config, "refine", "command line", train_steps=7,
                                                    train_minutes=None))  # --train-steps 7
    settings, _ = training_from_shot(flagged)
    assert (settings.max_steps, settings.max_minutes) == (7, 0.5)
    data = config_to_dict(configured.config)
    data["refine"]["train_widths"] = [12, 16]
    with pytest.raises(ConfigError, match=r"\[refine\] train_widths: must be multiples of 8"):
        config_from_dict(data, shot.toml_path)


# --- the built-in refiner ------------------------------------------------------------------------

def _blur_pairs(data_dir: Path, views: range) -> TrainingPairs:
    """Real lego training images against their half-resolution (blurred) versions."""
    from splatfx.io.dataset import load_dataset

    dataset = load_dataset(data_dir / "lego_200", "train", downscale=2)
    pairs = TrainingPairs()
    for i in views:
        sharp = torch.from_numpy(dataset.image(i)).permute(2, 0, 1)
        blurred = F.interpolate(F.avg_pool2d(sharp[None], 2), scale_factor=2, mode="bilinear")[0]
        pairs.add(dataset.frames[i].name, blurred, sharp)
    return pairs


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(float(((a - b) ** 2).mean()))


def test_builtin_refiner_learns_to_undo_a_degradation_on_unseen_views(tmp_path, data_dir):
    settings = TrainSettings(max_steps=60, patch=32, batch=4, lr=3e-3, channels=(8, 16), progress=False)
    trainer = RefinerTrainer(_blur_pairs(data_dir, range(0, 8)), tmp_path / "training", settings)
    untrained = _refine_all(trainer.model, _blur_pairs(data_dir, range(50, 53)))
    trainer.train()
    test = _blur_pairs(data_dir, range(50, 53))
    assert untrained == pytest.approx(_psnr_of(test.degraded, test.targets), abs=1e-3)  # starts as the identity
    refined = _refine_all(trainer.model, test)
    assert refined > untrained + 0.3, (untrained, refined)
    # save_pretrained / from_pretrained give the same model.
    trainer.model.save_pretrained(tmp_path / "model")
    loaded = load_refiner(tmp_path / "model", device="cpu")
    assert isinstance(loaded, BuiltinRefiner) and loaded.info["steps"] == 60
    assert _refine_all(loaded, test) == pytest.approx(refined, abs=1e-6)


def _psnr_of(images: list[torch.Tensor], targets: list[torch.Tensor]) -> float:
    return float(np.mean([_psnr(a, b) for a, b in zip(images, targets)]))


def _refine_all(model: BuiltinRefiner, pairs: TrainingPairs) -> float:
    images = torch.stack(pairs.degraded)
    b, _, h, w = images.shape
    noise = torch.randn((b, *model.noise_shape(h, w)), generator=torch.Generator().manual_seed(0))
    out = model.refine(images, torch.full((b, 1, h, w), 0.3), noise, steps=1)
    return _psnr_of(list(out), pairs.targets)


def test_builtin_training_resumes_from_its_checkpoint_exactly(tmp_path, data_dir):
    pairs = _blur_pairs(data_dir, range(0, 3))
    settings = TrainSettings(max_steps=6, patch=16, batch=2, channels=(8, 16), checkpoint_every=3, progress=False)
    straight = RefinerTrainer(pairs, tmp_path / "straight", settings)
    straight.train()

    interrupted = RefinerTrainer(pairs, tmp_path / "resumed", settings)
    for _ in range(3):
        interrupted.train_step()
    interrupted.save_checkpoint()  # what the loop writes at step 3, before being stopped
    resumed = RefinerTrainer(pairs, tmp_path / "resumed", settings)
    assert resumed.restore() and resumed.step == 3
    resumed.train()
    assert resumed.step == 6
    for (name, a), (_, b) in zip(straight.model.unet.state_dict().items(), resumed.model.unet.state_dict().items()):
        assert torch.equal(a, b), name
    # A checkpoint made from other pairs is not resumed.
    other = RefinerTrainer(pairs, tmp_path / "resumed", settings, key="another scene")
    assert not other.restore() and other.step == 0


def test_training_pairs_are_rendered_from_degraded_reconstructions(data_dir):
    from splatfx.io.dataset import load_dataset
    from splatfx.core.gaussians import Gaussians

    dataset = load_dataset(data_dir / "lego_200", "train", downscale=4)
    g = torch.Generator().manual_seed(0)
    n = 400
    scene = Gaussians(means=(torch.rand(n, 3, generator=g) - 0.5) * 1.5, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                      log_scales=torch.full((n, 3), math.log(0.06)), opacity_logits=torch.full((n,), 2.0),
                      sh=torch.rand(n, 1, 3, generator=g))
    pairs = make_pairs(scene, dataset, PairSettings(views=3, degraded_per_view=1), seed=0, backend="cpu",
                       progress=False)
    assert len(pairs) == 6
    assert [name.split(":")[1] for name in pairs.names] == ["scene"] * 3 + ["drop", "jitter", "lowres"]
    for degraded, target in zip(pairs.degraded, pairs.targets):
        assert degraded.shape == target.shape == (3, 50, 50)
    for k in range(3):  # each degraded render differs from the scene's own render of that view
        assert float((pairs.degraded[3 + k] - pairs.degraded[k]).abs().mean()) > 1e-3


# --- tiles, batch fitting and the memory check ---------------------------------------------------

def _random_builtin(scale: float = 0.05) -> BuiltinRefiner:
    """A built-in refiner whose zero-started layers are drawn at random: it changes what it sees."""
    torch.manual_seed(0)
    refiner = BuiltinRefiner.create(device="cpu")
    with torch.no_grad():
        for p in refiner.unet.parameters():
            if not p.abs().any():
                p.normal_(0, scale)
    return refiner


def _photo(data_dir: Path, width: int, height: int, index: int = 0) -> np.ndarray:
    """A south_building photo as sRGB codes / 255, ``width`` × ``height``."""
    path = sorted((data_dir / "south_building" / "images").glob("*.JPG"))[index]
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((width, height), Image.Resampling.BOX), np.float32) / 255


def test_frames_one_tile_covers_are_refined_bit_for_bit_as_before(tmp_path, shot):
    """Frames no larger than a tile go to the model whole, batch by batch, exactly as the
    untiled stage did: same noise, same model calls, same bits."""
    from splatfx.refine.stage import NoiseTrack, display_colour, frame_layers, strength_map

    refiner = _random_builtin()
    options = RefineOptions(steps=2, strength=0.5, seed=5, batch=FRAMES)
    frames = render_frames(shot.render_dir)
    refine_sequence(frames, shot.refine_dir, refiner, options, progress=False)
    track, layers = NoiseTrack(refiner, options), []
    noises = []
    for number, path in frames:  # the untiled stage: one model call on the stacked frames
        channels, header = read_exr(path)
        layers.append(frame_layers(path, channels, header))
        noises.append(track.advance(number, (SIZE, SIZE), layers[-1].motion, layers[-1].depth).clone())
    colours = [display_colour(l) for l in layers]
    images = torch.stack([torch.from_numpy(np.clip(c, 0, 1)).permute(2, 0, 1) for c in colours])
    strength = torch.stack([torch.from_numpy(strength_map(l, options))[None] for l in layers])
    refined = refiner.refine(images, strength, torch.stack(noises), options.steps).permute(0, 2, 3, 1).numpy()
    for (_, path), l, c, r in zip(frames, layers, colours, refined):
        expected = compose(l, c, r, options)
        got, _ = read_exr(shot.refine_dir / path.name)
        for i, name in enumerate("RGB"):
            assert got[name].tobytes() == expected[..., i].tobytes(), name


def test_tiles_are_cut_from_the_frames_noise_and_feathered_without_seams(data_dir, monkeypatch):
    from splatfx.refine.base import Refiner
    from splatfx.refine.tiles import BatchPlan, TileJob, overlap_for, refine_tiles, refine_whole, tile_grid

    class Pointwise(Refiner):  # a pixel's result depends on its own colour and noise only
        noise_channels, noise_scale, size_multiple = 3, 1, 4

        def _refine(self, images, strength, noise, steps):
            return images * 0.5 + 0.2 * noise * strength

        def describe(self):
            return {}

    h, w = 288, 384
    colour = _photo(data_dir, w, h)
    strength = np.zeros((h, w), np.float32)
    strength[40:250, 60:300] = 0.6
    # The feathered weights of any grid sum to 1 everywhere.
    grid = tile_grid(h, w, 96, overlap_for(96, 4), 4)
    total = np.zeros((h, w), np.float32)
    for t in grid:
        total[t.y0:t.y1, t.x0:t.x1] += t.weight
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    # A pointwise model gives the whole frame's result through tiles: the noise is the frame's.
    pointwise = Pointwise()
    job = TileJob(colour, strength, torch.randn((3, h, w), generator=torch.Generator().manual_seed(1)))
    plan = BatchPlan(h, w, 1, 5, 96, overlap_for(96, 4), len(grid), 0.0)
    np.testing.assert_allclose(refine_tiles(pointwise, job, 1, plan), refine_whole(pointwise, [job], 1, 1)[0],
                               atol=2e-6, rtol=0)
    # A UNet sees each tile's own statistics, and its output near a tile's edge is its worst:
    # the feathered weights fade each tile out there, so the refined frame's steps between
    # neighbours in the overlap stay within 3 % of the untiled frame's (the picture's own
    # edges), and well below what tiles cut hard at the middle of the overlap add.
    import splatfx.refine.tiles as tiles

    h, w = 192, 256
    colour = _photo(data_dir, w, h)
    refiner = _random_builtin(0.02)
    job = TileJob(colour, np.full((h, w), 0.5, np.float32),
                  torch.randn((3, h, w), generator=torch.Generator().manual_seed(2)))
    plan = BatchPlan(h, w, 1, 6, 160, 48, 2, 0.0)  # two tiles side by side
    whole = refine_whole(refiner, [job], 2, 1)[0]
    assert np.abs(whole - colour).mean() > 0.01  # the model does change the frame
    starts, size = tiles.axis_tiles(w, plan.tile, plan.overlap, 4)
    overlaps = [c for i in range(1, len(starts)) for c in range(starts[i], starts[i - 1] + size - 1)]

    def border_steps(image: np.ndarray) -> float:
        return float(np.abs(np.diff(image, axis=1)).mean(axis=(0, 2))[overlaps].mean())

    def hard(starts, tile, length):  # each pixel from the tile whose middle is nearest
        cuts = [(starts[i - 1] + tile + starts[i]) / 2 for i in range(1, len(starts))]
        k = np.arange(tile)
        return [((k + s >= ([-1] + cuts)[i]) & (k + s < (cuts + [1e9])[i])).astype(np.float32)
                for i, s in enumerate(starts)]

    feathered = border_steps(refine_tiles(refiner, job, 2, plan)) / border_steps(whole)
    monkeypatch.setattr(tiles, "_ramps", hard)
    cut = border_steps(refine_tiles(refiner, job, 2, plan)) / border_steps(whole)
    print(f"mean step between neighbours in the tile overlap, against the untiled frame's: {feathered:.4f} "
          f"feathered, {cut:.4f} cut")
    assert feathered < 1.03 and feathered - 1 < 0.7 * (cut - 1), (feathered, cut)


def test_batch_is_fitted_to_the_memory_budget_and_refused_by_name():
    from splatfx.core.errors import ConfigError
    from splatfx.refine.tiles import fit_batch

    refiner = BuiltinRefiner.create(device="cpu")
    small = fit_batch(refiner, 288, 384, 12, 4, 512, 2.0)
    assert small.whole and (small.frames, small.per_call) == (4, 4)
    clamped = fit_batch(refiner, 288, 384, 12, 64, 512, 1.0)  # 64 frames do not fit in 1 GiB
    assert clamped.whole and 1 <= clamped.frames < 64 and clamped.bytes <= 2**30
    full = fit_batch(refiner, 2304, 3072, 16, 4, 512, 3.0)  # a full-size plate: tiled, bounded
    assert not full.whole and full.frames == 1 and full.tiles > 20 and 1 <= full.per_call < full.tiles
    assert full.bytes <= 3 * 2**30
    uhd = fit_batch(refiner, 2160, 3840, 16, 4, 512, 3.0)
    assert uhd.bytes <= 3 * 2**30 and uhd.tile == full.tile
    with pytest.raises(ConfigError, match=r"\[refine\] tile.*largest tile that fits is \d+"):
        fit_batch(refiner, 2304, 3072, 16, 4, 4096, 3.0)
    with pytest.raises(ConfigError, match=r"\[refine\] memory.*set at least [\d.]+"):
        fit_batch(refiner, 2304, 3072, 16, 4, 512, 1.0)


def test_refine_refuses_before_it_starts_when_the_machine_lacks_the_memory(tmp_path, data_dir, monkeypatch):
    import splatfx.core.memory as memory
    from splatfx.core.errors import ConfigError
    from splatfx.refine.stage import RefineJob, check_memory

    h, w = 768, 1024
    rgb = srgb_to_linear(_photo(data_dir, w, h))
    synthetic = np.zeros((h, w), np.float32)
    synthetic[100:600, 200:800] = 1
    channels = {"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2], "A": np.ones((h, w), np.float32),
                "mask.synthetic": synthetic}
    plates = tmp_path / "plates"
    write_png(plates / "plate.1001.png", _photo(data_dir, w, h))
    shot = create_shot(tmp_path / "shot", plates, fps=24.0)
    for frame in (1001, 1002, 1003):
        write_exr(shot.render_dir / f"frame.{frame}.exr", channels, half=True, frame=frame, fps=24)
    model = tmp_path / "model"
    BuiltinRefiner.create(device="cpu").save_pretrained(model)
    frames = tuple(render_frames(shot.render_dir))

    def job(options: RefineOptions) -> RefineJob:
        return RefineJob(shot, model, "cpu", {}, options, frames, 1)

    monkeypatch.setattr(memory, "_mem_available", lambda: 3 * 2**30)
    plan = check_memory(shot, job(RefineOptions(memory=1.0)), say=False)  # fits: tiles fitted to 1 GiB
    assert not plan.whole and plan.bytes <= 2**30
    with pytest.raises(ConfigError, match=r"shot.toml \[refine\] memory.*largest value that fits is [\d.]+"):
        check_memory(shot, job(RefineOptions(memory=16.0)), say=False)  # all 6 tiles at once: about 3 GiB
    with pytest.raises(ConfigError, match=r"shot.toml \[refine\] batch.*largest value that fits is \d+"):
        check_memory(shot, job(RefineOptions(memory=64.0, tile=2048, batch=3)), say=False)  # 3 whole frames


def test_render_refuses_a_resolution_scale_the_machine_cannot_hold(tmp_path, data_dir, monkeypatch):
    import splatfx.core.memory as memory
    from splatfx.core.errors import ConfigError
    from splatfx.render.stage import check_memory as render_check

    plates = tmp_path / "plates"
    write_png(plates / "plate.1001.png", _photo(data_dir, 384, 288))
    shot = create_shot(tmp_path / "shot", plates, fps=24.0)
    monkeypatch.setattr(memory, "_mem_available", lambda: 8 * 2**30)
    assert render_check(shot, (3072, 2304)) < 6.4 * 2**30  # a full-size plate fits
    with pytest.raises(ConfigError, match=r"\[render\] resolution_scale: 1 renders 7680x5760 frames.*"
                                          r"largest value that fits is 0\.\d+"):
        render_check(shot, (7680, 5760))
