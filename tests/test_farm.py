"""splatfx.shot.farm: per-frame work in chunks on a process pool and on a (local) Ray cluster.

The per-frame work is real: each frame is a south_building photo turned into a quarter-size
scene-linear EXR, written atomically, as a plate ingest does.
"""

from __future__ import annotations

import functools
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from conftest import data_root

from splatfx.core.color import srgb_to_linear
from splatfx.core.errors import SplatfxError
from splatfx.shot.farm import FarmError, make_chunks, run_frames
from splatfx.io.images import pack_rgba, read_exr, read_image, write_exr

DATA = data_root()
PLATES = sorted((DATA / "south_building" / "images").iterdir())
FIRST = 1001


def plate_to_exr(out_dir: str, frame: int, crash_marker: str | None = None, crash_frame: int | None = None,
                 fail_marker: str | None = None) -> list[str]:
    """Quarter-size scene-linear EXR of plate ``frame``.

    ``crash_marker``: on ``crash_frame``, if the marker file does not exist yet, create it and
    SIGKILL this worker process (a machine dying mid-chunk, once). ``fail_marker``: raise on
    ``crash_frame`` while that file exists (a frame that keeps failing).
    """
    if frame == crash_frame and crash_marker is not None and not os.path.exists(crash_marker):
        Path(crash_marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    if frame == crash_frame and fail_marker is not None and os.path.exists(fail_marker):
        raise RuntimeError(f"frame {frame} cannot be computed")
    linear = srgb_to_linear(read_image(PLATES[frame - FIRST]).pixels)
    h, w = linear.shape[:2]
    small = linear.reshape(h // 4, 4, w // 4, 4, 3).mean(axis=(1, 3)).astype(np.float32)
    path = Path(out_dir) / f"plate.{frame:04d}.exr"
    write_exr(path, pack_rgba(small), frame=frame)
    return [str(path)]


def expected_names(frames) -> list[str]:
    return [f"plate.{f:04d}.exr" for f in frames]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Frames 1001-1012 computed in this process, one after the other."""
    out = tmp_path_factory.mktemp("reference")
    for frame in range(1001, 1013):
        plate_to_exr(str(out), frame)
    return out


def assert_same_frames(out: Path, reference: Path, frames) -> None:
    """Exactly one file per frame (no temporaries, no extras), byte-identical to the reference."""
    assert sorted(os.listdir(out)) == expected_names(frames)
    for name in expected_names(frames):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_chunks_are_consecutive_frame_ranges():
    chunks = make_chunks([1005, 1001, 1002, 1003, 1004, 1010, 1003], 2)
    assert [c.label for c in chunks] == ["1001-1002", "1003-1004", "1005-1010"]
    assert chunks[-1].frames == (1005, 1010)
    with pytest.raises(ValueError):
        make_chunks(range(3), 0)


def test_local_executor_matches_one_process(tmp_path, reference):
    result = run_frames(range(1001, 1013), functools.partial(plate_to_exr, str(tmp_path)), executor="local",
                        chunk_size=3, workers=2)
    assert sorted(result.outputs) == list(range(1001, 1013))
    assert sorted(result.ran) == ["1001-1003", "1004-1006", "1007-1009", "1010-1012"]
    assert result.retried == []
    assert_same_frames(tmp_path, reference, range(1001, 1013))
    pixels, header = read_exr(tmp_path / "plate.1005.exr")
    assert header.frame == 1005 and pixels["R"].shape == (144, 192)


def test_ray_executor_matches_local(tmp_path, reference, ray_cluster):
    result = run_frames(range(1001, 1013), functools.partial(plate_to_exr, str(tmp_path)), executor="ray",
                        chunk_size=4)
    assert sorted(result.ran) == ["1001-1004", "1005-1008", "1009-1012"]
    assert {f: [Path(p).name for p in paths] for f, paths in result.outputs.items()} == \
        {f: [f"plate.{f:04d}.exr"] for f in range(1001, 1013)}
    assert_same_frames(tmp_path, reference, range(1001, 1013))


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_worker_killed_mid_chunk_reruns_the_chunk(executor, tmp_path, reference, request):
    if executor == "ray":
        request.getfixturevalue("ray_cluster")
    out, marker = tmp_path / "out", tmp_path / "killed"
    out.mkdir()
    work = functools.partial(plate_to_exr, str(out), crash_marker=str(marker), crash_frame=1002)
    result = run_frames(range(1001, 1009), work, executor=executor, chunk_size=4, workers=2)
    assert marker.is_file()  # a worker really was killed, inside chunk 1001-1004, after frame 1001
    assert int(marker.read_text()) != os.getpid()
    assert result.attempts["1001-1004"] == 2
    assert sorted(result.outputs) == list(range(1001, 1009))
    assert_same_frames(out, reference, range(1001, 1009))


def test_resume_skips_completed_chunks(tmp_path, reference):
    out, journal, fail = tmp_path / "out", tmp_path / "farm.json", tmp_path / "fail"
    out.mkdir()
    fail.touch()
    work = functools.partial(plate_to_exr, str(out), crash_frame=1008, fail_marker=str(fail))
    with pytest.raises(FarmError) as failed:
        run_frames(range(1001, 1013), work, chunk_size=3, workers=2, retries=1, journal=journal, job_key="v1")
    assert isinstance(failed.value, SplatfxError)
    assert "1007-1009" in str(failed.value) and "frame 1008 cannot be computed" in str(failed.value)
    recorded = json.loads(journal.read_text())["chunks"]
    assert sorted(recorded) == ["1001-1003", "1004-1006", "1010-1012"]

    fail.unlink()  # the cause is fixed: the same command again does only what is missing
    again = run_frames(range(1001, 1013), work, chunk_size=3, workers=2, journal=journal, job_key="v1")
    assert again.ran == ["1007-1009"]
    assert sorted(again.skipped) == ["1001-1003", "1004-1006", "1010-1012"]
    assert sorted(again.outputs) == list(range(1001, 1013))
    assert_same_frames(out, reference, range(1001, 1013))

    (out / "plate.1011.exr").write_bytes(b"damaged")  # a changed output is not trusted
    third = run_frames(range(1001, 1013), work, chunk_size=3, workers=2, journal=journal, job_key="v1")
    assert third.ran == ["1010-1012"]
    assert_same_frames(out, reference, range(1001, 1013))

    other_job = run_frames(range(1001, 1013), work, chunk_size=3, workers=2, journal=journal, job_key="v2")
    assert sorted(other_job.ran) == ["1001-1003", "1004-1006", "1007-1009", "1010-1012"]
