"""Pretrained models named by their Hugging Face hub id (``owner/name``, ``owner/name@revision``).

A hub id is resolved to a snapshot folder in the local Hugging Face cache
(``huggingface_hub.snapshot_download``), which :mod:`splatfx.refine.local_model` then loads like
any local pipeline folder. Only what refinement loads is fetched: ``model_index.json``, the
configurations and safetensors weights of the ``unet``, ``vae``/``vqvae`` and ``text_encoder``,
the tokenizer's files and the scheduler's configuration (and a built-in refiner's
``refiner_config.json``): never pickles (``.bin``, ``.ckpt``), half-precision variants or code.

The cache is looked at first, so a model once fetched needs no network, and an id without a
revision keeps naming the snapshot its cache ref (``refs/main``) points at until that ref is
moved: the model under a shot does not change when the hub's branch moves. The hub is asked
only for a snapshot the cache lacks; without it (no network, ``HF_HUB_OFFLINE=1``) the
answer is an :class:`~splatfx.core.errors.InputError` naming the id and what to do.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePath

from splatfx.core.errors import InputError

#: The weights' file name of each component with weights (whole, or sharded as ``NAME-00001-of-00002``).
_WEIGHTS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
            "vqvae": "diffusion_pytorch_model", "text_encoder": "model"}
COMPONENTS = (*_WEIGHTS, "tokenizer", "scheduler")
#: What refinement loads from a pipeline repository (``huggingface_hub`` ``allow_patterns``).
ALLOW_PATTERNS = (
    "model_index.json", "refiner_config.json",
    *(f"{c}/*.json" for c in COMPONENTS),
    *(f"{c}/{stem}{tail}" for c, stem in _WEIGHTS.items() for tail in (".safetensors", "-*-of-*.safetensors")),
    "tokenizer/*.txt",
)
_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w.][\w./-]*))?")
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HubModel:
    """A model repository on the Hugging Face hub, at a revision (None: the cache's ``main``)."""

    repo_id: str
    revision: str | None = None

    @classmethod
    def parse(cls, text: str) -> HubModel | None:
        """``owner/name`` or ``owner/name@revision`` as a HubModel; None for anything else."""
        match = _ID.fullmatch(text)
        if match is None or "--" in match["repo"] or ".." in match["repo"]:
            return None
        if any(part.endswith((".", "-")) for part in match["repo"].split("/")):
            return None
        return cls(match["repo"], match["revision"])

    def __str__(self) -> str:
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"


def snapshot(model: HubModel) -> Path:
    """The snapshot folder of ``model`` in the local cache, fetched first when the cache lacks it
    (InputError naming the id and what to do when it cannot be had)."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        try:
            return _download(model, local_files_only=True)
        except LocalEntryNotFoundError:  # not cached, or cached incompletely
            return _download(model, local_files_only=False)
    except LocalEntryNotFoundError:
        raise InputError(str(model), _unreachable(model)) from None
    except OSError as exc:  # the hub's answers (not found, gated, no such revision) are OSErrors
        raise InputError(str(model), _refused(model, exc)) from None
    except ValueError as exc:  # huggingface_hub's own checks of the id
        raise InputError(str(model), f"is not a valid Hugging Face hub id: {exc}") from None


def _download(model: HubModel, *, local_files_only: bool) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=model.repo_id, revision=model.revision,
                                  allow_patterns=list(ALLOW_PATTERNS), local_files_only=local_files_only))


def cache_dir() -> str:
    """The Hugging Face hub cache in use (``HF_HUB_CACHE``, by default ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _offline() -> bool:
    from huggingface_hub import constants

    check = getattr(constants, "is_offline_mode", None)
    return bool(check() if check is not None else constants.HF_HUB_OFFLINE)


def _unreachable(model: HubModel) -> str:
    offline = _offline()
    why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
    fetch = "with the network and HF_HUB_OFFLINE unset" if offline else "with the network"
    return (f"no such folder, and not in the local Hugging Face cache (HF_HUB_CACHE={cache_dir()}) while {why}: "
            f"run once {fetch} to fetch it, or give a local model folder")


def _refused(model: HubModel, exc: OSError) -> str:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, RevisionNotFoundError):
        return f"the hub's {model.repo_id} has no revision {model.revision!r}"
    if isinstance(exc, GatedRepoError):
        return "a gated model on the Hugging Face hub: accept its terms on huggingface.co and log in (`hf auth login`)"
    if isinstance(exc, RepositoryNotFoundError):
        return "neither a folder nor a model on the Hugging Face hub (private models need `hf auth login`)"
    return f"cannot be fetched from the Hugging Face hub: {' '.join(str(exc).split())}"


def hub_name(folder: str | os.PathLike[str]) -> str | None:
    """``owner/name@commit`` when ``folder`` is a snapshot in a Hugging Face cache
    (``…/models--owner--name/snapshots/<commit>``), else None."""
    parts = PurePath(folder).parts
    if len(parts) < 3 or parts[-2] != "snapshots" or not _COMMIT.fullmatch(parts[-1]):
        return None
    kind, _, name = parts[-3].partition("--")
    if kind != "models" or "--" not in name:
        return None
    return f"{name.replace('--', '/', 1)}@{parts[-1]}"
