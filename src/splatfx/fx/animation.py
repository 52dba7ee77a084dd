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

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from splatfx.fx.particles import ParticleCache
from splatfx.core.errors import InputError
from splatfx.core.gaussians import Gaussians
from splatfx.core.rotation import quat_multiply, quat_to_rotmat, rotmat_to_quat, rotmats_to_quats
from splatfx.core.sh import rotate_sh
from splatfx.io.formats import read_gaussians
from splatfx.io.npz import check_indices, check_shapes, read_npz
from splatfx.shot.folder import Shot
from splatfx.shot.scene_frame import SceneFrame

#: Element ids written per Gaussian (and rendered as the id layer).
ELEMENTS = {"scene": 0, "fragment": 1, "fill": 2, "debris": 3, "dust": 4, "snow": 5}
#: Particles fainter than this are not drawn (render and export alike).
PARTICLE_MIN_OPACITY = 1e-3
#: Static Gaussians fainter than this are the reconstruction's soft shell (haze, floaters, the
#: veil a short training hangs around surfaces), not things: they help draw the plate, but
#: they neither hold out the effect in the render nor stay in front of what the collapse uncovers.
FAINT_OPACITY = 0.5


@dataclass
class FrameGaussians:
    """One frame's Gaussians (solve coordinates), their element id (N,), their motion to
    the next frame (N,3, solve units per frame), their row in the source scene (−1 for
    Gaussians the effect created), the scene rows the effect has taken out of the plate
    by this frame (the pieces that have moved; None without a collapse), and which are
    floaters: static scene rows some plate sees the sky through (None when not known)."""

    gaussians: Gaussians
    element: np.ndarray
    motion: np.ndarray
    source_index: np.ndarray
    removed: np.ndarray | None = None
    floater: np.ndarray | None = None  # (N,) static rows some plate sees the sky through (fx.backdrop)


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
    trim: np.ndarray | None = None  # (M,) hidden once their piece moves (off the solid wall)
    max_log_scale: np.ndarray | None = None  # (M,) log-scale cap (solve units) once their piece moves


@dataclass
class ShotAnimation:
    """The static scene plus any number of effects, evaluated frame by frame."""

    scene: Gaussians
    frame: Similarity
    frames: int
    fps: float
    removed: np.ndarray | None = None  # scene rows replaced by fragments
    fragments: Fragments | None = None
    backdrop: Gaussians | None = None  # what the removed structure hid (fx.backdrop), drawn as static scene
    hidden: np.ndarray | None = None  # scene rows of the structure's haze (fx.backdrop): gone once it moves
    floaters: np.ndarray | None = None  # scene rows some plate sees the sky through (fx.backdrop)
    particles: dict[str, ParticleCache] = field(default_factory=dict)

    def at(self, t: int) -> FrameGaussians:
        """The Gaussians of frame index ``t`` (0-based), with element ids and motion."""
        if not 0 <= t < self.frames:
            raise IndexError(f"frame index {t} outside 0..{self.frames - 1}")
        keep = np.ones(len(self.scene), dtype=bool)
        if self.removed is not None:
            keep[self.removed] = False
        if self.hidden is not None and self.fragments is not None and self.pieces_moved(t).any():
            keep[self.hidden] = False  # the structure's haze goes with it once it moves
        static = self.scene[torch.from_numpy(keep)]
        parts = [static]
        element = [np.full(len(static), ELEMENTS["scene"], np.int8)]
        motion = [np.zeros((len(static), 3))]
        source = [np.nonzero(keep)[0]]
        if self.backdrop is not None:
            parts.append(self.backdrop), motion.append(np.zeros((len(self.backdrop), 3)))
            element.append(np.full(len(self.backdrop), ELEMENTS["scene"], np.int8))
            source.append(np.full(len(self.backdrop), -1))
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
        source = np.concatenate(source)
        floater = None
        if self.floaters is not None:
            scene_floater = np.zeros(len(self.scene), dtype=bool)
            scene_floater[self.floaters] = True
            floater = np.zeros(len(source), dtype=bool)
            floater[:len(static)] = scene_floater[keep]
        return FrameGaussians(Gaussians.cat(parts), np.concatenate(element), np.concatenate(motion).astype(np.float32),
                              source, removed, floater)

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
        if frag.trim is not None:  # a solid piece sheds the haze around its wall once it moves
            visible &= ~(frag.trim & moved)
        element = np.where(moved, frag.element, ELEMENTS["scene"]).astype(np.int8)
        removed = np.unique(frag.source_index[moved & (frag.source_index >= 0)])
        posed = g.replace(means=torch.from_numpy(out_means).float(), quats=quats, sh=sh)
        if frag.max_log_scale is not None and moved.any():
            capped = posed.log_scales.clone()
            rows_moved = torch.from_numpy(moved)
            cap = torch.from_numpy(frag.max_log_scale[moved]).float()[:, None]
            capped[rows_moved] = torch.minimum(capped[rows_moved], cap)
            posed = posed.replace(log_scales=capped)
        rows = torch.from_numpy(visible)
        return posed[rows], (next_means - out_means)[visible], element[visible], frag.source_index[visible], removed

    def pieces_moved(self, t: int) -> np.ndarray:
        """(F,) bool: which pieces have moved (1 cm) or turned away from their rest pose by frame ``t``."""
        cache = self.fragments.cache
        return (np.linalg.norm(cache.positions[t] - cache.positions[0], axis=1) > 0.01) | \
            (np.abs(np.abs((cache.quats[t] * cache.quats[0]).sum(axis=1)) - 1.0) > 1e-5)

    def _particles_at(self, cache: ParticleCache, t: int) -> tuple[Gaussians, np.ndarray]:
        live = cache.alive[t] & (cache.opacities[t] > PARTICLE_MIN_OPACITY)
        n = int(live.sum())
        degree = self.scene.sh_degree
        sh = np.zeros((n, (degree + 1) ** 2, 3), np.float32)
        sh[:, 0] = cache.colors_at(t)[live]
        opacity = np.clip(cache.opacities[t][live], 1e-4, 0.9999)
        log_scales = np.repeat(np.log(cache.sizes[t][live] / self.frame.scale)[:, None], 3, axis=1)
        if cache.axes is not None:  # anisotropic particles (flat flakes, chips)
            log_scales = log_scales + np.log(cache.axes[live])
        quats = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)) if cache.quats is None else \
            rotmats_to_quats(self.frame.rotation.T @ quat_to_rotmat(cache.quats[live].astype(np.float64)))
        g = Gaussians.from_arrays({
            "means": self.frame.to_solve(cache.positions[t][live]),
            "quats": quats,
            "log_scales": log_scales,
            "opacity_logits": np.log(opacity / (1.0 - opacity)),
            "sh": sh,
        }, source="particles")
        if t + 1 < self.frames:  # exact: where the particle is on the next frame
            step = cache.positions[t + 1][live] - cache.positions[t][live]
        else:
            step = cache.velocities[t][live] / self.fps
        return g, self.frame.vector_to_solve(step)

    # --- sub-frame evaluation (motion blur) ----------------------------------------------------------
    def at_time(self, time: float) -> FrameGaussians:
        """The Gaussians at fractional frame index ``time`` (e.g. 11.25: a quarter of the way
        from frame index 11 to 12), for the sub-frame samples of a motion-blurred exposure.

        Between cached frames the fragments' rigid poses are interpolated (slerp of the
        rotation, lerp of the position) and the particles' positions, velocities, sizes and
        opacities lerped; a particle that is born, dies or jumps (snow wrapping around the
        volume) between the two frames moves on from the nearer frame with its velocity
        instead. Before the first or after the last frame the first or last interval is
        extrapolated. Flags (visible, alive) come from the nearer frame. At a whole
        ``time`` this equals :meth:`at` on the poses; the motion returned is the
        sub-frame's own (fragments 0) and is not meant for motion vectors.
        """
        if float(time).is_integer() and 0 <= time < self.frames:
            return self.at(int(time))
        a, u = _interval(time, self.frames)
        near = min(max(int(round(time)), 0), self.frames - 1)
        fragments = self.fragments
        if fragments is not None:  # frame 0 kept as the rest pose that "has the piece moved" measures from
            cache = fragments.cache
            pose = _rigid_between(cache, a, u, self.frames)
            fragments = replace(fragments, cache=replace(
                cache, positions=np.stack([cache.positions[0], pose[0]]), quats=np.stack([cache.quats[0], pose[1]]),
                visible=np.stack([cache.visible[0], cache.visible[near]])))
        particles = {name: _particles_between(cache, a, u, near, self.fps, self.frames)
                     for name, cache in self.particles.items()}
        view = replace(self, frames=2, fragments=fragments, particles=particles)
        return view.at(1)

    def exposure(self, t: int, offsets: Sequence[float], centre: FrameGaussians) -> list[Gaussians] | None:
        """The synthetic Gaussians of ``centre`` (``at(t)``), row for row, at ``t + offset``
        for each of ``offsets``: the pieces that had moved by frame ``t`` at their
        interpolated poses, the particles alive at ``t`` at their interpolated positions,
        sizes and opacities (as :meth:`at_time`), colours and SH as at ``t`` (the light does
        not change within an exposure). One row per synthetic Gaussian of ``centre`` in
        every sample, so each can be followed from sample to sample. None when ``centre``'s
        synthetic rows are not these (then evaluate :meth:`at_time` instead).
        """
        moving = np.asarray(centre.element) != ELEMENTS["scene"]
        g = centre.gaussians[torch.from_numpy(moving)]
        offsets = [0.0, *offsets]  # the centre itself first: checks the rows are centre's
        blocks: list[tuple[np.ndarray, ...]] = []  # per block: (rows, its per-offset means, quats, scales, opacity)
        frag = self.fragments
        if frag is not None:
            cache = frag.cache
            moved = self.pieces_moved(t)[frag.labels]
            shown = cache.visible[t][frag.labels] & ((frag.element != ELEMENTS["fill"]) | moved)
            rows = np.nonzero(shown & moved)[0]
            labels = frag.labels[rows]
            rest = frag.gaussians.means[torch.from_numpy(rows)].double().numpy()
            rest_quats = frag.gaussians.quats[torch.from_numpy(rows)]
            means, quats = [], []
            for offset in offsets:
                a, u = _interval(t + offset, self.frames)
                positions, rotations = _rigid_between(cache, a, u, self.frames)
                rot, shift = self._rigid_poses(positions, rotations)
                means.append(np.einsum("nij,nj->ni", rot[labels], rest) + shift[labels])
                q = torch.from_numpy(rotmats_to_quats(rot)).float()[torch.from_numpy(labels)]
                quats.append(quat_multiply(q, rest_quats))
            blocks.append((means, quats, None, None))
        for cache in self.particles.values():
            live = cache.alive[t] & (cache.opacities[t] > PARTICLE_MIN_OPACITY)
            means, scales, opacities = [], [], []
            for offset in offsets:
                a, u = _interval(t + offset, self.frames)
                near = min(max(int(round(t + offset)), 0), self.frames - 1)
                view = _particles_between(cache, a, u, near, self.fps, self.frames)
                means.append(self.frame.to_solve(view.positions[0][live]))
                log_scales = np.repeat(np.log(np.maximum(view.sizes[0][live], 1e-9) / self.frame.scale)[:, None], 3, 1)
                if cache.axes is not None:
                    log_scales = log_scales + np.log(cache.axes[live])
                scales.append(log_scales)
                opacity = np.clip(view.opacities[0][live], 1e-4, 0.9999)
                opacities.append(np.log(opacity / (1.0 - opacity)))
            blocks.append((means, None, scales, opacities))
        if sum(len(b[0][0]) for b in blocks) != len(g):
            return None
        if len(g) and blocks:
            at_centre = np.concatenate([b[0][0] for b in blocks])
            extent = float(np.ptp(at_centre, axis=0).max()) + 1.0
            if not np.allclose(at_centre, g.means.double().numpy(), rtol=0.0, atol=1e-5 * extent):
                return None
        samples = []
        for k in range(1, len(offsets)):
            means = np.concatenate([b[0][k] for b in blocks]) if blocks else np.zeros((0, 3))
            quats = [b[1][k] if b[1] is not None else g.quats[_block_rows(blocks, i)] for i, b in enumerate(blocks)]
            scales = [torch.from_numpy(b[2][k]).float() if b[2] is not None else g.log_scales[_block_rows(blocks, i)]
                      for i, b in enumerate(blocks)]
            opac = [torch.from_numpy(b[3][k]).float() if b[3] is not None else g.opacity_logits[_block_rows(blocks, i)]
                    for i, b in enumerate(blocks)]
            samples.append(g.replace(means=torch.from_numpy(means).float(), quats=torch.cat(quats) if quats else g.quats,
                                     log_scales=torch.cat(scales) if scales else g.log_scales,
                                     opacity_logits=torch.cat(opac) if opac else g.opacity_logits))
        return samples

    def _rigid_poses(self, positions: np.ndarray, quats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every fragment's solve-space rotation (F,3,3) and translation (F,3) for physics-frame
        poses (:meth:`Similarity.rigid_to_solve`, vectorised)."""
        cache = self.fragments.cache
        s = self.frame
        rot_world = quat_to_rotmat(quats)
        rot = np.einsum("ji,fjk,kl->fil", s.rotation, rot_world, s.rotation)
        moved = np.einsum("fij,fj->fi", rot_world, s.translation - cache.centroids) + positions - s.translation
        return rot, moved @ s.rotation / s.scale


def _block_rows(blocks: list[tuple], index: int) -> slice:
    """The rows of block ``index`` among the synthetic Gaussians (blocks in order)."""
    start = sum(len(b[0][0]) for b in blocks[:index])
    return slice(start, start + len(blocks[index][0][0]))


def _interval(time: float, frames: int) -> tuple[int, float]:
    """The cached interval ``[a, a + 1]`` that ``time`` falls in (the first or last one
    outside the cache, so it is extrapolated) and the position ``u`` in it."""
    a = min(max(int(np.floor(time)), 0), max(frames - 2, 0))
    return a, float(time) - a


def slerp(q0: np.ndarray, q1: np.ndarray, u: float | np.ndarray) -> np.ndarray:
    """Spherical linear interpolation of wxyz quaternions (..., 4) along the shorter arc;
    ``u`` outside [0, 1] extrapolates along the same great circle."""
    q0 = np.asarray(q0, np.float64)
    q1 = np.asarray(q1, np.float64)
    u = np.asarray(u, np.float64)[..., None] if np.ndim(u) else float(u)
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.clip(np.abs(dot), -1.0, 1.0)
    theta = np.arccos(dot)
    sin = np.sin(theta)
    small = sin < 1e-6
    safe = np.where(small, 1.0, sin)
    w0 = np.where(small, 1.0 - u, np.sin((1.0 - u) * theta) / safe)
    w1 = np.where(small, u, np.sin(u * theta) / safe)
    q = w0 * q0 + w1 * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _rigid_between(cache: RigidCache, a: int, u: float, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The fragments' positions (F,3) and rotations (F,4) at ``a + u``."""
    if frames == 1:
        return cache.positions[0], cache.quats[0]
    p0, p1 = cache.positions[a].astype(np.float64), cache.positions[a + 1].astype(np.float64)
    return p0 + u * (p1 - p0), slerp(cache.quats[a], cache.quats[a + 1], u)


#: A particle whose step between two frames is longer than this many times what its
#: velocity covers in a frame (plus :data:`_JUMP_SLACK` metres) jumped (was wrapped around).
_JUMP_FACTOR = 2.0
_JUMP_SLACK = 0.05


def _particles_between(cache: ParticleCache, a: int, u: float, near: int, fps: float,
                       frames: int) -> ParticleCache:
    """A two-frame cache whose frames both hold the particles at ``a + u``."""
    if frames == 1:
        a, b = 0, 0
    else:
        b = a + 1
    p0, p1 = cache.positions[a].astype(np.float64), cache.positions[b].astype(np.float64)
    v0, v1 = cache.velocities[a].astype(np.float64), cache.velocities[b].astype(np.float64)
    step = np.linalg.norm(p1 - p0, axis=1)
    reach = np.maximum(np.linalg.norm(v0, axis=1), np.linalg.norm(v1, axis=1)) / fps
    smooth = cache.alive[a] & cache.alive[b] & (step <= _JUMP_FACTOR * reach + _JUMP_SLACK) & (b != a)
    # otherwise: on from the nearer frame where the particle lives there, with its velocity
    from_b = (abs(u - 1.0) < abs(u)) if b != a else False
    end = np.where(cache.alive[b] & (from_b | ~cache.alive[a]), b, a) if b != a else np.full(cache.count, a)
    rows = np.arange(cache.count)
    moved_on = cache.positions[end, rows].astype(np.float64) + \
        cache.velocities[end, rows].astype(np.float64) * ((a + u - end) / fps)[:, None]
    positions = np.where(smooth[:, None], p0 + u * (p1 - p0), moved_on)
    velocities = v0 + u * (v1 - v0) if b != a else v0
    lerp = (lambda x: x[a] + u * (x[b] - x[a])) if b != a else (lambda x: x[a])
    sizes = np.maximum(lerp(cache.sizes.astype(np.float64)), 0.0)
    opacities = np.clip(lerp(cache.opacities.astype(np.float64)), 0.0, 1.0)
    one = dict(positions=positions, velocities=velocities, alive=cache.alive[near], sizes=sizes, opacities=opacities)
    if cache.colors is not None:  # the light baked into the nearer frame
        one["colors"] = cache.colors[near]
    return replace(cache, **{k: np.stack([v, v]).astype(getattr(cache, k).dtype) for k, v in one.items()})


def _with_degree(g: Gaussians, degree: int) -> Gaussians:
    k = (degree + 1) ** 2
    sh = g.sh[:, :k] if g.sh.shape[1] >= k else torch.nn.functional.pad(g.sh, (0, 0, 0, k - g.sh.shape[1]))
    return g.replace(sh=sh)


# --- loading the shot's animation (the fx stage's caches) -------------------------------------------
def scene_path(shot: Shot) -> Path:
    """``scene/scene.ply``: the trained scene every effect starts from."""
    return shot.scene_ply


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
            parts.append(_stored_gaussians(data, "fill", scene))
            n = len(parts[-1])
            element.append(np.full(n, ELEMENTS["fill"], np.int8))
            source.append(np.full(n, -1))
        animation.removed = selected
        animation.fragments = Fragments(Gaussians.cat(parts), data["labels"], np.concatenate(element),
                                        np.concatenate(source), cache, *_solid_arrays(shot, data, len(selected)))
        if "backdrop.means" in data:
            animation.backdrop = _stored_gaussians(data, "backdrop", scene)
            animation.hidden = _backdrop_rows(shot, data, "hidden", len(scene))
            animation.floaters = _backdrop_rows(shot, data, "floaters", len(scene))
        animation.particles["debris"] = ParticleCache.from_arrays(data, "debris")
        animation.particles["dust"] = ParticleCache.from_arrays(data, "dust")
    if "snow" in effects:
        path = shot.fx_dir / "snow.npz"
        shapes = _particle_shapes("snow")
        data = read_npz(path, shapes, "run `splatfx fx snow` first")
        check_shapes(path, data, {**shapes, **_particle_shapes("snow", optional=True)}, {"T": len(shot.frames)},
                     "rerun `splatfx fx snow --force`")
        animation.particles["snow"] = ParticleCache.from_arrays(data, "snow")
    return animation


def _backdrop_rows(shot: Shot, data: dict[str, np.ndarray], name: str, scene_size: int) -> np.ndarray:
    """The backdrop's ``hidden`` or ``floaters`` rows (indices into the scene; none in caches
    written before them)."""
    key = f"backdrop.{name}"
    if key not in data:
        return np.zeros(0, np.int64)
    return check_indices(shot.fx_dir / "collapse.npz", key, data[key], scene_size,
                         "scene Gaussians", "rerun `splatfx fx collapse --force`", allow_empty=True)


def _stored_gaussians(data: dict[str, np.ndarray], prefix: str, like: Gaussians) -> Gaussians:
    """Gaussians stored with the collapse as ``prefix.*`` arrays (means, quats, log_scales,
    opacity_logits and the SH DC term: the fill, the backdrop card), with ``like``'s SH
    degree and extra channels (zeros)."""
    n = len(data[f"{prefix}.sh_dc"])
    sh = np.zeros((n, like.sh.shape[1], 3), np.float32)
    sh[:, 0] = data[f"{prefix}.sh_dc"]
    fields = {k: data[f"{prefix}.{k}"] for k in ("means", "quats", "log_scales", "opacity_logits")}
    extras = {k: np.zeros((n,) + tuple(v.shape[1:]), np.float32) for k, v in like.extras.items()}
    return Gaussians.from_arrays({**fields, "sh": sh}, extras=extras, source=prefix)


_PARTICLE_ARRAYS = {"positions": ("T", "P", 3), "velocities": ("T", "P", 3), "alive": ("T", "P"),
                    "sizes": ("T", "P"), "opacities": ("T", "P"), "colors_dc": ("P", 3)}
_RIGID_ARRAYS = {"fps": (), "centroids": ("F", 3), "positions": ("T", "F", 3), "quats": ("T", "F", 4),
                 "visible": ("T", "F"), "masses": ("F",), "events": ("E", 7)}
_BACKDROP_ARRAYS = {"means": ("B", 3), "quats": ("B", 4), "log_scales": ("B", 3), "opacity_logits": ("B",),
                    "sh_dc": ("B", 3)}
_FILL_ARRAYS = {"means": ("K", 3), "quats": ("K", 4), "log_scales": ("K", 3), "opacity_logits": ("K",),
                "sh_dc": ("K", 3)}


#: A particle system's optional arrays (baked light, anisotropy), checked when present.
_PARTICLE_OPTIONAL = {"colors": ("T", "P", 3), "axes": ("P", 3), "quats": ("P", 4)}


def _particle_shapes(prefix: str, optional: bool = False) -> dict[str, tuple[int | str, ...]]:
    """The stored arrays of a particle system and their shapes (its own particle count);
    with ``optional``, those a cache may hold besides."""
    table = _PARTICLE_OPTIONAL if optional else _PARTICLE_ARRAYS
    return {f"{prefix}.{name}": tuple(f"P{prefix}" if d == "P" else d for d in shape)
            for name, shape in table.items()}


def _solid_arrays(shot: Shot, data: dict[str, np.ndarray], selected: int) -> tuple[np.ndarray | None,
                                                                                  np.ndarray | None]:
    """The solid pieces' trim flags and log-scale caps over every fragment Gaussian (the fill
    neither trimmed nor capped), from ``collapse.npz`` (None, None in a cache made without them)."""
    if "solid.trim" not in data:
        return None, None
    trim = np.asarray(data["solid.trim"], dtype=bool)
    cap = np.asarray(data.get("solid.max_log_scale", np.zeros(0)), dtype=np.float64)
    if trim.shape != (selected,) or cap.shape != (selected,):
        raise InputError(shot.fx_dir / "collapse.npz", f"has solid.trim and solid.max_log_scale of shapes "
                                                       f"{trim.shape} and {cap.shape} for {selected} selected "
                                                       "Gaussians (rerun `splatfx fx collapse --force`)")
    extra = len(data["labels"]) - selected
    return np.concatenate([trim, np.zeros(extra, dtype=bool)]), np.concatenate([cap, np.full(extra, np.inf)])


def _stored_group_shapes(path: Path, data: dict[str, np.ndarray], prefix: str,
                         arrays: dict[str, tuple[int | str, ...]], again: str) -> dict[str, tuple[int | str, ...]]:
    """The shapes of an optional group of ``prefix.*`` arrays (the fill, the backdrop card):
    none when the collapse stored no ``prefix.means``, all of them when it did (InputError
    naming those missing)."""
    if f"{prefix}.means" not in data:
        return {}
    group = {f"{prefix}.{k}": v for k, v in arrays.items()}
    missing = [k for k in group if k not in data]
    if missing:
        raise InputError(path, f"has no {', '.join(missing)} array ({again})")
    return group


def _read_collapse(shot: Shot, selected: int) -> dict[str, np.ndarray]:
    """``fx/collapse.npz``, checked against the shot's frames and the ``selected`` count:
    every array there with the shape the others imply, and labels naming its fragments."""
    path = shot.fx_dir / "collapse.npz"
    again = "rerun `splatfx fx collapse --force`"
    shapes = {"labels": ("M",), **{f"rigid.{k}": v for k, v in _RIGID_ARRAYS.items()},
              **_particle_shapes("debris"), **_particle_shapes("dust")}
    data = read_npz(path, shapes, "run `splatfx fx collapse` first")
    for prefix, arrays in (("fill", _FILL_ARRAYS), ("backdrop", _BACKDROP_ARRAYS)):
        shapes.update(_stored_group_shapes(path, data, prefix, arrays, again))
    sizes = check_shapes(path, data, {**shapes, **_particle_shapes("debris", optional=True),
                                      **_particle_shapes("dust", optional=True)}, {"T": len(shot.frames)}, again)
    if sizes["M"] != selected + sizes.get("K", 0):
        raise InputError(path, f"has {sizes['M']} labels for {selected} selected and {sizes.get('K', 0)} fill "
                               f"Gaussians ({again})")
    check_indices(path, "labels", data["labels"], sizes["F"], "fragments", again, allow_empty=True)
    return data
