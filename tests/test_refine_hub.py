"""Pretrained models named by Hugging Face hub id (splatfx.refine.hub): resolved to a snapshot of
the local Hugging Face cache, loaded and run like the same folder given by path.

No network: the tiny random img2img pipeline of tests/test_refine.py is saved, then laid out
in a temporary hub cache the way ``huggingface_hub`` leaves a download (blobs named by their
hash, ``snapshots/<commit>/`` of links to them, ``refs/main``), with ``HF_HUB_OFFLINE`` on and
every socket connection refused.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from splatfx.cli import cli
from splatfx.core.errors import ConfigError, InputError
from splatfx.refine.hub import ALLOW_PATTERNS, HubModel, hub_name
from splatfx.refine.pipeline import hub_model, load_refiner, resolve_model
from splatfx.refine.stage import choose_model, render_frames, run_refine
from splatfx.shot.manifest import Manifest
from test_refine import SIZE, _check_refined, _tiny_sd, offline, shot  # noqa: F401 (fixtures)

REPO = "tiny-owner/tiny-model"
MAIN, OLD = "1" * 40, "2" * 40  # two commits of the repository: main and an older one

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _publish(cache: Path, repo: str, folder: Path, commit: str, ref: str | None = "main") -> Path:
    """Lay ``folder`` out in the hub cache ``cache`` as a download of ``repo`` at ``commit``
    leaves it (``ref`` pointing at that commit); returns the snapshot folder."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / commit
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref is not None:
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face hub cache in use, offline (the constants are read at import)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture()
def tiny_hub(tmp_path, hub_cache) -> dict[str, Path]:
    """The tiny img2img pipeline at ``main`` of REPO, and a differently initialised one at OLD."""
    main = _tiny_sd(tmp_path / "models-main")
    old = tmp_path / "models-old"
    _tiny_sd(old)
    _reinitialise(old / "sd")
    return {"folder": main, MAIN: _publish(hub_cache, REPO, main, MAIN), OLD: _publish(hub_cache, REPO, old / "sd",
                                                                                      OLD, ref=None)}


def _reinitialise(folder: Path) -> None:
    """Other weights for the UNet saved in ``folder`` (a different revision of the model)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    torch.manual_seed(5)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    unet.save_pretrained(folder / "unet", safe_serialization=True)


def _refine(refiner) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand((1, 3, SIZE, SIZE), generator=generator)
    strength = torch.full((1, 1, SIZE, SIZE), 0.5)
    noise = torch.randn((1, *refiner.noise_shape(SIZE, SIZE)), generator=generator)
    return refiner.refine(image, strength, noise, steps=2)


# --- telling a hub id from a folder ------------------------------------------------------------------

def test_hub_ids_are_told_apart_from_folders():
    assert HubModel.parse("stabilityai/sd-turbo") == HubModel("stabilityai/sd-turbo")
    assert HubModel.parse("owner/name@" + MAIN) == HubModel("owner/name", MAIN)
    assert str(HubModel.parse("owner/name@refs/pr/1")) == "owner/name@refs/pr/1"
    for text in ("sd-turbo", "a/b/c", "/abs/path", "./a/b", "a--b/c", "a/b.", "a-/b", "~/models", "a/b@"):
        assert HubModel.parse(text) is None, text
    # A shot's own folders are never hub ids: refine/model is the built-in refiner's place.
    assert hub_model("refine/model") is None and hub_model("render/x") is None
    assert hub_model(Path("owner/name")) == HubModel("owner/name")
    assert hub_name(f"/c/models--stabilityai--sd-turbo/snapshots/{MAIN}") == f"stabilityai/sd-turbo@{MAIN}"
    assert hub_name("/c/models/sd") is None and hub_name(f"/c/datasets--a--b/snapshots/{MAIN}") is None


def test_only_what_refinement_loads_is_fetched():
    from huggingface_hub.utils import filter_repo_objects

    repo = ["model_index.json", "README.md", "sd_turbo.safetensors", "v2-1.ckpt", "pipeline.py",
            "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.bin",
            "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.fp16.bin",
            "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors",
            "text_encoder/pytorch_model.bin", "text_encoder/model-00001-of-00002.safetensors",
            "text_encoder/model.safetensors.index.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
            "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json", "scheduler/scheduler_config.json",
            "safety_checker/config.json", "safety_checker/model.safetensors",
            "feature_extractor/preprocessor_config.json", "unet/custom_unet.py"]
    fetched = set(filter_repo_objects(repo, allow_patterns=list(ALLOW_PATTERNS)))
    assert fetched == {
        "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json", "text_encoder/model.safetensors",
        "text_encoder/model-00001-of-00002.safetensors", "text_encoder/model.safetensors.index.json",
        "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
        "tokenizer/special_tokens_map.json", "scheduler/scheduler_config.json"}


def test_the_cache_is_asked_first_and_the_hub_only_for_what_it_lacks(tmp_path, hub_cache, monkeypatch):
    """The hub's side is stood in for: a download lays the model out in the cache."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = []

    def download(repo_id, *, revision, allow_patterns, local_files_only=False):
        calls.append((repo_id, revision, local_files_only))
        assert allow_patterns == list(ALLOW_PATTERNS)
        storage = hub_cache / f"models--{repo_id.replace('/', '--')}"
        if local_files_only:
            if not (storage / "refs" / "main").is_file():
                raise LocalEntryNotFoundError("not cached")
            return str(storage / "snapshots" / (storage / "refs" / "main").read_text())
        return str(_publish(hub_cache, repo_id, folder, MAIN))

    folder = tmp_path / "published"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    first = resolve_model(REPO)
    assert first == hub_cache / "models--tiny-owner--tiny-model" / "snapshots" / MAIN
    assert calls == [(REPO, None, True), (REPO, None, False)]  # not cached: fetched
    assert resolve_model(REPO) == first and calls[2:] == [(REPO, None, True)]  # cached: no hub call
    (folder / "model_index.json").unlink()
    with pytest.raises(InputError, match="^other/model: holds no model_index.json"):
        resolve_model("other/model")  # a repository without a pipeline of ours


# --- loading ------------------------------------------------------------------------------------------

def test_a_hub_id_loads_the_cached_snapshot_as_the_same_folder_does_by_path(tiny_hub, offline):
    by_id = load_refiner(REPO, device="cpu", prompt="a toy digger")
    by_path = load_refiner(tiny_hub["folder"], device="cpu", prompt="a toy digger")
    assert by_id.path == tiny_hub[MAIN]
    assert by_id.describe()["model"] == f"{REPO}@{MAIN}"
    assert torch.equal(_refine(by_id), _refine(by_path))  # same weights, noise and masks: same bits


def test_a_revision_pin_resolves_that_snapshot(tiny_hub, offline):
    pinned = load_refiner(f"{REPO}@{OLD}", device="cpu")
    assert pinned.path == tiny_hub[OLD] and pinned.describe()["model"] == f"{REPO}@{OLD}"
    assert load_refiner(f"{REPO}@main", device="cpu").path == tiny_hub[MAIN]  # a branch, through refs/
    assert not torch.equal(_refine(pinned), _refine(load_refiner(REPO, device="cpu")))


def test_an_id_missing_from_the_cache_is_a_clear_error(hub_cache, offline, shot):
    with pytest.raises(InputError, match=r"^tiny-owner/absent: no such folder, and not in the local Hugging Face "
                                         r"cache \(HF_HUB_CACHE=.*hf-cache\) while HF_HUB_OFFLINE is set: run once "
                                         "with the network and HF_HUB_OFFLINE unset to fetch it"):
        load_refiner("tiny-owner/absent")
    absent = replace(shot.config.refine, model=f"tiny-owner/absent@{OLD}")
    pinned = shot.with_config(replace(shot.config, refine=absent))
    with pytest.raises(ConfigError, match=rf"shot.toml \[refine\] model: 'tiny-owner/absent@{OLD}': no such folder, "
                                          "and not in the local Hugging Face cache .* or give a local model folder"):
        choose_model(pinned)
    # A folder of the shot's own is never looked up on the hub, even where it does not exist yet.
    builtin = shot.with_config(replace(shot.config, refine=replace(shot.config.refine, model="refine/model")))
    with pytest.raises(InputError, match="refine/model: refine model folder does not exist"):
        load_refiner(choose_model(builtin))


def test_an_unreachable_hub_is_a_clear_error(hub_cache, monkeypatch):
    from huggingface_hub import constants

    with socket.socket() as sock:  # a local port with nothing listening: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(InputError, match=r"^tiny-owner/absent: .* while the hub cannot be reached: run once "
                                         "with the network to fetch it"):
        load_refiner("tiny-owner/absent")


# --- the stage ----------------------------------------------------------------------------------------

def test_the_stage_refines_with_a_hub_model_and_a_new_revision_reruns_it(tiny_hub, offline, shot):
    section = replace(shot.config.refine, model=REPO, steps=2, strength=0.5, prompt="a toy digger", batch=2)
    shot = shot.with_config(replace(shot.config, refine=section))
    shot.save()
    result = run_refine(shot, device="cpu", progress=False)
    assert result.ran and _check_refined(shot) > 1e-3
    record = Manifest.load(shot.manifest_path).last("refine")
    assert record.config["model"] == f"{REPO}@{MAIN}" and record.figures["refiner"]["model"] == f"{REPO}@{MAIN}"
    first = {p.name: p.read_bytes() for _, p in render_frames(shot.refine_dir)}
    assert not run_refine(shot, device="cpu", progress=False).ran  # same snapshot: up to date

    # The cache's main moves to another commit (as a fresh download would): the stage reruns.
    (tiny_hub[MAIN].parents[1] / "refs" / "main").write_text(OLD)
    again = run_refine(shot, device="cpu", progress=False)
    assert again.ran and Manifest.load(shot.manifest_path).last("refine").config["model"] == f"{REPO}@{OLD}"
    assert again.value["refined"] == len(first)  # no frame kept: their keys name the old commit
    assert {p.name: p.read_bytes() for _, p in render_frames(shot.refine_dir)} != first

    # --model takes a hub id too (a pinned one here), and overrides [refine] model.
    result = CliRunner().invoke(cli, ["refine", str(shot.root), "--model", f"{REPO}@{MAIN}", "--device", "cpu"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert Manifest.load(shot.manifest_path).last("refine").config["model"] == f"{REPO}@{MAIN}"
    assert {p.name: p.read_bytes() for _, p in render_frames(shot.refine_dir)} == first
