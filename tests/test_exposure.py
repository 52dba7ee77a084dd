"""The per-plate exposure file and the exposure of a plate training did not see
(splatfx.recon.exposure)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from splatfx.core.errors import InputError
from splatfx.recon.exposure import (IDENTITY, capture_order, exposure_beside, exposure_for, read_exposure,
                                    write_exposure)


def gain(value: float) -> np.ndarray:
    return (np.eye(3, 4) * value).astype(np.float32)


def test_a_learnt_plate_keeps_its_own_transform() -> None:
    transforms = {"P0002.JPG": gain(0.7), "P0004.JPG": gain(1.3)}
    assert np.array_equal(exposure_for("P0004.JPG", transforms), gain(1.3))


def test_a_held_out_plate_is_interpolated_by_its_place_in_the_capture() -> None:
    transforms = {"P0001.JPG": gain(0.6), "P0005.JPG": gain(1.4)}
    order = [f"P000{i}.JPG" for i in range(1, 6)]
    assert exposure_for("P0002.JPG", transforms, order)[0, 0] == pytest.approx(0.8)
    assert exposure_for("P0004.JPG", transforms, order)[0, 0] == pytest.approx(1.2)
    # without the whole capture's names only the learnt plates place it: halfway
    assert exposure_for("P0002.JPG", transforms)[0, 0] == pytest.approx(1.0)


def test_numbers_in_names_are_ordered_as_numbers() -> None:
    transforms = {"r_2.png": gain(0.5), "r_10.png": gain(1.5), "r_30.png": gain(3.0)}
    assert capture_order(["r_10.png", "r_9.png", "r_2.png"]) == ["r_2.png", "r_9.png", "r_10.png"]
    # r_9 lies between r_2 and r_10 (not after r_30, as a plain sort would have it)
    assert exposure_for("r_9.png", transforms)[0, 0] == pytest.approx(1.0)


def test_plates_beyond_the_ends_take_the_nearest_and_none_learnt_is_the_identity() -> None:
    transforms = {"b.png": gain(0.5), "c.png": gain(2.0)}
    assert exposure_for("a.png", transforms)[0, 0] == pytest.approx(0.5)
    assert exposure_for("d.png", transforms)[0, 0] == pytest.approx(2.0)
    assert np.array_equal(exposure_for("a.png", {}), IDENTITY)


def test_exposure_file_round_trips_bit_exactly(tmp_path) -> None:
    rng = np.random.default_rng(0)
    transforms = {f"P{i}.JPG": (IDENTITY + rng.normal(0, 0.05, (3, 4))).astype(np.float32) for i in range(5)}
    path = tmp_path / "exposure.json"
    write_exposure(path, transforms)
    back = read_exposure(path)
    assert list(back) == list(transforms)
    assert all(np.array_equal(back[name], transforms[name]) for name in transforms)
    (tmp_path / "scene.ply").write_bytes(b"")
    assert list(exposure_beside(tmp_path / "scene.ply", ["P0.JPG", "P9.JPG"])) == list(transforms)
    assert exposure_beside(tmp_path / "elsewhere" / "scene.ply", ["P0.JPG"]) is None
    # a scene shown on another capture: no plate of it is in the table
    assert exposure_beside(tmp_path / "scene.ply", ["IMG_0001.JPG"]) is None


@pytest.mark.parametrize("text,problem", [
    ('{"P1.JPG": [[1, 0, 0, 0], [0, 1, 0', "is not a JSON table"),
    ('[[1, 0, 0, 0]]', "must hold a table"),
    ('{"P1.JPG": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}', "'P1.JPG' is not a finite 3x4"),
    ('{"P1.JPG": [[NaN, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]}', "'P1.JPG' is not a finite 3x4"),
    ('{"P1.JPG": "bright"}', "'P1.JPG' is not a finite 3x4"),
])
def test_a_broken_exposure_file_is_named_with_its_problem(tmp_path, text, problem) -> None:
    path = tmp_path / "exposure.json"
    path.write_text(text)
    with pytest.raises(InputError) as error:
        read_exposure(path)
    assert str(path) in str(error.value) and problem in str(error.value)


def test_written_tables_are_plain_json(tmp_path) -> None:
    write_exposure(tmp_path / "exposure.json", {"P1.JPG": gain(1.0)})
    assert json.loads((tmp_path / "exposure.json").read_text()) == {"P1.JPG": gain(1.0).tolist()}
