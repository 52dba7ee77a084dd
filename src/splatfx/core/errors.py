"""Errors that reach the user as one clear line.

Every problem with input data is raised as :class:`InputError`, which names the
file (or setting) and what is wrong with it. The CLI prints ``str(error)`` and
exits non-zero; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class SplatfxError(Exception):
    """Base class for every error splatfx reports to the user."""


class InputError(SplatfxError):
    """A file, folder or setting given to splatfx is missing or malformed."""

    def __init__(self, source: str | os.PathLike[str], problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


class OutputError(InputError):
    """An output could not be written (disk full, read-only folder, no permission)."""


class ConfigError(InputError):
    """A setting in ``shot.toml`` or on the command line is invalid (source names the key)."""


def require_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise InputError if it is not an existing file."""
    p = Path(path)
    mode = _mode(p, what)
    if mode is None:
        raise InputError(p, f"{what} does not exist")
    if not stat.S_ISREG(mode):
        raise InputError(p, f"{what} is not a regular file")
    return p


def require_dir(path: str | os.PathLike[str], what: str = "folder") -> Path:
    """Return ``path`` as a Path, or raise InputError if it is not an existing folder."""
    p = Path(path)
    mode = _mode(p, what)
    if mode is None:
        raise InputError(p, f"{what} does not exist")
    if not stat.S_ISDIR(mode):
        raise InputError(p, f"{what} is not a folder")
    return p


def _mode(p: Path, what: str) -> int | None:
    """``st_mode`` of ``p`` (links followed), None if it does not exist; InputError if it cannot be looked up.

    ``Path.exists()`` raises for errors other than "not found" (a name too long, no permission).
    """
    try:
        return p.stat().st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL byte in the name
        return None
    except OSError as exc:
        raise InputError(p, f"{what} cannot be looked up ({exc.strerror or exc})") from None
