"""The ``Gaussians`` core type: a 3D Gaussian Splatting scene in memory.

Parameters are stored the way they are optimised (and the way the INRIA PLY stores
them): log-scales, opacity logits, unnormalised-allowed wxyz quaternions, and SH
coefficients with the DC term first. Construction validates shapes and finiteness so
that a broken scene fails where it enters, with a message that says what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import torch

from splatfx.core.errors import InputError
from splatfx.core.rotation import quat_multiply, rotmat_to_quat
from splatfx.core.sh import rotate_sh, sh_degree_from_coeffs

Index = int | slice | torch.Tensor | np.ndarray | list[int]


@dataclass
class Gaussians:
    """N Gaussians: ``means`` (N,3), ``quats`` (N,4) wxyz, ``log_scales`` (N,3),
    ``opacity_logits`` (N,), ``sh`` (N,K,3) with K=(d+1)² for degree d in 0..3, and
    ``extras``: named per-Gaussian channels (N,) or (N,C), e.g. ids or masks, or unknown
    PLY properties kept for writing back. All float32 torch tensors on one device.

    ``source`` names where the data came from (a file path) for error messages.
    """

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    opacity_logits: torch.Tensor
    sh: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    source: str = "gaussians"

    def __post_init__(self) -> None:
        self.means = _as_float(self.means)
        self.quats = _as_float(self.quats)
        self.log_scales = _as_float(self.log_scales)
        self.opacity_logits = _as_float(self.opacity_logits)
        self.sh = _as_float(self.sh)
        self.extras = {name: _as_float(value) for name, value in self.extras.items()}
        self.validate()

    # --- validation -------------------------------------------------------------------
    def validate(self) -> None:
        """Raise InputError naming ``source`` if shapes disagree or values are not finite."""
        n = self.means.shape[0] if self.means.ndim == 2 else -1
        expected = {
            "means": (self.means, (n, 3)),
            "quats": (self.quats, (n, 4)),
            "log_scales": (self.log_scales, (n, 3)),
            "opacity_logits": (self.opacity_logits, (n,)),
        }
        for name, (value, shape) in expected.items():
            if tuple(value.shape) != shape:
                raise InputError(self.source, f"{name} has shape {tuple(value.shape)}, expected {shape}")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise InputError(self.source, f"sh has shape {tuple(self.sh.shape)}, expected ({n}, K, 3)")
        try:
            sh_degree_from_coeffs(self.sh.shape[1])
        except ValueError as exc:
            raise InputError(self.source, str(exc)) from None
        for name, value in self.extras.items():
            if value.ndim not in (1, 2) or value.shape[0] != n:
                raise InputError(self.source, f"extra channel {name!r} has shape {tuple(value.shape)}, expected ({n},) or ({n}, C)")
        for name, value in self._named_tensors():
            if value.numel() == 0 or bool(torch.isfinite(value.sum())):
                continue  # a finite sum means every value is finite (fast path for big scenes)
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise InputError(self.source, f"{name} has {bad} non-finite values (NaN or Inf)")
        zero = (self.quats == 0).all(dim=1) if n else None
        if zero is not None and bool(zero.any()):
            count = int(zero.sum())
            raise InputError(self.source, f"quats has {count} zero-length quaternions")

    def _named_tensors(self) -> Iterable[tuple[str, torch.Tensor]]:
        yield "means", self.means
        yield "quats", self.quats
        yield "log_scales", self.log_scales
        yield "opacity_logits", self.opacity_logits
        yield "sh", self.sh
        for name, value in self.extras.items():
            yield f"extra channel {name!r}", value

    # --- derived values ---------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return sh_degree_from_coeffs(self.sh.shape[1])

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def scales(self) -> torch.Tensor:
        """Standard deviations along the local axes (N,3)."""
        return self.log_scales.exp()

    @property
    def opacities(self) -> torch.Tensor:
        """Opacities in [0,1] (N,)."""
        return torch.sigmoid(self.opacity_logits)

    @property
    def unit_quats(self) -> torch.Tensor:
        return self.quats / self.quats.norm(dim=1, keepdim=True)

    # --- construction -----------------------------------------------------------------
    @classmethod
    def empty(cls, sh_degree: int = 0) -> "Gaussians":
        k = (sh_degree + 1) ** 2
        z = torch.zeros
        return cls(z(0, 3), z(0, 4), z(0, 3), z(0), z(0, k, 3))

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], extras: Mapping[str, np.ndarray] | None = None, source: str = "gaussians") -> "Gaussians":
        """Build from numpy arrays named like the fields (``means``, ``quats`` …)."""
        tensors = {k: torch.from_numpy(np.ascontiguousarray(arrays[k], dtype=np.float32)) for k in ("means", "quats", "log_scales", "opacity_logits", "sh")}
        extra_tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in (extras or {}).items()}
        return cls(**tensors, extras=extra_tensors, source=source)

    def replace(self, **changes: object) -> "Gaussians":
        """A copy with some fields replaced (validated again)."""
        fields = dict(
            means=self.means, quats=self.quats, log_scales=self.log_scales, opacity_logits=self.opacity_logits,
            sh=self.sh, extras=dict(self.extras), source=self.source,
        )
        fields.update(changes)
        return Gaussians(**fields)  # type: ignore[arg-type]

    # --- selection and combination -----------------------------------------------------
    def __getitem__(self, index: Index) -> "Gaussians":
        """The Gaussians selected by an int, slice, index array or boolean mask."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        if isinstance(index, (np.ndarray, list)):
            index = torch.as_tensor(np.asarray(index))
        if isinstance(index, torch.Tensor):
            index = index.to(self.device)
        return Gaussians(
            self.means[index], self.quats[index], self.log_scales[index], self.opacity_logits[index], self.sh[index],
            {k: v[index] for k, v in self.extras.items()}, source=self.source,
        )

    @staticmethod
    def cat(parts: list["Gaussians"]) -> "Gaussians":
        """Concatenate scenes; SH degrees are raised to the highest (zeros) and extras must match."""
        if not parts:
            raise ValueError("cannot concatenate an empty list of Gaussians")
        k = max(p.sh.shape[1] for p in parts)
        names = list(parts[0].extras)
        for p in parts[1:]:
            if list(p.extras) != names:
                raise ValueError(f"extra channels differ: {names} vs {list(p.extras)}")
        sh = [torch.nn.functional.pad(p.sh, (0, 0, 0, k - p.sh.shape[1])) for p in parts]
        return Gaussians(
            torch.cat([p.means for p in parts]), torch.cat([p.quats for p in parts]),
            torch.cat([p.log_scales for p in parts]), torch.cat([p.opacity_logits for p in parts]), torch.cat(sh),
            {n: torch.cat([p.extras[n] for p in parts]) for n in names}, source=parts[0].source,
        )

    def to(self, device: torch.device | str) -> "Gaussians":
        return Gaussians(
            self.means.to(device), self.quats.to(device), self.log_scales.to(device), self.opacity_logits.to(device),
            self.sh.to(device), {k: v.to(device) for k, v in self.extras.items()}, source=self.source,
        )

    def detach(self) -> "Gaussians":
        return Gaussians(
            self.means.detach(), self.quats.detach(), self.log_scales.detach(), self.opacity_logits.detach(),
            self.sh.detach(), {k: v.detach() for k, v in self.extras.items()}, source=self.source,
        )

    # --- transforms ---------------------------------------------------------------------
    def transform(self, rotation: np.ndarray, translation: np.ndarray | None = None, scale: float = 1.0) -> "Gaussians":
        """Apply ``x' = scale · R x + t`` to the whole scene.

        Means are moved, orientations composed with ``R``, log-scales shifted by
        ``log(scale)``, and SH coefficients of degree ≥ 1 rotated so that view-dependent
        colour turns with the object.
        """
        rot = np.asarray(rotation, dtype=np.float64)
        if rot.shape != (3, 3) or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-5) or np.linalg.det(rot) <= 0:
            raise ValueError("rotation must be a proper 3×3 rotation matrix")
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        t = np.zeros(3) if translation is None else np.asarray(translation, dtype=np.float64).reshape(3)
        r32 = torch.from_numpy(rot).to(self.means)
        q = torch.from_numpy(rotmat_to_quat(rot)).to(self.quats)
        return self.replace(
            means=scale * self.means @ r32.T + torch.from_numpy(t).to(self.means),
            quats=quat_multiply(q.expand_as(self.quats), self.quats),
            log_scales=self.log_scales + float(np.log(scale)),
            sh=rotate_sh(self.sh, rot) if self.sh_degree > 0 else self.sh,
        )


def _as_float(value: object) -> torch.Tensor:
    """A float32 torch tensor view of ``value`` (numpy arrays are converted)."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    return value if value.dtype == torch.float32 else value.float()
