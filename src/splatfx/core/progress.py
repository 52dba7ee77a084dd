"""Progress bars for long work (rate and time left), quiet when not on a terminal."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator, TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def make_progress(transient: bool = False) -> Progress:
    """A rich Progress with description, bar, count, rate-derived percent, elapsed and ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=transient,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` while showing a progress bar with rate and time left."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with make_progress() as progress:
        task = progress.add_task(description, total=total, rate="")
        _ACTIVE.append(progress)
        try:
            for item in items:
                yield item
                progress.advance(task)
                speed = progress.tasks[0].speed
                if speed:
                    progress.update(task, rate=f"{speed:.2f}/s")
        finally:
            _ACTIVE.remove(progress)


#: The bars :func:`track` is showing, innermost last (a :func:`subtask` joins the last).
_ACTIVE: list[Progress] = []


@contextlib.contextmanager
def subtask(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A second bar, with time left, under the bar :func:`track` is showing, for work inside
    one of its items (a batch of frames, a frame's tiles); yields ``advance(n)``. Nothing is
    shown when no bar is (a worker process, or progress switched off)."""
    if not _ACTIVE:
        yield lambda n=1: None
        return
    progress = _ACTIVE[-1]
    task = progress.add_task(f"  {description}", total=total, rate="")
    try:
        yield lambda n=1: progress.advance(task, n)
    finally:
        progress.remove_task(task)


@contextlib.contextmanager
def progress_callback(description: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A bar for work that reports its own progress: yields ``update(done, total)``."""
    with make_progress() as progress:
        task = progress.add_task(description, total=total, rate="")

        def update(done: int, new_total: int = total) -> None:
            progress.update(task, completed=done, total=new_total)
            speed = progress.tasks[0].speed
            if speed:
                progress.update(task, rate=f"{speed:.2f}/s")

        yield update
