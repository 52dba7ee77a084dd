"""Training checkpoints as safetensors: everything needed to resume bit for bit.

One file ``checkpoints/step_XXXXX.safetensors`` holds

- ``param/<name>``: the Gaussian parameters (means, quats, log-scales, opacity logits, SH);
- ``adam/<name>/<key>``: Adam's moments and step counter of each parameter;
- ``strategy/<key>``: the densification strategy's running statistics;
- ``rng/generator``: the state of the training's random generator;

and, as string metadata, the step, the elapsed training time and any JSON-able extras
(the config used). safetensors holds no code, so loading a checkpoint cannot run any.
Files are written to a temporary name and renamed; only the newest ``keep`` are kept.
:func:`gaussians_from_params` turns the parameters back into a scene (early checkpoints
are degraded reconstructions for the refiner's training pairs).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from splatfx.core.atomic import atomic_path
from splatfx.core.errors import InputError
from splatfx.core.gaussians import Gaussians

FORMAT = "splatfx-checkpoint-1"
_NAME = re.compile(r"step_(\d+)\.safetensors$")


@dataclass
class Checkpoint:
    """A training state: parameters, optimiser moments, strategy state, RNG state and step."""

    step: int
    params: dict[str, Tensor]
    moments: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    strategy: dict[str, Tensor] = field(default_factory=dict)
    rng_state: Tensor | None = None
    elapsed_s: float = 0.0
    extra: dict = field(default_factory=dict)


def gaussians_from_params(params: Mapping[str, Tensor]) -> Gaussians:
    """A detached ``Gaussians`` (on the CPU) of the trainable tensors (``Checkpoint.params``'s names)."""
    p = {k: v.detach().cpu() for k, v in params.items()}
    return Gaussians(p["means"], p["quats"], p["scales"], p["opacities"], torch.cat([p["sh0"], p["shN"]], dim=1))


def checkpoint_path(folder: str | os.PathLike[str], step: int) -> Path:
    """``folder/step_XXXXX.safetensors`` (zero-padded so names sort by step)."""
    return Path(folder) / f"step_{step:05d}.safetensors"


def list_checkpoints(folder: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest step in ``folder``, or None."""
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def save_checkpoint(checkpoint: Checkpoint, folder: str | os.PathLike[str], keep: int = 3) -> Path:
    """Write ``checkpoint`` into ``folder`` atomically and delete all but the newest ``keep``."""
    tensors: dict[str, Tensor] = {}
    for name, value in checkpoint.params.items():
        tensors[f"param/{name}"] = value
    for name, moments in checkpoint.moments.items():
        for key, value in moments.items():
            tensors[f"adam/{name}/{key}"] = value
    for key, value in checkpoint.strategy.items():
        tensors[f"strategy/{key}"] = value
    if checkpoint.rng_state is not None:
        tensors["rng/generator"] = checkpoint.rng_state
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    metadata = {
        "format": FORMAT,
        "step": str(checkpoint.step),
        "elapsed_s": repr(float(checkpoint.elapsed_s)),
        "extra": json.dumps(checkpoint.extra),
    }
    path = checkpoint_path(folder, checkpoint.step)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    for _, old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (InputError if it is not one)."""
    path = Path(path)
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the checkpoint: {exc}") from None
    if metadata.get("format") != FORMAT:
        raise InputError(path, f"is not a splatfx checkpoint (format {metadata.get('format')!r}, expected {FORMAT!r})")
    ckpt = Checkpoint(
        step=int(metadata["step"]), params={}, elapsed_s=float(metadata.get("elapsed_s", 0.0)),
        extra=json.loads(metadata.get("extra", "{}")),
    )
    for key, value in tensors.items():
        kind, _, rest = key.partition("/")
        if kind == "param":
            ckpt.params[rest] = value
        elif kind == "adam":
            name, _, moment = rest.rpartition("/")
            ckpt.moments.setdefault(name, {})[moment] = value
        elif kind == "strategy":
            ckpt.strategy[rest] = value
        elif key == "rng/generator":
            ckpt.rng_state = value
    if not ckpt.params:
        raise InputError(path, "checkpoint holds no parameters")
    return ckpt
