"""Command-line flags made from a shot.toml table: one flag per key, named, typed and
explained by the key's declaration in :mod:`splatfx.shot.config` (``max_steps`` →
``--max-steps``, its range as the flag's range, its meaning as the help)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Collection
from typing import Any, Literal, TypeVar

import click

from splatfx.shot.config import table_name

F = TypeVar("F", bound=Callable)


def flag_name(key: str) -> str:
    """The flag of a shot.toml key: ``max_steps`` → ``--max-steps``."""
    return "--" + key.replace("_", "-")


def section_options(section: type, *, exclude: Collection[str] = (),
                    only: Collection[str] | None = None) -> Callable[[F], F]:
    """A decorator adding a flag for every key of table ``section`` (or those in ``only``)
    but ``exclude``; the command receives each as a keyword argument of the key's name,
    None when not given (so ``override(section, source, **those)`` applies only the flags given)."""
    hints = typing.get_type_hints(section)
    table = table_name(section)
    keys = [f for f in dataclasses.fields(section) if f.name not in exclude and not f.metadata.get("table")
            and (only is None or f.name in only)]

    def decorate(command: F) -> F:
        for f in reversed(keys):
            command = _option(f, hints[f.name], table)(command)
        return command

    return decorate


def key_type(section: type, key: str) -> click.ParamType:
    """The click type of key ``key`` of table ``section``, for a flag written by hand."""
    declared = {f.name: f for f in dataclasses.fields(section)}[key]
    return click_type(typing.get_type_hints(section)[key], declared.metadata)


def _option(f: dataclasses.Field, tp: Any, table: str) -> Callable[[F], F]:
    """The click option of one setting: a ``--x/--no-x`` switch for a bool, else a typed value."""
    meta = f.metadata
    doc = meta["doc"]
    if not doc.split(" ", 1)[0].endswith(":"):  # "exr: final frames; ..." names a choice: keep its case
        doc = doc[0].upper() + doc[1:]
    help_text = f"{doc} (overrides [{table}] {f.name})."
    flag = flag_name(f.name)
    if _optional_inner(tp) is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, help=help_text)
    return click.option(flag, f.name, type=click_type(tp, meta), default=None, help=help_text)


def click_type(tp: Any, meta: typing.Mapping[str, Any]) -> click.ParamType:
    """The click type of a setting's type and range (``X | None`` as ``X``; a number or a
    choice, ``float | Literal["auto"]``, as :class:`NumberOrChoice`)."""
    arms = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (types.UnionType, typing.Union) and len(arms) > 1:
        choices = [a for a in arms if typing.get_origin(a) is Literal]
        numbers = [a for a in arms if typing.get_origin(a) is not Literal]
        if len(choices) == 1 and len(numbers) == 1:
            return NumberOrChoice(click_type(numbers[0], meta), [str(a) for a in typing.get_args(choices[0])])
    tp = _optional_inner(tp)
    if typing.get_origin(tp) is Literal:
        return click.Choice([str(a) for a in typing.get_args(tp)])
    if tp in (int, float):
        ge, gt, le = meta.get("ge"), meta.get("gt"), meta.get("le")
        low = ge if ge is not None else gt
        ranged = click.IntRange if tp is int else click.FloatRange
        if low is None and le is None:
            return click.INT if tp is int else click.FLOAT
        return ranged(min=low, max=le, min_open=gt is not None)
    if tp is str:
        return click.STRING
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return CommaList(click_type(args[0], meta))
    raise TypeError(f"no flag type for {tp!r}: give this key its own option and exclude it")


def _optional_inner(tp: Any) -> Any:
    """``X`` of ``X | None``; any other type as it is."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


class NumberOrChoice(click.ParamType):
    """A setting that is a number or one of a few words, e.g. ``--downscale auto`` or ``--downscale 4``."""

    name = "number-or-choice"

    def __init__(self, number: click.ParamType, choices: list[str]) -> None:
        self.number = number
        self.choices = choices

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return f"[{'|'.join(self.choices)}|NUMBER]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.strip().lower() in self.choices:
            return value.strip().lower()
        try:
            return self.number.convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"{value!r} is neither a number in range nor one of {', '.join(self.choices)}", param, ctx)


class CommaList(click.ParamType):
    """An array setting as comma-separated items, e.g. ``--outputs exr,png,mp4``."""

    name = "list"

    def __init__(self, item: click.ParamType) -> None:
        self.item = item

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        choices = getattr(self.item, "choices", None)
        return f"[{'|'.join(map(str, choices))}],..." if choices else "A,B,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple:
        if isinstance(value, tuple):
            return value
        return tuple(self.item.convert(v.strip(), param, ctx) for v in str(value).split(",") if v.strip())


def proxy_option(command: F) -> F:
    """Add ``--proxy P`` (overriding ``[shot] proxy`` for one run) to a click command; it
    receives ``proxy`` (None when not given)."""
    from splatfx.shot.config import ShotSection

    return click.option(
        "--proxy", type=key_type(ShotSection, "proxy"), default=None, metavar="P",
        help="Work at this fraction of full size for a quick look, e.g. 0.5 or 0.25; 1: full size "
             "(overrides [shot] proxy). Each size keeps its own frames (proxy/<P>/ beside render/, "
             "refine/, comp/).")(command)


def mean_exposure_option(command: F) -> F:
    """Add ``--mean-exposure`` to a command that renders a trained scene from a capture's cameras;
    it receives ``mean_exposure`` (False: each view at its plate's exposure, from ``exposure.json``)."""
    return click.option(
        "--mean-exposure", is_flag=True,
        help="Render at the scene's mean exposure; by default each view gets its plate's exposure from the "
             "exposure.json training wrote beside the scene (a held-out plate: its neighbours' in the capture).",
    )(command)
