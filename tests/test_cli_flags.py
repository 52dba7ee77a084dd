"""Every command-line flag that sets a shot.toml key is named after the key and typed as the
table declares it (range, choices), so a flag and the file never disagree."""

from __future__ import annotations

import dataclasses
import typing

import click
import pytest

from splatfx.cli import cli
from splatfx.commands.init import FrameRangeParam
from splatfx.commands.options import CommaList, click_type, flag_name
from splatfx.shot.config import (CollapseSection, CompSection, FarmSection, FrameRange, RefineSection, RenderSection,
                                 SelectSection, ShotSection, SnowSection, SolveSection, TrainSection)

#: Each command (space-separated path under `splatfx`) and the shot.toml tables its flags may set.
TABLES: dict[str, tuple[type, ...]] = {
    "init": (ShotSection,),
    "solve": (SolveSection,),
    "train": (TrainSection,),
    "fx select": (SelectSection,),
    "fx collapse": (CollapseSection,),
    "fx snow": (SnowSection,),
    "render": (RenderSection, FarmSection),
    "refine": (RefineSection, FarmSection),
    "comp": (CompSection, FarmSection),
    "run": (FarmSection,),
}

#: Flags named as a key whose value is written another way, and why.
SPELLED_OTHERWISE = {
    ("train", "background"): "also white, black or a grey level, as load_dataset reads it",
    ("init", "size"): "WIDTHxHEIGHT, as image sizes are written on a command line ([shot] size = [w, h])",
}


def command(path: str) -> click.Command:
    found: click.Command = cli
    for name in path.split():
        found = found.get_command(click.Context(found), name)  # type: ignore[attr-defined]
    return found


def describe(kind: click.ParamType) -> tuple:
    """What a click type accepts: its class, range and choices (CommaList: its items')."""
    if isinstance(kind, CommaList):
        return ("list", describe(kind.item))
    if isinstance(kind, click.Choice):
        return ("choice", frozenset(map(str, kind.choices)))
    if isinstance(kind, (click.IntRange, click.FloatRange)):
        return (type(kind).__name__, kind.min, kind.max, kind.min_open, kind.max_open)
    if isinstance(kind, click.Path):  # a path setting: any string, checked when the table is overridden
        return (click.STRING.name,)
    return (kind.name,)


def key_flags() -> list[tuple[str, type, click.Option]]:
    """(command, table, option) for every option whose name is a key of the command's tables."""
    found = []
    for path, tables in TABLES.items():
        for param in command(path).params:
            for table in tables:
                if isinstance(param, click.Option) and param.name in {f.name for f in dataclasses.fields(table)}:
                    found.append((path, table, param))
    return found


@pytest.mark.parametrize("path, table, option", key_flags(),
                         ids=[f"{p}--{o.name}" for p, _, o in key_flags()])
def test_a_flag_that_sets_a_key_has_its_name_and_type(path: str, table: type, option: click.Option) -> None:
    key = option.name
    assert flag_name(key) in option.opts, f"`splatfx {path}` sets {table.__name__}.{key} with {option.opts}"
    if (path, key) in SPELLED_OTHERWISE:
        return
    declared = {f.name: f for f in dataclasses.fields(table)}[key]
    tp = typing.get_type_hints(table)[key]
    inner = next((a for a in typing.get_args(tp) if a is not type(None)), tp) if type(None) in typing.get_args(tp) \
        else tp
    if inner is bool:
        assert option.is_bool_flag, f"`splatfx {path} {flag_name(key)}` should be a switch"
    elif inner is FrameRange:
        assert isinstance(option.type, FrameRangeParam)
    else:
        assert describe(option.type) == describe(click_type(tp, declared.metadata)), f"`splatfx {path} {flag_name(key)}`"


def test_train_has_a_flag_for_every_train_key() -> None:
    names = {p.name for p in command("train").params}
    assert {f.name for f in dataclasses.fields(TrainSection)} <= names


def test_stage_commands_have_key_flags() -> None:
    """The check above sees the flags (a renamed table would otherwise make it vacuous)."""
    seen = {(path, option.name) for path, _, option in key_flags()}
    assert {("train", "holdout_every"), ("refine", "strength"), ("comp", "outputs"), ("solve", "matcher"),
            ("render", "workers"), ("init", "frames")} <= seen
