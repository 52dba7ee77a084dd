"""``splatfx init`` on the real captures: references, copies, frame ranges, refusals."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from splatfx.commands.init import command
from splatfx.shot.config import FrameRange, load_config
from splatfx.core.errors import ConfigError, InputError
from splatfx.shot.folder import Shot

SPLATFX = Path(sys.executable).parent / "splatfx"


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def stats(folder: Path) -> dict[str, tuple[int, int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def south(data_dir: Path) -> Path:
    return data_dir / "south_building" / "images"


def test_init_references_plates_and_counts_frames_from_1001(tmp_path: Path, south: Path) -> None:
    root = tmp_path / "sb_010"
    result = CliRunner().invoke(command, [str(root), "--plates", str(south)])
    assert result.exit_code == 0, result.output
    assert "1001-1128" in result.output and "128 frames" in result.output and "768x576" in result.output
    config = load_config(root / "shot.toml")
    assert config.shot.frames == FrameRange(1001, 1128)
    assert config.shot.plates == str(south) and Path(config.shot.plates).is_absolute()
    assert config.shot.plates_mode == "reference" and config.shot.fps == 24.0 and config.shot.name == "sb_010"
    assert sorted(p.name for p in root.iterdir()) == ["shot.toml"]  # nothing copied, nothing half-written
    shot = Shot.open(root)
    assert shot.frames == FrameRange(1001, 1128) and len(shot.plate_files()) == 128


def test_init_copy_leaves_sources_unchanged(tmp_path: Path, south: Path) -> None:
    sources_before, stats_before = digests(south), stats(south)
    root = tmp_path / "copied"
    result = CliRunner().invoke(command, [str(root), "--plates", str(south), "--copy", "--fps", "25"])
    assert result.exit_code == 0, result.output
    assert digests(south) == sources_before and stats(south) == stats_before  # copied, not moved or touched
    assert digests(root / "plates") == sources_before
    assert all(p.stat().st_mode & 0o222 == 0 for p in (root / "plates").iterdir())  # copies are read-only
    config = load_config(root / "shot.toml")
    assert (config.shot.plates, config.shot.plates_mode, config.shot.fps) == ("plates", "copy", 25.0)
    assert sorted(p.name for p in root.iterdir()) == ["plates", "shot.toml"]  # no staging folders left
    with Shot.open(root).open_plates() as plates:
        assert (plates.first, plates.last) == (1001, 1128)


def test_init_frames_option(tmp_path: Path, data_dir: Path) -> None:
    fern = data_dir / "fern" / "images_8"
    root = tmp_path / "fern"
    result = CliRunner().invoke(command, [str(root), "--plates", str(fern), "--frames", "1-20"])
    assert result.exit_code == 0, result.output
    assert load_config(root / "shot.toml").shot.frames == FrameRange(1, 20)
    with Shot.open(root).open_plates() as plates:
        assert plates.frames == list(range(1, 21))


def test_init_frames_must_span_the_plates(tmp_path: Path, south: Path) -> None:
    result = CliRunner().invoke(command, [str(tmp_path / "s"), "--plates", str(south), "--frames", "1001-1096"])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == (f"--frames: 1001-1096 is 96 frames but the plates {south} hold 128 "
                                     "(1001-1128); give 1001-1128 or leave the range out")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("args,message", [
    (["--frames", "1096-1001"], "end frame 1001 is before start frame 1096"),
    (["--frames", "soon"], 'must look like "1001-1096"'),
    (["--fps", "0"], "'--fps'"),
])
def test_init_bad_options_are_usage_errors(tmp_path: Path, south: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(command, [str(tmp_path / "s"), "--plates", str(south), *args])
    assert result.exit_code == 2 and message in result.output


def test_init_refuses_to_overwrite_without_force(tmp_path: Path, data_dir: Path) -> None:
    fern = data_dir / "fern" / "images_8"
    root = tmp_path / "shot"
    runner = CliRunner()
    assert runner.invoke(command, [str(root), "--plates", str(fern), "--copy"]).exit_code == 0
    (root / "shot.toml").write_text((root / "shot.toml").read_text().replace('max_steps = "auto"', "max_steps = 5"))
    edited = (root / "shot.toml").read_bytes()
    again = runner.invoke(command, [str(root), "--plates", str(fern), "--copy"])
    assert isinstance(again.exception, InputError)
    assert str(again.exception) == f"{root / 'shot.toml'}: already exists; pass --force to overwrite it"
    assert (root / "shot.toml").read_bytes() == edited
    forced = runner.invoke(command, [str(root), "--plates", str(fern), "--copy", "--force"])
    assert forced.exit_code == 0, forced.output
    assert load_config(root / "shot.toml").train.max_steps == "auto"
    assert digests(root / "plates") == digests(fern)
    assert sorted(p.name for p in root.iterdir()) == ["plates", "shot.toml"]


def test_init_copy_of_plates_already_in_the_shot_does_not_copy_onto_itself(tmp_path: Path, data_dir: Path) -> None:
    fern = data_dir / "fern" / "images_8"
    root = tmp_path / "shot"
    runner = CliRunner()
    assert runner.invoke(command, [str(root), "--plates", str(fern), "--copy"]).exit_code == 0
    before = digests(root / "plates")
    result = runner.invoke(command, [str(root), "--plates", str(root / "plates"), "--copy", "--force"])
    assert result.exit_code == 0, result.output
    assert digests(root / "plates") == before
    assert load_config(root / "shot.toml").shot.plates == "plates"


def test_init_bad_plates_name_the_path(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(command, [str(tmp_path / "s"), "--plates", str(empty)])
    assert isinstance(result.exception, InputError)
    assert str(result.exception).startswith(f"{empty}: holds no images")
    assert not (tmp_path / "s").exists()


def test_splatfx_init_subprocess(tmp_path: Path, data_dir: Path) -> None:
    fern = data_dir / "fern" / "images_8"
    root = tmp_path / "fern_shot"
    done = subprocess.run([str(SPLATFX), "init", str(root), "--plates", str(fern), "--fps", "30"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1001-1020" in done.stdout and "20 frames at 30 fps" in done.stdout
    config = load_config(root / "shot.toml")
    assert config.shot.frames == FrameRange(1001, 1020) and config.shot.fps == 30.0


# --- issue #21 case 3: every plate is decoded at init --------------------------------------------------

def plates_with_a_truncated_jpeg(south: Path, folder: Path) -> Path:
    """Six south_building photos, the third cut in half (its header still reads)."""
    folder.mkdir()
    for f in sorted(south.iterdir())[:6]:
        (folder / f.name).write_bytes(f.read_bytes())
    bad = sorted(folder.iterdir())[2]
    bad.write_bytes(bad.read_bytes()[:30000])
    return bad


def test_init_refuses_a_truncated_plate_by_name(tmp_path: Path, south: Path) -> None:
    bad = plates_with_a_truncated_jpeg(south, tmp_path / "plates")
    result = CliRunner().invoke(command, [str(tmp_path / "s"), "--plates", str(tmp_path / "plates")])
    assert isinstance(result.exception, InputError)
    message = str(result.exception)
    assert message.startswith(f"{bad}: ") and "truncated" in message and "\n" not in message
    assert "frame 1003" in message and "--skip-bad-frames" in message
    assert not (tmp_path / "s").exists()  # no shot made


@pytest.mark.parametrize("copy", [False, True], ids=["reference", "copy"])
def test_init_skip_bad_frames_leaves_a_reported_gap(tmp_path: Path, south: Path, copy: bool) -> None:
    bad = plates_with_a_truncated_jpeg(south, tmp_path / "plates")
    root = tmp_path / "s"
    result = CliRunner().invoke(command, [str(root), "--plates", str(tmp_path / "plates"), "--skip-bad-frames",
                                          *(["--copy"] if copy else [])])
    assert result.exit_code == 0, result.output
    (line,) = [l for l in result.stderr.splitlines() if l.startswith("warning:")]
    assert line.startswith("warning: skipped frame 1003 (a gap in the frame numbers): ") and f"{bad}: " in line
    config = load_config(root / "shot.toml")
    assert config.shot.frames == FrameRange(1001, 1006) and config.shot.skip_frames == (1003,)
    shot = Shot.open(root)
    with shot.open_plates() as plates:  # later stages never see the frame: a gap in the numbers
        assert plates.frames == [1001, 1002, 1004, 1005, 1006] and plates.missing == [1003]
    assert bad.name not in [p.name for p in shot.plate_files()] and len(shot.plate_files()) == 5


def test_init_names_a_video_frame_that_does_not_decode_by_its_frame_number(tmp_path: Path, data_dir: Path) -> None:
    from test_plates import corrupt_tail_movie

    movie = corrupt_tail_movie(data_dir, tmp_path)
    result = CliRunner().invoke(command, [str(tmp_path / "s"), "--plates", str(movie)])
    assert isinstance(result.exception, InputError)
    assert str(result.exception).startswith(f"{movie}: cannot decode frame 1005 (frame 4 of the video, counting "
                                            "from 0): ")
    assert str(result.exception).endswith("; frames 1006, 1007, 1008 do not decode either; "
                                          "pass --skip-bad-frames to leave them out as gaps")
    skipped = CliRunner().invoke(command, [str(tmp_path / "s"), "--plates", str(movie), "--skip-bad-frames"])
    assert skipped.exit_code == 0, skipped.output
    with Shot.open(tmp_path / "s").open_plates() as plates:
        assert plates.frames == [1001, 1002, 1003, 1004]
