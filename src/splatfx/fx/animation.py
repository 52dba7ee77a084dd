"""The animated scene: per frame, the Gaussians to draw, what each one is, and its exact
motion to the next frame.

Effects are simulated in the physics frame (world: z-up metres); the reconstruction lives
in solve coordinates. ``world = s·R·x + t`` (:class:`splatfx.shot.scene_frame.SceneFrame`) links
them, and every pose and particle is mapped back to solve coordinates here, so renders
use the plates' cameras unchanged.

This is the contract between the fx stage and its readers (render, refine, comp, the
viewer): the caches' data (:class:`RigidCache`, :class:`~splatfx.fx.particles.ParticleCache`)
and :func:`load_animation`, which reads them from ``fx/``. It is plain data and maths: only
the collapse simulation (:mod:`splatfx.fx.rigid`) needs the physics engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from splatfx.fx.particles import ParticleCache
from splatfx.core.errors import InputError
from splatfx.core.gaussians import Gaussians
from splatfx.core.rotation import quat_multiply, quat_to_rotmat, rotmat_to_quat
from splatfx.core.sh import rotate_sh
from splatfx.io.formats import read_gaussians
from splatfx.io.npz import check_indices, check_shapes, read_npz
from splatfx.shot.folder import Shot
from splatfx.shot.scene_frame import SceneFrame

#: Element ids written per Gaussian (and rendered as the id layer).
ELEMENTS = {"scene": 0, "fragment": 1, "fill": 2, "debris": 3, "dust": 4, "snow": 5}


@dataclass
class FrameGaussians:
    """One frame's Gaussians (solve coordinates), their element id (N,), their motion to
    the next frame (N,3, solve units per frame), their row in the source scene (−1 for
    Gaussians the effect created), and the scene rows the effect has taken out of the plate
    by this frame (the pieces that have moved; None without a collapse)."""

    gaussians: Gaussians
    element: np.ndarray
    motion: np.ndarray
    source_index: np.ndarray
    removed: np.ndarray | None = None


@dataclass
class Similarity:
    """``world = scale · rotation · x + translation`` and its inverse on points, rotations, vectors."""

    scale: float = 1.0
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def to_world(self, x: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(x, dtype=np.float64) @ self.rotation.T + self.translation

    def to_solve(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.translation) @ self.rotation / self.scale

    def vector_to_solve(self, v: np.ndarray) -> np.ndarray:
        return np.asarray(v, dtype=np.float64) @ self.rotation / self.scale

    def rigid_to_solve(self, rot_world: np.ndarray, centre: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The solve-space rotation and translation of the world motion ``p ↦ R(p − c) + x``."""
        rot = self.rotation.T @ rot_world @ self.rotation
        shift = self.rotation.T @ (rot_world @ (self.translation - centre) + position - self.translation) / self.scale
        return rot, shift


@dataclass
class RigidCache:
    """Per-frame rigid poses of every fragment, in the physics frame.

    A fragment point ``p`` (physics frame, rest pose) is at
    ``rotation(quats[t, f]) @ (p - centroids[f]) + positions[t, f]`` on frame ``t``.
    ``visible[t, f]`` is False once a fragment has crumbled away. ``events`` lists breaks
    and ground impacts: dicts with frame, kind, position, speed (for debris and dust).
    """

    fps: float
    centroids: np.ndarray  # (F, 3)
    positions: np.ndarray  # (T, F, 3)
    quats: np.ndarray  # (T, F, 4) wxyz
    visible: np.ndarray  # (T, F) bool
    masses: np.ndarray  # (F,)
    events: list[dict] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return self.positions.shape[0]

    def arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for storage (no pickles); events as a structured float table."""
        table = np.array([[e["frame"], _EVENT_KINDS.index(e["kind"]), *e["position"], e["speed"], e.get("fragment", -1)]
                          for e in self.events], dtype=np.float64).reshape(-1, 7)
        return {"fps": np.array(self.fps), "centroids": self.centroids, "positions": self.positions,
                "quats": self.quats, "visible": self.visible, "masses": self.masses, "events": table}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "RigidCache":
        events = [{"frame": int(row[0]), "kind": _EVENT_KINDS[int(row[1])], "position": row[2:5].tolist(),
                   "speed": float(row[5]), "fragment": int(row[6])} for row in arrays["events"]]
        return cls(float(arrays["fps"]), arrays["centroids"], arrays["positions"], arrays["quats"],
                   arrays["visible"].astype(bool), arrays["masses"], events)


_EVENT_KINDS = ["break", "impact", "crumble"]


@dataclass
class Fragments:
    """Selected Gaussians grouped into rigid fragments (the fill Gaussians included)."""

    gaussians: Gaussians  # solve coordinates, selected + fill
    labels: np.ndarray  # (M,) fragment per Gaussian
    element: np.ndarray  # (M,) ELEMENTS["fragment"] or ELEMENTS["fill"]
    source_index: np.ndarray  # (M,) row in the scene or −1
    cache: RigidCache


@dataclass
class ShotAnimation:
    """The static scene plus any number of effects, evaluated frame by frame."""

    scene: Gaussians
    frame: Similarity
    frames: int
    fps: float
    removed: np.ndarray | None = None  # scene rows replaced by fragments
    fragments: Fragments | None = None
    particles: dict[str, ParticleCache] = field(default_factory=dict)

    def at(self, t: int) -> FrameGaussians:
        """The Gaussians of frame index ``t`` (0-based), with element ids and motion."""
        if not 0 <= t < self.frames:
            raise IndexError(f"frame index {t} outside 0..{self.frames - 1}")
        keep = np.ones(len(self.scene), dtype=bool)
        if self.removed is not None:
            keep[self.removed] = False
        static = self.scene[torch.from_numpy(keep)]
        parts = [static]
        element = [np.full(len(static), ELEMENTS["scene"], np.int8)]
        motion = [np.zeros((len(static), 3))]
        source = [np.nonzero(keep)[0]]
        removed = None
        if self.fragments is not None:
            g, m, e, s, removed = self._fragments_at(t)
            parts.append(g), motion.append(m), element.append(e), source.append(s)
        for name, cache in self.particles.items():
            g, m = self._particles_at(cache, t)
            parts.append(g), motion.append(m)
            element.append(np.full(len(g), ELEMENTS[name], np.int8))
            source.append(np.full(len(g), -1))
        degree = self.scene.sh_degree
        parts = [p if p.sh_degree == degree else _with_degree(p, degree) for p in parts]
        return FrameGaussians(Gaussians.cat(parts), np.concatenate(element), np.concatenate(motion).astype(np.float32),
                              np.concatenate(source), removed)

    def _fragment_pose(self, t: int, f: int) -> tuple[np.ndarray, np.ndarray]:
        cache = self.fragments.cache
        return self.frame.rigid_to_solve(quat_to_rotmat(cache.quats[t, f]), cache.centroids[f], cache.positions[t, f])

    def _fragments_at(self, t: int) -> tuple[Gaussians, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The fragments' Gaussians at frame ``t``, their motion, element and source row, and
        the scene rows of the pieces that have moved. A piece still at rest is the plate's
        own structure: its Gaussians are drawn as ``scene`` (not synthetic), so the comp keeps
        the plate there until the piece breaks loose."""
        frag = self.fragments
        cache = frag.cache
        g = frag.gaussians
        means = g.means.double().numpy()
        out_means = np.empty_like(means)
        next_means = np.empty_like(means)
        quats = g.quats.clone()
        sh = g.sh.clone()
        for f in range(cache.centroids.shape[0]):
            rows = np.nonzero(frag.labels == f)[0]
            if not len(rows):
                continue
            rot, shift = self._fragment_pose(t, f)
            out_means[rows] = means[rows] @ rot.T + shift
            rot_next, shift_next = self._fragment_pose(min(t + 1, self.frames - 1), f)
            next_means[rows] = means[rows] @ rot_next.T + shift_next
            index = torch.from_numpy(rows)
            q = torch.from_numpy(rotmat_to_quat(rot)).float()
            quats[index] = quat_multiply(q.expand(len(rows), 4), g.quats[index])
            if g.sh_degree > 0:
                sh[index] = rotate_sh(g.sh[index], rot)
        # fracture-face fill shows only once its piece has broken loose (moved or turned), so
        # it never shines through the intact structure's translucent surfaces
        moved = self.pieces_moved(t)[frag.labels]
        visible = cache.visible[t][frag.labels] & ((frag.element != ELEMENTS["fill"]) | moved)
        element = np.where(moved, frag.element, ELEMENTS["scene"]).astype(np.int8)
        removed = np.unique(frag.source_index[moved & (frag.source_index >= 0)])
        posed = g.replace(means=torch.from_numpy(out_means).float(), quats=quats, sh=sh)
        rows = torch.from_numpy(visible)
        return posed[rows], (next_means - out_means)[visible], element[visible], frag.source_index[visible], removed

    def pieces_moved(self, t: int) -> np.ndarray:
        """(F,) bool: which pieces have moved (1 cm) or turned away from their rest pose by frame ``t``."""
        cache = self.fragments.cache
        return (np.linalg.norm(cache.positions[t] - cache.positions[0], axis=1) > 0.01) | \
            (np.abs(np.abs((cache.quats[t] * cache.quats[0]).sum(axis=1)) - 1.0) > 1e-5)

    def _particles_at(self, cache: ParticleCache, t: int) -> tuple[Gaussians, np.ndarray]:
        live = cache.alive[t] & (cache.opacities[t] > 1e-3)
        n = int(live.sum())
        degree = self.scene.sh_degree
        sh = np.zeros((n, (degree + 1) ** 2, 3), np.float32)
        sh[:, 0] = cache.colors_dc[live]
        opacity = np.clip(cache.opacities[t][live], 1e-4, 0.9999)
        g = Gaussians.from_arrays({
            "means": self.frame.to_solve(cache.positions[t][live]),
            "quats": np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)),
            "log_scales": np.repeat(np.log(cache.sizes[t][live] / self.frame.scale)[:, None], 3, axis=1),
            "opacity_logits": np.log(opacity / (1.0 - opacity)),
            "sh": sh,
        }, source="particles")
        if t + 1 < self.frames:  # exact: where the particle is on the next frame
            step = cache.positions[t + 1][live] - cache.positions[t][live]
        else:
            step = cache.velocities[t][live] / self.fps
        return g, self.frame.vector_to_solve(step)


def _with_degree(g: Gaussians, degree: int) -> Gaussians:
    k = (degree + 1) ** 2
    sh = g.sh[:, :k] if g.sh.shape[1] >= k else torch.nn.functional.pad(g.sh, (0, 0, 0, k - g.sh.shape[1]))
    return g.replace(sh=sh)


# --- loading the shot's animation (the fx stage's caches) -------------------------------------------
def scene_path(shot: Shot) -> Path:
    """``scene/scene.ply``: the trained scene every effect starts from."""
    return shot.scene_dir / "scene.ply"


def load_scene(shot: Shot) -> Gaussians:
    """The trained scene (solve coordinates); InputError naming the file when it is missing."""
    path = scene_path(shot)
    if not path.is_file():
        raise InputError(path, "scene.ply does not exist (run `splatfx train` first)")
    return read_gaussians(path)


def load_frame(shot: Shot) -> Similarity:
    """The solve-to-world similarity of ``solve/scene.json``."""
    frame = SceneFrame.load(shot.scene_json)
    return Similarity(frame.scale, frame.rotation, frame.translation)


def load_selection(shot: Shot, scene_count: int | None = None) -> np.ndarray:
    """The scene rows the effects act on (``fx/selection.npz``, written by ``fx select``),
    checked to be distinct rows of a scene of ``scene_count`` Gaussians (when given)."""
    path = shot.fx_dir / "selection.npz"
    indices = read_npz(path, ["indices"], "run `splatfx fx select` first")["indices"]
    return check_indices(path, "indices", indices, scene_count, "scene Gaussians", "run `splatfx fx select` again",
                         unique=True)


def load_animation(shot: Shot, scene: Gaussians | None = None) -> ShotAnimation:
    """The shot's animated scene from ``scene.ply`` and whichever fx caches exist for the
    effects listed in ``[fx] effects`` (the static scene when there are none)."""
    scene = load_scene(shot) if scene is None else scene
    effects = shot.config.fx.effects
    frame = load_frame(shot) if effects else Similarity()
    animation = ShotAnimation(scene, frame, len(shot.frames), shot.config.shot.fps)
    if "collapse" in effects:
        selected = load_selection(shot, len(scene))
        data = _read_collapse(shot, len(selected))
        cache = RigidCache.from_arrays({k[len("rigid."):]: v for k, v in data.items() if k.startswith("rigid.")})
        parts, element, source = [scene[selected]], [np.full(len(selected), ELEMENTS["fragment"], np.int8)], [selected]
        if "fill.means" in data:
            n = len(data["fill.means"])
            sh = np.zeros((n, scene.sh.shape[1], 3), np.float32)
            sh[:, 0] = data["fill.sh_dc"]
            parts.append(Gaussians.from_arrays({"means": data["fill.means"], "quats": data["fill.quats"],
                                                "log_scales": data["fill.log_scales"],
                                                "opacity_logits": data["fill.opacity_logits"], "sh": sh},
                                               extras={k: np.zeros((n,) + v.shape[1:], np.float32)
                                                       for k, v in scene.extras.items()}, source="fill"))
            element.append(np.full(n, ELEMENTS["fill"], np.int8))
            source.append(np.full(n, -1))
        animation.removed = selected
        animation.fragments = Fragments(Gaussians.cat(parts), data["labels"], np.concatenate(element),
                                        np.concatenate(source), cache)
        animation.particles["debris"] = ParticleCache.from_arrays(data, "debris")
        animation.particles["dust"] = ParticleCache.from_arrays(data, "dust")
    if "snow" in effects:
        path = shot.fx_dir / "snow.npz"
        shapes = _particle_shapes("snow")
        data = read_npz(path, shapes, "run `splatfx fx snow` first")
        check_shapes(path, data, shapes, {"T": len(shot.frames)}, "rerun `splatfx fx snow --force`")
        animation.particles["snow"] = ParticleCache.from_arrays(data, "snow")
    return animation


_PARTICLE_ARRAYS = {"positions": ("T", "P", 3), "velocities": ("T", "P", 3), "alive": ("T", "P"),
                    "sizes": ("T", "P"), "opacities": ("T", "P"), "colors_dc": ("P", 3)}
_RIGID_ARRAYS = {"fps": (), "centroids": ("F", 3), "positions": ("T", "F", 3), "quats": ("T", "F", 4),
                 "visible": ("T", "F"), "masses": ("F",), "events": ("E", 7)}
_FILL_ARRAYS = {"means": ("K", 3), "quats": ("K", 4), "log_scales": ("K", 3), "opacity_logits": ("K",),
                "sh_dc": ("K", 3)}


def _particle_shapes(prefix: str) -> dict[str, tuple[int | str, ...]]:
    """The stored arrays of a particle system and their shapes (its own particle count)."""
    return {f"{prefix}.{name}": tuple(f"P{prefix}" if d == "P" else d for d in shape)
            for name, shape in _PARTICLE_ARRAYS.items()}


def _read_collapse(shot: Shot, selected: int) -> dict[str, np.ndarray]:
    """``fx/collapse.npz``, checked against the shot's frames and the ``selected`` count:
    every array there with the shape the others imply, and labels naming its fragments."""
    path = shot.fx_dir / "collapse.npz"
    again = "rerun `splatfx fx collapse --force`"
    shapes = {"labels": ("M",), **{f"rigid.{k}": v for k, v in _RIGID_ARRAYS.items()},
              **_particle_shapes("debris"), **_particle_shapes("dust")}
    data = read_npz(path, shapes, "run `splatfx fx collapse` first")
    fill = {f"fill.{k}": v for k, v in _FILL_ARRAYS.items()}
    if "fill.means" in data:
        missing = [k for k in fill if k not in data]
        if missing:
            raise InputError(path, f"has no {', '.join(missing)} array ({again})")
        shapes.update(fill)
    sizes = check_shapes(path, data, shapes, {"T": len(shot.frames)}, again)
    if sizes["M"] != selected + sizes.get("K", 0):
        raise InputError(path, f"has {sizes['M']} labels for {selected} selected and {sizes.get('K', 0)} fill "
                               f"Gaussians ({again})")
    check_indices(path, "labels", data["labels"], sizes["F"], "fragments", again, allow_empty=True)
    return data
