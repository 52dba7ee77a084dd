"""shot.toml schema: defaults, round trips, and one clear message per bad setting."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splatfx.shot.config import (
    FrameRange,
    ShotConfig,
    TrainSection,
    config_from_dict,
    config_to_dict,
    dumps_config,
    iter_settings,
    load_config,
    override,
    save_config,
    toml_value,
)
from splatfx.core.errors import ConfigError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "shot.md"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def custom_config() -> ShotConfig:
    """A config that differs from the defaults in every kind of field."""
    c = ShotConfig()
    return dataclasses.replace(
        c,
        shot=dataclasses.replace(c.shot, name="sb_010", fps=23.976, frames=FrameRange(1001, 1128),
                                 plates="/mnt/plates/sb_010/plate.####.exr", seed=7),
        solve=dataclasses.replace(c.solve, matcher="sequential", loop_closure=True, import_cameras="import/sparse",
                                  scale=dataclasses.replace(c.solve.scale, kind="distance", metres=3.5,
                                                            points=((0.0, 0.0, 0.0), (1.0, 2.0, 0.5)))),
        train=dataclasses.replace(c.train, max_steps=7000, max_minutes=12.5, strategy="mcmc",
                                  background=(1.0, 1.0, 1.0)),
        fx=dataclasses.replace(
            c.fx, effects=("collapse", "snow"),
            select=dataclasses.replace(c.fx.select, shape="polygon", polygon=((0.0, 0.0), (4.0, 0.0), (4.0, 3.0))),
            collapse=dataclasses.replace(c.fx.collapse, trigger="charge", trigger_frame=1040,
                                         trigger_point=(1.0, 2.0, 3.0)),
            snow=dataclasses.replace(c.fx.snow, wind=(2.0, 0.0, 0.0), color=(0.8, 1.0, 0.5))),
        render=dataclasses.replace(c.render, passes=("rgba", "depth")),
        refine=dataclasses.replace(c.refine, model="models/refiner", seed=3),
        comp=dataclasses.replace(c.comp, outputs=("exr", "png", "mp4"), ocio="ocio/config.ocio"),
    )


@pytest.mark.parametrize("config", [ShotConfig(), custom_config()], ids=["defaults", "custom"])
def test_round_trip_load_save_load(tmp_path: Path, config: ShotConfig) -> None:
    path = tmp_path / "shot.toml"
    save_config(config, path)
    loaded = load_config(path)
    assert loaded == config
    save_config(loaded, path)
    assert load_config(path) == config
    assert path.read_text() == dumps_config(config)
    assert [p.name for p in tmp_path.iterdir()] == ["shot.toml"]  # no temporary files left


def test_empty_file_gives_defaults_and_partial_tables_keep_other_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == ShotConfig()
    c = load_config(write(tmp_path, '[train]\nmax_steps = 500\n[shot]\nfps = 25\nframes = "1001-1010"\n'))
    assert c.train.max_steps == 500 and c.train.strategy == "adc"
    assert c.shot.fps == 25.0 and isinstance(c.shot.fps, float)
    assert c.shot.frames == FrameRange(1001, 1010) and len(c.shot.frames) == 10
    assert c.solve == ShotConfig().solve


def test_saved_file_is_readable_toml_with_one_line_arrays(tmp_path: Path) -> None:
    text = dumps_config(custom_config())
    assert 'frames = "1001-1128"' in text
    assert "background = [1.0, 1.0, 1.0]" in text
    assert "polygon = [[0.0, 0.0], [4.0, 0.0], [4.0, 3.0]]" in text
    assert "# virtual_camera (optional, unset):" in text  # unset optional keys are shown as comments


def test_error_message_names_file_table_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[train]\nmax_steps = -3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path} [train] max_steps: must be a positive integer, got -3"
    assert err.value.source == f"{path} [train] max_steps"


BAD = [
    ("[train]\nmax_steps = 'many'", "[train] max_steps", "must be an integer or 'auto', got 'many'"),
    ("[train]\nsh_degree = 'many'", "[train] sh_degree", "must be an integer, got 'many' (a string)"),
    ("[train]\nmax_steps = true", "[train] max_steps", "must be an integer"),
    ("[train]\nsh_degree = 4", "[train] sh_degree", "must be between 0 and 3, got 4"),
    ("[train]\nmax_minutes = nan", "[train] max_minutes", "must be a finite number"),
    ("[train]\nbackground = [0, 0]", "[train] background", "must be an array of 3 numbers, got 2 items"),
    ("[train]\nbackground = [0, 2, 0]", "[train] background[1]", "must be between 0 and 1, got 2.0"),
    ("[train]\nstrategy = 'mcm'", "[train] strategy", "must be one of 'adc', 'mcmc', got 'mcm'; did you mean 'mcmc'?"),
    ("[shot]\nfps = 0", "[shot] fps", "must be above 0 and at most 1000, got 0.0"),
    ("[shot]\nfps = -24", "[shot] fps", "must be above 0"),
    ("[shot]\nfps = 1e300", "[shot] fps", "must be above 0 and at most 1000, got 1e+300"),
    ("[shot]\nseed = 99999999999999999999", "[shot] seed", "must be between 0 and 2147483647, got 9999"),
    ("[train]\nmax_steps = 99999999999999999999", "[train] max_steps", "must be a 64-bit integer"),
    ("[shot]\nframes = '1001-99999999999999999999'", "[shot] frames", "must be at most 2147483647"),
    ("[shot]\nseed = 1.5", "[shot] seed", "must be an integer"),
    ("[shot]\nframes = '1128-1001'", "[shot] frames", "end frame 1001 is before start frame 1128"),
    ("[shot]\nframes = 'a-b'", "[shot] frames", 'must look like "1001-1096"'),
    ("[shot]\nplates_mode = 'move'", "[shot] plates_mode", "must be one of 'reference', 'copy'"),
    ("[shot]\nname = 3", "[shot] name", "must be a string"),
    ("[fx.collapse]\ndebris = -1", "[fx.collapse] debris", "must be a non-negative integer (0 or more), got -1"),
    ("[fx.collapse]\nfragments = 0", "[fx.collapse] fragments", "must be a positive integer, got 0"),
    ("[fx.collapse]\nrestitution = 1.5", "[fx.collapse] restitution", "must be between 0 and 1"),
    ("[fx.snow]\ndensity = -5.0", "[fx.snow] density", "must be at least 0, got -5.0"),
    ("[fx.snow]\nsettle = 'yes'", "[fx.snow] settle", "must be true or false"),
    ("[fx]\neffects = ['collapse', 'collapse']", "[fx] effects", "lists 'collapse' more than once"),
    ("[fx]\neffects = ['explode']", "[fx] effects[0]", "must be one of 'collapse', 'snow'"),
    ("[fx.select]\nshape = 'polygon'\npolygon = [[0, 0], [1, 0]]", "[fx.select] polygon", "at least 3 points, got 2"),
    ("[fx.select]\nz_min = 5.0\nz_max = 1.0", "[fx.select] z_max", "must be above z_min"),
    ("[solve.scale]\nkind = 'distance'", "[solve.scale] points", "needs exactly two points, got 0"),
    ("[solve.scale]\nkind = 'height'\nbox = [0, 0, 0, 1]", "[solve.scale] box", "must hold 6 numbers"),
    ("[solve.scale]\nmetres = 0", "[solve.scale] metres", "must be greater than 0"),
    ("[render]\ncamera = 'virtual'", "[render] virtual_camera", "needs the virtual_camera file"),
    ("[shot]\nframes = '1001-1010'\n[fx.collapse]\ntrigger_frame = 2000", "[fx.collapse] trigger_frame",
     "must lie in the shot's frames 1001-1010, got 2000"),
    ("train = 5", "[train]", "must be a table, got 5 (an integer)"),
    ("[solve]\nscale = 2.0", "[solve.scale]", "must be a table"),
]


@pytest.mark.parametrize("text,key,problem", BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.source == f"{path} {key}"
    assert problem in err.value.problem


@pytest.mark.parametrize("text,key,suggestion", [
    ("[train]\nmax_step = 10", "[train] max_step", "did you mean 'max_steps'?"),
    ("[trian]\nmax_steps = 10", "[trian]", "did you mean [train]?"),
    ("[fx.colapse]\nfragments = 10", "[fx.colapse]", "did you mean [fx.collapse]?"),
    ("[fx.snow]\nwnd = [1, 0, 0]", "[fx.snow] wnd", "did you mean 'wind'?"),
    ("density = 3.0", "density", "is outside any table; did you mean [fx.collapse] density or [fx.snow] density?"),
])
def test_unknown_keys_suggest_the_closest(tmp_path: Path, text: str, key: str, suggestion: str) -> None:
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.source == f"{path} {key}"
    assert suggestion in err.value.problem


def test_unknown_key_without_a_close_match_lists_the_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key \(keys: max_steps, max_minutes"):
        load_config(write(tmp_path, "[train]\nzzzz = 1\n"))


@pytest.mark.parametrize("text,key,problem", [
    ("[shot]\nplates = '../other_shot/plates'", "[shot] plates", "must stay inside the shot folder"),
    ("[solve]\nimport_cameras = 'cams/../../x'", "[solve] import_cameras", "must stay inside the shot folder"),
    ("[refine]\nmodel = '/opt/models/refiner'", "[refine] model", "must be relative to the shot folder"),
    ("[comp]\nocio = '~/ocio/config.ocio'", "[comp] ocio", "must be relative to the shot folder"),
    ("[render]\nvirtual_camera = ''", "[render] virtual_camera", "must not be empty"),
    ("[shot]\nplates = '/mnt/plates'\nplates_mode = 'copy'", "[shot] plates", "plates_mode 'copy' needs plates inside"),
])
def test_paths_may_not_escape_the_shot_folder(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.source == f"{path} {key}"
    assert problem in err.value.problem


def test_allowed_paths(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, "[shot]\nplates = '/mnt/plates/sb.####.exr'\n"
                                    "[solve]\nimport_cameras = 'cams/../colmap/sparse'\n"))
    assert c.shot.plates == "/mnt/plates/sb.####.exr"
    assert c.solve.import_cameras == "cams/../colmap/sparse"


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[train\nmax_steps = 3\n")
    with pytest.raises(ConfigError, match=r"is not valid TOML") as err:
        load_config(path)
    assert err.value.source == str(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "shot.toml")


def test_frame_range_parsing() -> None:
    assert FrameRange.parse("1001-1096") == FrameRange(1001, 1096)
    assert FrameRange.parse(" 12 - 12 ") == FrameRange(12, 12)
    assert FrameRange.parse("1001") == FrameRange(1001, 1001)
    assert FrameRange.parse([1, 5]) == FrameRange(1, 5)
    assert list(FrameRange(3, 5)) == [3, 4, 5] and 4 in FrameRange(3, 5) and 6 not in FrameRange(3, 5)
    for bad in ["1096-1001", "-5-3", "10:20", [1, 2, 3], [1.0, 2.0], True]:
        with pytest.raises(ValueError):
            FrameRange.parse(bad)


def test_override_validates_like_the_file() -> None:
    train = override(TrainSection(), "--max-steps", max_steps=100, max_minutes=None)
    assert train.max_steps == 100 and train.max_minutes is None and train.strategy == "adc"
    with pytest.raises(ConfigError) as err:
        override(TrainSection(), "command line", max_steps=-3)
    assert str(err.value) == "command line max_steps: must be a positive integer, got -3"


def test_config_to_dict_leaves_out_unset_optionals() -> None:
    d = config_to_dict(ShotConfig())
    assert "max_minutes" not in d["train"] and d["train"]["max_steps"] == "auto"
    assert d["fx"]["select"]["center"] == [0.0, 0.0, 5.0]


def test_docs_list_every_key_with_its_default() -> None:
    """docs/shot.md has one row per key under its table's heading, with the default shown."""
    text = DOCS.read_text(encoding="utf-8")
    sections = dict(re.findall(r"^### `\[([\w.]+)\]`\n(.*?)(?=^#{2,3} |\Z)", text, flags=re.M | re.S))
    for info in iter_settings():
        assert info.table in sections, f"docs/shot.md has no section for [{info.table}]"
        rows = [line for line in sections[info.table].splitlines() if line.startswith(f"| `{info.key}` |")]
        assert len(rows) == 1, f"docs/shot.md [{info.table}] lacks a row for {info.key}"
        if info.default is not None and info.default != "":
            shown = config_to_dict(ShotConfig())
            for part in info.table.split("."):
                shown = shown[part]
            default = toml_value(shown[info.key])
            assert default in rows[0], f"[{info.table}] {info.key}: default {default} not in docs row"



def test_scale_assumption_matches_the_solve() -> None:
    from splatfx.recon.orient import DEFAULT_CAMERA_HEIGHT_M, ScaleMeasure
    assert ShotConfig().solve.scale.metres == DEFAULT_CAMERA_HEIGHT_M
    assert ShotConfig().solve.scale.kind == ScaleMeasure().kind


# --- issue #21 case 9: every value either loads or is a ConfigError, and what loads fits its use -----

INT64 = (-2**63, 2**63 - 1)
INT32_MAX = 2**31 - 1  # EXR headers store integers (the seed, the frame number) as 32-bit
_EDGE_INTS = [2**31 - 1, 2**31, 2**63 - 1, 2**63, -2**63 - 1, 99999999999999999999, -10**30]
_scalars = st.one_of(st.integers(), st.sampled_from(_EDGE_INTS), st.floats(), st.text(max_size=12),
                     st.sampled_from(["1001-99999999999999999999", "99999999999999999999", "0-2147483647"]))
_values = st.one_of(_scalars, st.lists(_scalars, max_size=3))
_KEYS = [(info.table, info.key) for info in iter_settings()]


def _numbers(value: object, name: str = "") -> Iterator[tuple[str, object]]:
    """Every (setting name, int or float) inside a loaded config, arrays and sub-tables included."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _numbers(getattr(value, f.name), f.name if not isinstance(value, FrameRange) else name)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _numbers(item, name)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield name, value


@pytest.mark.parametrize("table,key", _KEYS, ids=[f"{t}.{k}" for t, k in _KEYS])
@settings(max_examples=25, derandomize=True, deadline=None, database=None)
@given(value=_values)
def test_any_value_in_any_key_loads_or_is_a_config_error(table: str, key: str, value: object) -> None:
    doc: dict = {}
    node = doc
    for part in table.split("."):
        node = node.setdefault(part, {})
    node[key] = value
    try:
        config = config_from_dict(doc, "shot.toml")
    except ConfigError as exc:
        assert str(exc).startswith(f"shot.toml [{table}]") and "\n" not in str(exc)
        return
    for name, number in _numbers(config):
        assert math.isfinite(number), f"{name} = {number} loaded"
        if isinstance(number, int):
            assert INT64[0] <= number <= INT64[1], f"{name} = {number} loaded but does not fit a 64-bit integer"
        if name in ("seed", "frames"):
            assert 0 <= number <= INT32_MAX, f"{name} = {number} loaded but does not fit an EXR header"
        if name == "fps":  # the EXR framesPerSecond attribute is a ratio of 32-bit integers
            assert Fraction(number).limit_denominator(1001000).numerator <= INT32_MAX, f"fps = {number} loaded"


@pytest.mark.parametrize("text", ["[shot]\nseed = 99999999999999999999", "[shot]\nseed = 2147483648",
                                  "[refine]\nseed = 9223372036854775808", "[shot]\nframes = '1001-99999999999999999999'",
                                  "[train]\nmax_steps = 99999999999999999999"])
def test_integers_beyond_their_documented_range_are_config_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="must be|frames"):
        load_config(write(tmp_path, text + "\n"))


def test_the_largest_documented_seed_loads_and_lands_in_the_exr_header_exactly(tmp_path: Path) -> None:
    import numpy as np

    from splatfx.io.images import read_exr, write_exr
    assert "0 to 2147483647" in DOCS.read_text(encoding="utf-8")  # docs/shot.md states the range it checks
    config = load_config(write(tmp_path, "[shot]\nseed = 2147483647\nframes = '2147483647'\n"))
    write_exr(tmp_path / "a.exr", {"R": np.zeros((1, 1), np.float32)}, frame=config.shot.frames.end,
              attributes={"splatfx/seed": config.shot.seed})
    header = read_exr(tmp_path / "a.exr")[1]
    assert header.attributes["splatfx/seed"] == 2147483647 and header.frame == 2147483647
