"""Opening plates: folders, numbered sequences, video; lazy reads; bad input."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from splatfx.io import plates as plates_module
from splatfx.core.errors import InputError
from splatfx.io.images import read_image, write_exr, write_png
from splatfx.io.plates import open_plates, parse_pattern, undecodable_frames
from splatfx.io.video import VideoReader, write_mp4


def assert_one_line_naming(err: pytest.ExceptionInfo[InputError], path: Path) -> None:
    assert "\n" not in str(err.value)
    assert str(path) in str(err.value)


def make_sequence(folder: Path, frames: list[int], name: str = "plate.{:04d}.png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in frames:
        pixels = np.full((6, 8, 3), (f % 100) / 100, dtype=np.float32)
        write_png(folder / name.format(f), pixels)


# --------------------------------------------------------------------------- real captures


def test_south_building_folder_is_a_plate_set(data_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[Path] = []

    def counting_read(path: Path):  # type: ignore[no-untyped-def]
        decoded.append(Path(path))
        return read_image(path)

    monkeypatch.setattr(plates_module, "read_image", counting_read)
    folder = data_dir / "south_building" / "images"
    plates = open_plates(folder)
    assert (len(plates), plates.width, plates.height) == (128, 768, 576)
    assert (plates.kind, plates.encoding, plates.fps) == ("images", "srgb", None)
    assert plates.frames == list(range(1001, 1129)) and plates.missing == []
    assert plates.path(1001).name == "P1180141.JPG"
    assert "128 frames 1001-1128, 768x576, srgb" in plates.summary()
    names = [plates.path(f).name for f in plates.frames]
    assert names == sorted(names)
    assert decoded == []  # opening reads headers only
    frame = plates.read(1064)
    assert decoded == [plates.path(1064)]
    np.testing.assert_array_equal(frame, read_image(plates.path(1064)).pixels)
    assert frame.shape == (576, 768, 3) and frame.dtype == np.float32


def test_lego_folder_is_a_numbered_sequence(data_dir: Path) -> None:
    plates = open_plates(data_dir / "lego_200" / "test")
    assert (plates.kind, len(plates), plates.first, plates.last) == ("sequence", 200, 0, 199)
    assert plates.path(10).name == "r_10.png"  # numeric order, not name order
    assert plates.read(10).shape == (200, 200, 4)
    renumbered = open_plates(data_dir / "lego_200" / "test", start_frame=1001)
    assert renumbered.path(1011).name == "r_10.png"


def test_fern_and_single_image(data_dir: Path) -> None:
    fern = open_plates(data_dir / "fern" / "images_8", start_frame=1)
    assert (len(fern), fern.width, fern.height, fern.first) == (20, 504, 378, 1)
    single = open_plates(data_dir / "lego_200" / "train" / "r_5.png")
    assert (single.kind, single.frames) == ("image", [1001])


# --------------------------------------------------------------------------- sequences


def test_parse_pattern_tokens() -> None:
    for text in ("sh/plate.%04d.exr", "sh/plate.####.exr", "sh/plate.@@@@.exr"):
        pattern = parse_pattern(text)
        assert pattern is not None
        assert (pattern.prefix, pattern.padding, pattern.suffix) == ("plate.", 4, ".exr")
        assert pattern.name(7) == "plate.0007.exr" and pattern.name(12345) == "plate.12345.exr"
        assert pattern.frame_of("plate.0007.exr") == 7
        assert pattern.frame_of("plate.007.exr") is None
    unpadded = parse_pattern("r_%d.png")
    assert unpadded is not None and unpadded.frame_of("r_10.png") == 10
    assert unpadded.frame_of("r_010.png") is None
    assert parse_pattern("plate.exr") is None


def test_sequence_with_gap_by_pattern_and_folder(tmp_path: Path) -> None:
    make_sequence(tmp_path / "seq", [1001, 1002, 1003, 1004, 1006, 1007])
    (tmp_path / "seq" / "notes.txt").write_text("not an image")
    for spec in ("plate.%04d.png", "plate.####.png", "plate.@@@@.png"):
        plates = open_plates(tmp_path / "seq" / spec, fps=24)
        assert plates.frames == [1001, 1002, 1003, 1004, 1006, 1007]
        assert plates.missing == [1005] and plates.fps == Fraction(24)
    folder = open_plates(tmp_path / "seq")
    assert (folder.kind, folder.frames[0], folder.missing) == ("sequence", 1001, [1005])
    assert folder.read(1003)[0, 0, 0] == pytest.approx(0.03, abs=0.5 / 255)
    with pytest.raises(InputError, match="gap"):
        folder.read(1005)
    shifted = open_plates(tmp_path / "seq", start_frame=1)
    assert shifted.frames == [1, 2, 3, 4, 6, 7] and shifted.path(6).name == "plate.1006.png"


def test_exr_sequence_is_scene_linear(tmp_path: Path) -> None:
    for f in (1, 2, 3):
        channels = {c: np.full((4, 5), f, np.float32) for c in "RGB"}
        write_exr(tmp_path / f"beauty_{f:03d}.exr", channels)
    plates = open_plates(tmp_path / "beauty_###.exr")
    assert (plates.encoding, plates.frames) == ("linear", [1, 2, 3])
    assert (plates.width, plates.height) == (5, 4)
    assert plates.read(2).mean() == 2.0


def test_folder_with_two_sequences_is_refused(tmp_path: Path) -> None:
    make_sequence(tmp_path, [1, 2, 3], "a.{:04d}.png")
    make_sequence(tmp_path, [1, 2], "b.{:04d}.png")
    expected = r"a\.####\.png \(3 files\), b\.####\.png \(2 files\)"
    with pytest.raises(InputError, match=expected) as err:
        open_plates(tmp_path)
    assert_one_line_naming(err, tmp_path)


def test_empty_pattern_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no files match") as err:
        open_plates(tmp_path / "plate.####.exr")
    assert_one_line_naming(err, tmp_path / "plate.####.exr")
    with pytest.raises(InputError, match="do not exist") as err:
        open_plates(tmp_path / "nowhere")
    assert_one_line_naming(err, tmp_path / "nowhere")
    with pytest.raises(InputError, match="holds no images"):
        open_plates(tmp_path)


# --------------------------------------------------------------------------- bad input


def test_folder_with_a_different_size_names_the_odd_file(data_dir: Path, tmp_path: Path) -> None:
    source = sorted((data_dir / "south_building" / "images").glob("*.JPG"))[:4]
    for f in source:
        shutil.copy(f, tmp_path / f.name)
    odd = tmp_path / source[2].name
    PILImage.open(source[2]).resize((384, 288)).save(odd, quality=90)
    with pytest.raises(InputError) as err:
        open_plates(tmp_path)
    assert_one_line_naming(err, odd)
    assert "384x288" in str(err.value) and "768x576" in str(err.value)
    assert source[0].name in str(err.value)


def test_corrupt_jpeg_plate_fails_on_read(data_dir: Path, tmp_path: Path) -> None:
    source = sorted((data_dir / "south_building" / "images").glob("*.JPG"))[:3]
    for f in source:
        shutil.copy(f, tmp_path / f.name)
    bad = tmp_path / source[1].name
    bad.write_bytes(source[1].read_bytes()[:30000])
    plates = open_plates(tmp_path)  # the header is intact
    assert plates.read(1001).shape == (576, 768, 3)
    with pytest.raises(InputError, match="truncated") as err:
        plates.read(1002)
    assert_one_line_naming(err, bad)


def test_corrupt_png_plate_fails_on_open(data_dir: Path, tmp_path: Path) -> None:
    for name in ("r_0.png", "r_1.png", "r_2.png"):
        shutil.copy(data_dir / "lego_200" / "train" / name, tmp_path / name)
    bad = tmp_path / "r_1.png"
    bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(InputError) as err:
        open_plates(tmp_path)
    assert_one_line_naming(err, bad)


def test_garbage_exr_plate_is_reported(tmp_path: Path) -> None:
    for f in (1, 2):
        write_exr(tmp_path / f"p.{f:04d}.exr", {"R": np.zeros((4, 4), np.float32)})
    bad = tmp_path / "p.0003.exr"
    bad.write_bytes(np.random.default_rng(2).bytes(2048))
    with pytest.raises(InputError, match="not an OpenEXR file") as err:
        open_plates(tmp_path)
    assert_one_line_naming(err, bad)


def test_unreadable_video_plate(tmp_path: Path) -> None:
    bad = tmp_path / "plate.mp4"
    bad.write_bytes(np.random.default_rng(3).bytes(10000))
    with pytest.raises(InputError, match="not a readable video") as err:
        open_plates(bad)
    assert_one_line_naming(err, bad)


# --------------------------------------------------------------------------- video


def test_video_plates(data_dir: Path, tmp_path: Path) -> None:
    files = sorted((data_dir / "south_building" / "images").glob("*.JPG"))[:5]
    frames = [read_image(f).pixels[::2, ::2] for f in files]
    movie = tmp_path / "plate.mp4"
    write_mp4(movie, frames, fps=25, preset="veryfast")
    with open_plates(movie) as plates:
        assert (plates.kind, plates.frames, plates.fps) == ("video", list(range(1001, 1006)), 25)
        assert (plates.width, plates.height, plates.encoding) == (384, 288, "srgb")
        third = plates.read(1003)
    with VideoReader(movie) as video:
        np.testing.assert_array_equal(third, video.read(2))
    assert open_plates(movie, start_frame=1, fps=Fraction(24000, 1001)).fps == Fraction(24000, 1001)


# --------------------------------------------------------------------------- decoding every frame (issue #21 case 3)


def corrupt_tail_movie(data_dir: Path, folder: Path) -> Path:
    """An 8-frame movie whose last frames (1005-1008 from 1001) no longer decode."""
    files = sorted((data_dir / "south_building" / "images").glob("*.JPG"))[:8]
    movie = folder / "plate.mp4"
    write_mp4(movie, [read_image(f).pixels[::2, ::2] for f in files], fps=25, preset="veryfast")
    data = bytearray(movie.read_bytes())
    lo, hi = int(len(data) * 0.7), int(len(data) * 0.9)
    data[lo:hi] = b"\xff" * (hi - lo)
    movie.write_bytes(bytes(data))
    return movie


def test_every_frame_is_decoded_and_a_truncated_one_is_named(data_dir: Path, tmp_path: Path) -> None:
    source = sorted((data_dir / "south_building" / "images").glob("*.JPG"))[:4]
    for f in source:
        shutil.copy(f, tmp_path / f.name)
    bad = tmp_path / source[2].name
    bad.write_bytes(source[2].read_bytes()[:30000])  # the header survives, the pixels do not
    with open_plates(tmp_path) as plates:
        found = undecodable_frames(plates)
        assert list(found) == [1003]
        assert found[1003].source == str(bad) and "truncated" in found[1003].problem
        plates.leave_out(found)  # a gap in the frame numbers, not a shift
        assert plates.frames == [1001, 1002, 1004] and plates.missing == [1003]
        assert plates.read(1004).shape == (576, 768, 3)
        with pytest.raises(InputError, match="gap"):
            plates.read(1003)


def test_a_video_frame_that_does_not_decode_is_named_by_its_frame_number(data_dir: Path, tmp_path: Path) -> None:
    movie = corrupt_tail_movie(data_dir, tmp_path)
    with open_plates(movie) as plates:
        found = undecodable_frames(plates)
        assert list(found) == [1005, 1006, 1007, 1008]
        assert str(found[1005]).startswith(f"{movie}: cannot decode frame 1005 (frame 4 of the video")
        plates.leave_out(found)
        assert plates.frames == [1001, 1002, 1003, 1004] and plates.read(1004).shape == (288, 384, 3)


# --------------------------------------------------------------------------- phone video (issue #16)


def test_portrait_phone_video_plates_are_upright(data_dir: Path, tmp_path: Path) -> None:
    from test_video import make_clip, psnr, south_images

    frames = south_images(data_dir, 3)  # 384x288 stored, as a phone's sensor records it
    clip = make_clip(tmp_path / "IMG_0001.MOV", frames, codec="libx265", rotation=-90)
    with open_plates(clip) as plates:
        assert (plates.kind, plates.width, plates.height, plates.fps) == ("video", 288, 384, 30)
        assert "rotated -90 degrees (display matrix): 384x288 stored, 288x384 upright" in plates.summary()
        pixels = plates.read(1002)
    assert pixels.shape == (384, 288, 3)
    assert psnr(pixels, np.rot90(frames[1], -1)) > 31.0


def test_variable_rate_video_plates_are_numbered_at_the_shot_rate(data_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from test_video import VFR_TICKS, make_clip, psnr, south_images

    frames = south_images(data_dir, len(VFR_TICKS), step=4)
    clip = make_clip(tmp_path / "vfr.mov", frames, ticks=VFR_TICKS)
    seeks: list[int] = []
    seek = VideoReader._seek
    monkeypatch.setattr(VideoReader, "_seek", lambda self, target: (seeks.append(target), seek(self, target))[1])
    with open_plates(clip) as plates:  # at the clip's own nominal rate, 30 fps
        assert (plates.fps, plates.frames) == (30, list(range(1001, 1013)))
        assert [plates.source_index(f) for f in plates.frames] == [0, 1, 2, 2, 3, 4, 6, 7, 8, 9, 10, 11]
        assert plates.summary().endswith("1 source frames dropped, 1 doubled")
        seeks.clear()
        read = dict(plates.items())  # in order: one seek, the doubled frame is not decoded twice
        assert len(seeks) <= 1, seeks
    np.testing.assert_array_equal(read[1003], read[1004])
    assert psnr(read[1004], frames[2]) > 27.0 and psnr(read[1007], frames[6]) > 27.0
    with open_plates(clip, fps=24) as plates:  # 0.4 s at 24 fps: ten frames
        assert plates.frames == list(range(1001, 1011))
        # Output times 0, 25, 50 ... ticks: 150 is as near source 7 (140) as 8 (160) and takes the earlier.
        assert [plates.source_index(f) for f in plates.frames] == [0, 1, 2, 3, 4, 6, 7, 9, 10, 11]
        mapping = plates.frame_map
        assert (mapping.dropped, mapping.doubled) == (2, 0)


def test_init_on_variable_rate_video_reports_what_was_dropped_and_doubled(data_dir: Path, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from splatfx.commands.init import command
    from splatfx.shot.folder import Shot
    from test_video import VFR_TICKS, make_clip, south_images

    clip = make_clip(tmp_path / "vfr.mov", south_images(data_dir, len(VFR_TICKS), step=4), ticks=VFR_TICKS)
    result = CliRunner().invoke(command, [str(tmp_path / "shot"), "--plates", str(clip), "--fps", "24"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "extracting 10 frames from vfr.mov" in flat  # the decode pass's progress bar
    assert ("12 source frames, variable rate 30.000 fps average, interval 33.33 ms mean, 16.67-66.67 ms; "
            "mapped to 10 frames at 24 fps by nearest time: 2 source frames dropped, 0 doubled") in flat
    shot = Shot.open(tmp_path / "shot")
    assert (shot.config.shot.fps, str(shot.frames)) == (24.0, "1001-1010")
    report = json.loads(shot.plates_report.read_text())
    assert (report["source"], report["codec"], report["bit_depth"], report["size"]) == (str(clip), "h264", 8,
                                                                                       [192, 144])
    assert (report["frames"], report["source_frames"], report["dropped"], report["doubled"]) == (10, 12, 2, 0)
    assert (report["interval_min_ms"], report["interval_max_ms"], report["variable_rate"]) == (16.6667, 66.6667, True)
    assert report["frames_to_source"]["1007"] == 7 and report["frames_to_source"]["1008"] == 9
    with shot.open_plates() as plates:  # every later stage numbers the frames the same way
        assert [plates.source_index(f) for f in plates.frames] == list(report["frames_to_source"].values())


def test_init_on_constant_rate_video_keeps_its_rate_one_to_one(data_dir: Path, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from splatfx.commands.init import command
    from splatfx.shot.folder import Shot
    from test_video import make_clip, south_images

    # 29.97 fps on a 1/30000 clock, as broadcast cameras write it; no --fps: the clip's own rate.
    clip = make_clip(tmp_path / "ntsc.mp4", south_images(data_dir, 5, step=4), ticks=[1001 * i for i in range(5)],
                     timescale=30000, rotation=-90)
    result = CliRunner().invoke(command, [str(tmp_path / "shot"), "--plates", str(clip)])
    assert result.exit_code == 0, result.output
    assert "1:1 as 5 frames at 29.97 fps (none dropped or doubled)" in " ".join(result.output.split())
    assert "144x192" in result.output  # the upright size
    shot = Shot.open(tmp_path / "shot")
    assert Fraction(shot.config.shot.fps).limit_denominator(1001000) == Fraction(30000, 1001)
    report = json.loads(shot.plates_report.read_text())
    assert (report["fps"], report["one_to_one"], report["rotation_degrees"]) == ("30000/1001", True, -90)
    assert (report["stored_size"], report["size"]) == ([192, 144], [144, 192])
    with shot.open_plates() as plates:  # the rate read back from shot.toml still maps 1:1
        assert plates.frame_map.one_to_one and (plates.width, plates.height) == (144, 192)
    # Images afterwards (with --force): the stale video report goes.
    again = CliRunner().invoke(command, [str(tmp_path / "shot"), "--plates", str(data_dir / "fern" / "images_8"),
                                         "--force"])
    assert again.exit_code == 0, again.output
    assert not shot.plates_report.exists() and Shot.open(tmp_path / "shot").config.shot.fps == 24.0
