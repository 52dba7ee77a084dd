"""Proxy and full size (issue #16): ``[shot] proxy`` and ``--proxy`` render, refine and comp at
a fraction of full size, into ``proxy/<proxy>/``, under stage records and frame ledgers of their
own, so that switching the proxy off and on redoes nothing and never mixes sizes; the demo
picks a proxy from the plates' size.

The shot: the first 6 photos of the demo's South Building capture (384x288, cameras solved by
pycolmap), a very short training, snow, render, the built-in refiner (a few steps) and comp;
and a demo-like shot of 4 of the camera's own 3072x2304 photos (south_building_full).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import click
import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from rich.console import Console

from splatfx.cli import cli
from splatfx.commands.options import click_type
from splatfx.core.color import linear_to_srgb, srgb_to_linear, to_uint8
from splatfx.core.errors import ConfigError
from splatfx.demo import CAPTURE, DemoSettings, demo_proxy, prepare_shot, working_size_note
from splatfx.io.images import read_exr
from splatfx.io.video import VideoReader
from splatfx.pipeline import print_summary, run_shot
from splatfx.refine.stage import PAIR_MEMORY_BYTES, pair_downscale, run_refine_train
from splatfx.shot.config import ShotSection, config_from_dict, config_to_dict, load_config
from splatfx.shot.folder import Shot, create_shot, describe_size
from splatfx.shot.manifest import Manifest

FRAMES = 6
FULL, HALF = (384, 288), (192, 144)
PER_FRAME = ("render", "refine", "comp")


def _configure(target: Shot, **tables: dict) -> Shot:
    """``target`` with the given keys of each table set (None: back to the default), saved."""
    data = config_to_dict(target.config)
    for table, values in tables.items():
        merged = {**data.get(table, {}), **values}
        data[table] = {key: value for key, value in merged.items() if value is not None}
    configured = target.with_config(config_from_dict(data, target.toml_path))
    configured.save()
    return configured


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mtimes(*folders: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for folder in folders if folder.is_dir()
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def shot(tmp_path_factory: pytest.TempPathFactory) -> Shot:
    """A small real shot with ``[shot] proxy = 0.5``, run through once (at the proxy only)."""
    work = tmp_path_factory.mktemp("proxy")
    plates = work / "plates"
    plates.mkdir()
    for image in sorted(CAPTURE.glob("*.jpg"))[:FRAMES]:
        (plates / image.name).symlink_to(image)
    created = create_shot(work / "shot", plates, fps=10.0)
    configured = _configure(created, shot={"proxy": 0.5},
                            train={"max_steps": 60, "max_minutes": 0.5, "sh_degree": 0},
                            fx={"effects": ["snow"], "snow": {"density": 0.02, "size": 0.1}},
                            refine={"model": "refine/model", "steps": 1, "train_steps": 10, "train_minutes": 0.1,
                                    "train_views": 2},
                            comp={"outputs": ["exr", "png", "mp4"]})
    run = run_shot(configured)
    assert run.ran == ["solve", "orient", "train", "fx.snow", "render@proxy-0.5", "refine-train",
                       "refine@proxy-0.5", "comp@proxy-0.5"]
    return Shot.open(work / "shot")


def test_proxy_frames_have_the_proxy_size_and_live_apart(shot: Shot) -> None:
    proxy = shot.root / "proxy" / "0.5"
    assert (shot.render_dir, shot.refine_dir, shot.comp_dir) == (proxy / "render", proxy / "refine", proxy / "comp")
    for frame in shot.frames:
        for path in (shot.render_frame(frame), shot.refined_frame(frame), shot.comp_frame(frame, "exr")):
            channels, _ = read_exr(path)
            assert channels["R"].shape == HALF[::-1], path
        assert Image.open(shot.comp_frame(frame, "png")).size == HALF
    with VideoReader(shot.comp_dir / "review.mp4") as review:
        assert (review.width, review.height) == (2 * HALF[0], HALF[1])  # plate | comp, both at the proxy
    # nothing at full size was made, and the built-in refiner (one for every size) is in refine/model
    assert not (shot.root / "render").exists() and not (shot.root / "comp").exists()
    assert not list((shot.root / "refine").glob("*.exr"))
    assert (shot.root / "refine" / "model").is_dir()
    assert (shot.state_dir / "render@proxy-0.5_frames.json").is_file()


def test_manifest_and_summary_state_the_sizes(shot: Shot) -> None:
    manifest = Manifest.load(shot.manifest_path)
    for stage in PER_FRAME:
        assert manifest.last(stage) is None, stage  # no full-size record
        figures = manifest.last(f"{stage}@proxy-0.5").figures
        assert (figures["size"], figures["proxy"], figures["full_size"]) == (list(HALF), 0.5, list(FULL)), stage
        assert describe_size(figures) == "192x144 (proxy 0.5 of 384x288)"
    again = run_shot(shot, summary=False)
    console = Console(record=True, width=200)
    print_summary(again, console)
    text = console.export_text()
    for stage in PER_FRAME:
        assert any(line.split("│")[1].strip() == stage and "192x144 (proxy 0.5 of 384x288)" in line
                   for line in text.splitlines() if line.count("│") > 3), text
    assert "render@" not in text  # the table names the stage; the size column says the proxy


def test_switching_proxy_off_and_on_redoes_nothing_and_never_mixes(shot: Shot) -> None:
    proxy_files = _mtimes(shot.proxy_dir)
    full = run_shot(shot.with_proxy(1.0), summary=False)
    assert full.ran == ["render", "refine", "comp"]  # refine-train is shared and up to date
    full_shot = shot.with_proxy(1.0)
    for frame in shot.frames:
        channels, _ = read_exr(full_shot.render_frame(frame))
        assert channels["R"].shape == FULL[::-1]
        assert Image.open(full_shot.comp_frame(frame, "png")).size == FULL
    assert _mtimes(shot.proxy_dir) == proxy_files  # the proxy's frames were not touched

    manifest = Manifest.load(shot.manifest_path)
    comp = manifest.last("comp")
    assert comp.figures["size"] == list(FULL) and comp.figures["proxy"] == 1.0
    # the full-size comp read only full-size renders ...
    for frame, figures in comp.figures["per_frame"].items():
        assert figures["render_sha256"] == _sha256(full_shot.render_frame(int(frame)))
    assert comp.upstream["render"] == manifest.last("render").id
    assert not any("@proxy" in stage for stage in comp.upstream)
    # ... and each size has its own ledger
    ledger = json.loads((shot.state_dir / "render_frames.json").read_text())
    assert all(not name.startswith("proxy/") for entry in ledger.values() for name in entry["files"])

    full_files = _mtimes(shot.root / "render", shot.root / "comp")
    runs = len(manifest.runs)
    assert run_shot(shot, summary=False).ran == []  # proxy on again: nothing redone
    assert run_shot(shot.with_proxy(1.0), summary=False).ran == []  # and off again
    assert len(Manifest.load(shot.manifest_path).runs) == runs
    assert _mtimes(shot.proxy_dir) == proxy_files
    assert _mtimes(shot.root / "render", shot.root / "comp") == full_files


def test_proxy_flag_on_the_commands(shot: Shot) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["render", str(shot.root), "--proxy", "0.25"])
    assert result.exit_code == 0, result.output
    assert "at 96x72 (proxy 0.25 of 384x288)" in result.output
    result = runner.invoke(cli, ["comp", str(shot.root), "--proxy", "0.25"])
    assert result.exit_code == 0, result.output
    assert "at 96x72 (proxy 0.25 of 384x288)" in result.output
    quarter = shot.with_proxy(0.25)
    assert Image.open(quarter.comp_frame(shot.frames.start, "png")).size == (96, 72)
    assert quarter.comp_dir == shot.root / "proxy" / "0.25" / "comp"
    result = runner.invoke(cli, ["run", str(shot.root), "--proxy", "0.5", "--until", "render"])
    assert result.exit_code == 0, result.output
    assert "render@proxy-0.5: up to date" in result.output
    assert load_config(shot.toml_path).shot.proxy == 0.5  # a flag never edits shot.toml
    for bad in ("0", "1.5", "half"):
        result = runner.invoke(cli, ["render", str(shot.root), "--proxy", bad])
        assert result.exit_code == 2 and "--proxy" in result.output, bad


def test_proxy_setting_is_checked(tmp_path: Path) -> None:
    toml = tmp_path / "shot.toml"
    for bad in ("0", "1.5", "-0.5", '"half"'):
        toml.write_text(f'[shot]\nplates = "plates"\nproxy = {bad}\n')
        with pytest.raises(ConfigError, match=r"\[shot\] proxy"):
            load_config(toml)


def test_demo_picks_its_proxy_from_the_plate_size() -> None:
    assert demo_proxy(384, 288) == 1.0  # the packaged capture: full size
    assert demo_proxy(768, 576) == 1.0
    assert demo_proxy(1024, 768) == 0.5
    assert demo_proxy(3072, 2304) == 0.25
    assert demo_proxy(2304, 3072) == 0.25  # portrait
    assert demo_proxy(1920, 1080) == 0.25
    assert demo_proxy(3840, 2160) == 0.125


def test_demo_like_run_on_full_size_photos_comps_at_the_proxy(tmp_path: Path, data_dir: Path) -> None:
    """Four of the camera's own 3072x2304 photos, through the demo's shot set-up (which picks
    proxy 0.25) and a short pipeline: the comp frames are 768x576, as the manifest states, and
    where nothing is synthetic they are the plate area-averaged in linear light."""
    plates = tmp_path / "plates"
    plates.mkdir()
    for image in sorted((data_dir / "south_building_full" / "images").glob("*.JPG"))[:4]:
        (plates / image.name).symlink_to(image)
    shot = prepare_shot(tmp_path / "shot", plates, "collapse", DemoSettings())
    assert shot.proxy == 0.25
    # 768x576 frames: render, refine and comp need the time, so training is shorter
    assert (shot.config.train.max_steps, shot.config.train.max_minutes) == ("auto", 1.5)
    note = working_size_note(shot, chosen=True)
    assert note.startswith("plates 3072x2304: working at proxy 0.25 (768x576) to fit the demo's 10 minutes; "
                           "set [shot] proxy = 1 in ")
    shot = _configure(shot, solve={"max_image_size": 640}, train={"max_steps": 30, "max_minutes": 0.3,
                                                                 "downscale": 8},
                      fx={"effects": []}, refine={"model": None}, comp={"outputs": ["png"], "grain": 0.0})
    run_shot(shot, summary=False)
    figures = Manifest.load(shot.manifest_path).last("comp@proxy-0.25").figures
    assert (figures["size"], figures["full_size"]) == ([768, 576], [3072, 2304])
    with shot.open_plates() as opened:
        for frame in shot.frames:
            comp = np.asarray(Image.open(shot.comp_frame(frame, "png")).convert("RGB"))
            assert comp.shape == (576, 768, 3)
            linear = srgb_to_linear(opened.read(frame)[..., :3])
            expected = to_uint8(linear_to_srgb(cv2.resize(linear, (768, 576), interpolation=cv2.INTER_AREA)))
            np.testing.assert_array_equal(comp, expected)  # no effect: the proxy plate, bit for bit
    # The built-in refiner's training pairs are rendered at a bounded size, not the plates' 7 MP.
    trained = _configure(shot, refine={"model": "refine/model", "train_steps": 2, "train_views": 3})
    run_refine_train(trained)
    figures = Manifest.load(shot.manifest_path).last("refine-train").figures
    width, height = figures["pair_size"]
    assert max(width, height) <= 1024 and figures["pair_downscale"] >= 3.0
    assert abs(width / height - 3072 / 2304) < 0.01


def test_refiner_pairs_fit_their_size_and_memory_bounds() -> None:
    assert pair_downscale((384, 288), 1024, 128) == 1.0  # small plates: as they are
    assert pair_downscale((3072, 2304), 1024, 8) == 3.0  # the side bound
    factor = pair_downscale((3840, 2160), 1024, 128)  # 4K, 64 views: the memory bound
    assert factor > 3840 / 1024
    assert 128 * (3840 / factor) * (2160 / factor) * 2 * 3 * 4 <= PAIR_MEMORY_BYTES


@pytest.mark.parametrize("name", ["render", "refine", "comp", "run", "demo"])
def test_every_per_frame_command_has_the_proxy_flag_typed_as_the_setting(name: str) -> None:
    found = cli.get_command(click.Context(cli), name)
    option = next(p for p in found.params if p.name == "proxy")
    declared = next(f for f in dataclasses.fields(ShotSection) if f.name == "proxy")
    expected = click_type(float, declared.metadata)
    assert "--proxy" in option.opts
    assert (option.type.min, option.type.max, option.type.min_open) == (expected.min, expected.max, expected.min_open)
