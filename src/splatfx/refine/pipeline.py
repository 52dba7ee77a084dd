"""Loading a refiner from a model folder or a Hugging Face hub id: the built-in per-scene model
(:mod:`splatfx.refine.builtin`) or any diffusers pipeline (:mod:`splatfx.refine.local_model`),
each a :class:`~splatfx.refine.base.Refiner`.

A model reference names a folder when that folder exists; otherwise a reference of the form
``owner/name`` (or ``owner/name@revision``) whose first part is none of a shot's own folders
(``refine/model`` is the built-in refiner's place, trained or not) is a hub id, resolved to a
snapshot in the local Hugging Face cache (:mod:`splatfx.refine.hub`); anything else is a
folder, and its absence an error.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import Any

from splatfx.core.errors import InputError
from splatfx.refine.base import BUILTIN_CONFIG, DIFFUSERS_INDEX, Refiner
from splatfx.refine.hub import HubModel, snapshot
from splatfx.shot.folder import PROXY_DIR, STAGE_DIRS, STATE_DIR

PathLike = str | os.PathLike[str]
#: First parts of a reference that always name a folder (a shot's own folders), never a hub id.
_LOCAL_ONLY = frozenset({*STAGE_DIRS, PROXY_DIR, STATE_DIR, ".", ".."})


def hub_model(reference: PathLike) -> HubModel | None:
    """The hub id ``reference`` is written as (``owner/name[@revision]``, first part not one of a
    shot's folders), else None; whether such a folder exists is the caller's question."""
    text = reference if isinstance(reference, str) else PurePath(reference).as_posix()
    model = HubModel.parse(text)
    return None if model is None or text.split("/")[0] in _LOCAL_ONLY else model


def resolve_model(reference: PathLike, folder: PathLike | None = None) -> Path:
    """The model folder ``reference`` names: ``folder`` (default: ``reference`` as a path) when it
    exists, else the cached snapshot of the hub id it is (fetched when missing), else ``folder``."""
    local = Path(reference if folder is None else folder)
    model = None if local.exists() else hub_model(reference)
    if model is None:
        return local
    found = snapshot(model)
    if not ((found / DIFFUSERS_INDEX).is_file() or (found / BUILTIN_CONFIG).is_file()):
        raise InputError(str(model), f"holds no {DIFFUSERS_INDEX} (a diffusers pipeline with safetensors weights) "
                                     f"in its snapshot {found}")
    return found


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
                             f"nor {BUILTIN_CONFIG} (a splatfx built-in sharpening pass)")


def load_refiner(path: PathLike, *, device: str = "auto", **options: Any) -> Refiner:
    """The refiner stored in ``path`` — a model folder, or a hub id (:func:`resolve_model`): a
    built-in per-scene model or any diffusers image model; ``options`` are
    :class:`~splatfx.refine.local_model.LocalModelSettings` fields (ignored by the built-in
    model, which has no prompt)."""
    folder = resolve_model(path)
    if model_kind(folder) == "builtin":
        from splatfx.refine.builtin import BuiltinRefiner

        return BuiltinRefiner.from_pretrained(folder, device=device)
    from splatfx.refine.local_model import LocalModelRefiner, LocalModelSettings

    return LocalModelRefiner.from_pretrained(folder, LocalModelSettings(device=device, **options))
