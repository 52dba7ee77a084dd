"""Loading a refiner from a model folder: the built-in per-scene model
(:mod:`splatfx.refine.builtin`) or any local diffusers pipeline (:mod:`splatfx.refine.local_model`),
each a :class:`~splatfx.refine.base.Refiner`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from splatfx.core.errors import InputError
from splatfx.refine.base import BUILTIN_CONFIG, DIFFUSERS_INDEX, Refiner

PathLike = str | os.PathLike[str]


def model_kind(path: PathLike) -> str:
    """``"builtin"`` or ``"diffusers"``: what the model folder ``path`` holds (InputError if neither)."""
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(folder, "refine model folder does not exist")
    if (folder / BUILTIN_CONFIG).is_file():
        return "builtin"
    if (folder / DIFFUSERS_INDEX).is_file():
        return "diffusers"
    raise InputError(folder, f"is not a model folder: it has neither {DIFFUSERS_INDEX} (a diffusers pipeline) "
                             f"nor {BUILTIN_CONFIG} (a splatfx built-in refiner)")


def load_refiner(path: PathLike, *, device: str = "auto", **options: Any) -> Refiner:
    """The refiner stored in ``path``: a built-in per-scene model or any local diffusers
    image model; ``options`` are :class:`~splatfx.refine.local_model.LocalModelSettings`
    fields (ignored by the built-in model, which has no prompt)."""
    if model_kind(path) == "builtin":
        from splatfx.refine.builtin import BuiltinRefiner

        return BuiltinRefiner.from_pretrained(path, device=device)
    from splatfx.refine.local_model import LocalModelRefiner, LocalModelSettings

    return LocalModelRefiner.from_pretrained(path, LocalModelSettings(device=device, **options))
