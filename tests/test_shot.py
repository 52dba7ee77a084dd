"""The shot folder, the manifest and run_stage's skip / force / failure semantics."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest

import splatfx.shot.manifest as manifest_module
from splatfx.shot.config import FrameRange, ShotConfig, ShotSection
from splatfx.core.errors import ConfigError, InputError
from splatfx.shot.manifest import HashCache, Manifest, fingerprint
from splatfx.shot.folder import Shot
from splatfx.shot.runner import StageError, run_stage


@pytest.fixture
def shot(tmp_path: Path) -> Shot:
    """A shot whose only input is a small text file, with a toy config."""
    root = tmp_path / "toy"
    s = Shot(root, ShotConfig(shot=ShotSection(plates="plates", seed=5)))
    s.save()
    (root / "plates").mkdir()
    (root / "plates" / "a.txt").write_text("hello")
    return s


class Toy:
    """A toy stage: upper-cases plates/a.txt into scene/out.txt and counts its calls."""

    def __init__(self, shot: Shot, fail: bool = False) -> None:
        self.shot, self.fail, self.calls = shot, fail, 0

    @property
    def output(self) -> Path:
        return self.shot.scene_dir / "out.txt"

    def __call__(self) -> dict:
        self.calls += 1
        self.output.parent.mkdir(exist_ok=True)
        self.output.write_text((self.shot.plates_dir / "a.txt").read_text().upper())
        if self.fail:
            raise RuntimeError("the toy stage broke")
        return {"chars": len(self.output.read_text())}

    def run(self, config: dict | None = None, force: bool = False, seed: int | None = None):
        return run_stage(self.shot, "toy", config or {"steps": 3}, [self.shot.plates_dir / "a.txt"],
                         [self.output], self, force=force, seed=seed)


def runs(shot: Shot) -> list[dict]:
    return json.loads(shot.manifest_path.read_text())["runs"]


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp." in p.name]


# --- the shot folder ------------------------------------------------------------------------------

def test_shot_paths_and_relative(shot: Shot, tmp_path: Path) -> None:
    opened = Shot.open(shot.root)
    assert opened.config == shot.config
    assert Shot.open(shot.root / "shot.toml").root == shot.root
    assert opened.name == "toy"
    assert [opened.plates_dir, opened.solve_dir, opened.scene_dir, opened.fx_dir, opened.render_dir,
            opened.refine_dir, opened.comp_dir] == [shot.root / n for n in
                                                    ("plates", "solve", "scene", "fx", "render", "refine", "comp")]
    assert opened.manifest_path == shot.root / "manifest.json"
    assert opened.relative(shot.root / "scene" / "scene.ply") == "scene/scene.ply"
    assert opened.relative(tmp_path / "elsewhere.txt") == str(tmp_path / "elsewhere.txt")
    assert opened.path("/abs/plates") == Path("/abs/plates") and opened.path("plates") == shot.root / "plates"


def test_open_missing_shot(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="shot folder does not exist"):
        Shot.open(tmp_path / "nope")
    with pytest.raises(InputError, match="has no shot.toml"):
        Shot.open(tmp_path)


def test_shot_on_real_plates_numbers_frames_from_1001(tmp_path: Path, data_dir: Path) -> None:
    images = data_dir / "south_building" / "images"
    s = Shot(tmp_path, ShotConfig(shot=ShotSection(plates=str(images))))
    assert s.frames == FrameRange(1001, 1128)
    files = s.plate_files()
    assert len(files) == 128 and files[0].name == "P1180141.JPG"
    with s.open_plates() as plates:
        assert (plates.width, plates.height) == (768, 576)
        assert plates.first == 1001
    wrong = s.with_config(dataclasses.replace(s.config, shot=dataclasses.replace(
        s.config.shot, frames=FrameRange(1001, 1096))))
    with pytest.raises(ConfigError, match=r"\[shot\] frames: 1001-1096 is 96 frames but the plates .* hold 128"):
        wrong.open_plates()


# --- hashing --------------------------------------------------------------------------------------

def test_fingerprints_match_sha256_and_ignore_hidden_files(tmp_path: Path, data_dir: Path) -> None:
    cache = HashCache()
    jpeg = data_dir / "south_building" / "images" / "P1180141.JPG"
    fp = fingerprint(jpeg, cache)
    assert fp == {"sha256": hashlib.sha256(jpeg.read_bytes()).hexdigest(), "size": jpeg.stat().st_size, "files": 1}
    folder = tmp_path / "f"
    (folder / "sub").mkdir(parents=True)
    (folder / "x.bin").write_bytes(b"x" * 3_000_000)  # several chunks
    (folder / "sub" / "y.txt").write_text("y")
    before = fingerprint(folder, cache)
    assert before["files"] == 2 and before["size"] == 3_000_001
    (folder / ".x.bin.tmp.123").write_text("half-written")
    assert fingerprint(folder, cache) == before
    (folder / "sub" / "y.txt").write_text("z")
    assert fingerprint(folder, cache)["sha256"] != before["sha256"]
    with pytest.raises(InputError, match="does not exist"):
        fingerprint(tmp_path / "missing", cache)


def test_hash_cache_skips_unchanged_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "big.bin"
    f.write_bytes(os.urandom(2_500_000))
    calls = []
    real = manifest_module.hash_file
    monkeypatch.setattr(manifest_module, "hash_file", lambda p: calls.append(p) or real(p))
    cache = HashCache(tmp_path / ".splatfx" / "hashes.json")
    first = cache.sha256(f)
    cache.save()
    again = HashCache(tmp_path / ".splatfx" / "hashes.json")  # a later process
    assert again.sha256(f) == first and len(calls) == 1
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000))
    assert again.sha256(f) == first and len(calls) == 2  # touched: rehashed (same content)


# --- run_stage ------------------------------------------------------------------------------------

def test_first_run_records_everything(shot: Shot) -> None:
    toy = Toy(shot)
    result = toy.run()
    assert result.ran and result.reason == "never run" and result.value == {"chars": 5}
    (record,) = runs(shot)
    assert record["stage"] == "toy" and record["status"] == "ok" and record["error"] is None
    assert record["inputs"] == {"plates/a.txt": {"sha256": hashlib.sha256(b"hello").hexdigest(), "size": 5, "files": 1}}
    hello = {"sha256": hashlib.sha256(b"HELLO").hexdigest(), "size": 5, "files": 1}
    assert record["outputs"] == {"scene/out.txt": hello}
    assert record["config"] == {"steps": 3} and record["seed"] == 5 and record["figures"] == {"chars": 5}
    assert set(record["versions"]) == {"python", "splatfx", "torch", "numpy", "numba"}
    assert record["seconds"] >= 0 and record["finished"] >= record["started"]
    assert temp_files(shot.root) == []


def test_unchanged_stage_is_skipped_and_force_reruns(shot: Shot, capsys: pytest.CaptureFixture) -> None:
    toy = Toy(shot)
    toy.run()
    capsys.readouterr()
    result = toy.run()
    assert not result.ran and toy.calls == 1
    assert "toy: up to date" in capsys.readouterr().err
    assert len(runs(shot)) == 1  # a skip is not a run
    forced = toy.run(force=True)
    assert forced.ran and forced.reason == "forced" and toy.calls == 2 and len(runs(shot)) == 2


@pytest.mark.parametrize("change,reason", [
    ("input", "inputs changed: plates/a.txt"),
    ("config", "config changed: steps"),
    ("seed", "seed changed: 5 → 6"),
    ("output deleted", "output missing: scene/out.txt"),
    ("output edited", "output changed since: scene/out.txt"),
])
def test_any_change_reruns_and_says_why(shot: Shot, change: str, reason: str) -> None:
    toy = Toy(shot)
    toy.run()
    config, seed = {"steps": 3}, None
    if change == "input":
        (shot.plates_dir / "a.txt").write_text("hello again")
    elif change == "config":
        config = {"steps": 4}
    elif change == "seed":
        seed = 6
    elif change == "output deleted":
        toy.output.unlink()
    else:
        toy.output.write_text("edited by hand")
    result = toy.run(config=config, seed=seed)
    assert result.ran and result.reason == reason and toy.calls == 2


def test_dataclass_config_is_recorded_and_compared(shot: Shot) -> None:
    toy = Toy(shot)
    train = shot.config.train
    first = run_stage(shot, "toy", train, [shot.plates_dir / "a.txt"], [toy.output], toy)
    assert runs(shot)[0]["config"]["max_steps"] == "auto" and "background" not in runs(shot)[0]["config"]
    assert not run_stage(shot, "toy", train, [shot.plates_dir / "a.txt"], [toy.output], toy).ran
    changed = dataclasses.replace(train, max_steps=10)
    again = run_stage(shot, "toy", changed, [shot.plates_dir / "a.txt"], [toy.output], toy)
    assert first.ran and again.ran and again.reason == "config changed: max_steps"


def test_failed_run_is_recorded_and_never_up_to_date(shot: Shot) -> None:
    Toy(shot).run()
    good = runs(shot)[0]
    broken = Toy(shot, fail=True)
    with pytest.raises(RuntimeError, match="the toy stage broke"):
        broken.run(force=True)
    records = runs(shot)
    assert records[0] == good  # the earlier record is intact
    assert records[1]["status"] == "failed" and records[1]["error"] == "RuntimeError: the toy stage broke"
    assert records[1]["outputs"] == {} and records[1]["seconds"] is not None
    assert temp_files(shot.root) == []
    # same inputs, config and seed as the good run, but the last run failed: it runs again
    fixed = Toy(shot)
    result = fixed.run()
    assert result.ran and result.reason == "the last run failed" and fixed.calls == 1
    assert runs(shot)[-1]["status"] == "ok"


def test_killed_run_stays_running_and_is_not_up_to_date(shot: Shot) -> None:
    toy = Toy(shot)
    toy.run()
    manifest = Manifest.load(shot.manifest_path)
    manifest.runs[-1].status = "running"  # what a SIGKILL mid-stage leaves behind
    manifest.save()
    result = toy.run()
    assert result.ran and result.reason == "the last run did not finish"


def test_stage_that_does_not_write_its_output_fails(shot: Shot) -> None:
    with pytest.raises(StageError, match="without writing scene/never.txt"):
        run_stage(shot, "lazy", {}, [shot.plates_dir / "a.txt"], [shot.scene_dir / "never.txt"], lambda: None)
    assert runs(shot)[-1]["status"] == "failed"


def test_missing_input_is_an_input_error_and_not_a_run(shot: Shot) -> None:
    with pytest.raises(InputError, match="does not exist"):
        run_stage(shot, "toy", {}, [shot.root / "solve" / "cameras.bin"], [], lambda: None)
    assert not shot.manifest_path.exists()


def test_manifest_write_is_atomic(shot: Shot, monkeypatch: pytest.MonkeyPatch) -> None:
    toy = Toy(shot)
    toy.run()
    before = shot.manifest_path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("splatfx.core.atomic.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        toy.run(force=True)
    assert shot.manifest_path.read_bytes() == before
    assert temp_files(shot.root) == []


def test_labelled_inputs_on_real_plates(tmp_path: Path, data_dir: Path) -> None:
    images = data_dir / "south_building" / "images"
    s = Shot(tmp_path, ShotConfig(shot=ShotSection(plates=str(images))))
    s.save()
    out = s.solve_dir / "count.txt"

    def count() -> dict:
        out.parent.mkdir(exist_ok=True)
        out.write_text(str(len(s.plate_files())))
        return {"plates": 128}

    result = run_stage(s, "count", s.config.solve, {"plates": s.plate_files()}, [out], count)
    plates = runs(s)[0]["inputs"]["plates"]
    assert result.ran and plates["files"] == 128
    assert plates["size"] == sum(f.stat().st_size for f in images.iterdir())
    assert not run_stage(s, "count", s.config.solve, {"plates": s.plate_files()}, [out], count).ran
    assert (s.state_dir / "hashes.json").is_file()
