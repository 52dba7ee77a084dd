"""Rigid-body collapse of fragments with MuJoCo.

The scene is simulated in its physics frame (z-up, metres, ground at z = 0). Every
fragment is a free body whose collision shape is the convex hull of its points and whose
mass is hull volume × density. Neighbouring fragments are glued by weld constraints that
break when the force they carry exceeds ``glue_strength`` times the weight of the pair;
the lowest fragments are welded to the ground. A trigger starts the collapse:

- ``demolition``: at frame F the supports (the lowest layer and every piece standing on
  the base) crumble: they lose their welds and collisions and leave the simulation (the
  debris and dust systems take over there), and the rest falls;
- ``impact``: a projectile (sphere) flies in with a given direction and speed at frame F;
- ``charge``: at frame F an outward impulse from a point breaks nearby glue and throws
  fragments away, falling off linearly with distance.

The simulation is deterministic: the same fragments and settings give the same cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import mujoco
import numpy as np
from scipy.spatial import ConvexHull, QhullError, cKDTree

GRAVITY = 9.81
CONCRETE_DENSITY = 2400.0  # kg/m³


@dataclass(frozen=True)
class CollapseSettings:
    """Physical settings of a collapse (SI units in the physics frame)."""

    density: float = CONCRETE_DENSITY
    friction: float = 0.8
    restitution: float = 0.1
    glue_strength: float = 2.0  # a bond breaks when it carries more than this × the pair's weight
    trigger: Literal["demolition", "impact", "charge", "none"] = "demolition"
    trigger_frame: int = 0  # frame index (0-based within the shot) when the trigger fires
    anchored: bool = True  # weld the lowest fragments to the ground (a building stands on it)
    support_height: float = 0.1  # fragments centred this low (fraction of the height) are supports
    impact_point: tuple[float, float, float] | None = None
    impact_direction: tuple[float, float, float] = (1.0, 0.0, 0.0)
    impact_speed: float = 25.0
    impact_mass: float = 2000.0
    impact_radius: float = 0.6
    charge_point: tuple[float, float, float] | None = None
    charge_impulse: float = 12.0  # m/s given at the charge point, falling off to 0 at charge_radius
    charge_radius: float = 5.0
    substeps: int = 20  # physics steps per frame


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


def fragment_hulls(points: np.ndarray, labels: np.ndarray, count: int, min_thickness: float) -> list[np.ndarray]:
    """Convex-hull vertices of each fragment's points; flat or tiny fragments are padded
    to a box of at least ``min_thickness`` so every body has a volume."""
    hulls = []
    for fragment in range(count):
        pts = points[labels == fragment]
        lo, hi = pts.min(0), pts.max(0)
        pad = np.maximum(min_thickness - (hi - lo), 0.0) / 2.0
        if np.any(pad > 0):
            corners = np.array([[x, y, z] for x in (lo[0] - pad[0], hi[0] + pad[0])
                                for y in (lo[1] - pad[1], hi[1] + pad[1]) for z in (lo[2] - pad[2], hi[2] + pad[2])])
            pts = np.concatenate([pts, corners])
        try:
            hulls.append(pts[ConvexHull(pts).vertices])
        except QhullError:
            hulls.append(pts[: min(len(pts), 64)])
    return hulls


def contact_pairs(points: np.ndarray, labels: np.ndarray, count: int, gap: float) -> np.ndarray:
    """Pairs (P,2) of fragments whose points come within ``gap`` of each other."""
    tree = cKDTree(points)
    pairs = tree.query_pairs(gap, output_type="ndarray")
    if not len(pairs):
        return np.zeros((0, 2), dtype=np.int64)
    a, b = labels[pairs[:, 0]], labels[pairs[:, 1]]
    cross = a != b
    both = np.sort(np.stack([a[cross], b[cross]], axis=1), axis=1)
    return np.unique(both, axis=0).astype(np.int64)


def build_model(hulls: list[np.ndarray], pairs: np.ndarray, grounded: np.ndarray, settings: CollapseSettings,
                fps: float) -> tuple[mujoco.MjModel, np.ndarray]:
    """The MuJoCo model: ground plane, one free body per fragment, welds, optional projectile.

    Returns the model and the fragments' centroids (the bodies' rest positions).
    """
    centroids = np.array([h.mean(axis=0) for h in hulls])
    dt = 1.0 / (fps * settings.substeps)
    damping = float(np.clip(1.0 - settings.restitution, 0.05, 1.0))
    assets, bodies, welds = [], [], []
    for i, (hull, centre) in enumerate(zip(hulls, centroids)):
        verts = " ".join(f"{v:.6g}" for v in (hull - centre).ravel())
        assets.append(f'<mesh name="m{i}" vertex="{verts}" inertia="convex"/>')
        bodies.append(f'<body name="f{i}" pos="{_vec(centre)}"><freejoint/>'
                      f'<geom name="g{i}" type="mesh" mesh="m{i}" density="{settings.density:g}"/></body>')
    for a, b in pairs:
        welds.append(f'<weld name="w{a}_{b}" body1="f{a}" body2="f{b}"/>')
    for g in grounded:
        welds.append(f'<weld name="ground{g}" body1="f{g}"/>')
    if settings.trigger == "impact":
        start = np.asarray(settings.impact_point, dtype=np.float64) - 3.0 * settings.impact_radius * _unit(settings.impact_direction)
        density = settings.impact_mass / (4.0 / 3.0 * np.pi * settings.impact_radius ** 3)
        bodies.append(f'<body name="projectile" pos="{_vec(start + np.array([0, 0, 1e4]))}"><freejoint/>'
                      f'<geom name="projectile" type="sphere" size="{settings.impact_radius:g}" density="{density:g}"/></body>')
    xml = f"""<mujoco model="splatfx-collapse">
  <option timestep="{dt:.8g}" gravity="0 0 {-GRAVITY}" integrator="implicitfast" cone="elliptic"/>
  <size memory="512M"/>
  <default>
    <geom friction="{settings.friction:g} 0.005 0.0001" solref="0.004 {damping:g}" condim="3"/>
    <equality solref="0.004 1"/>
  </default>
  <asset>{"".join(assets)}</asset>
  <worldbody>
    <geom name="ground" type="plane" size="0 0 1"/>
    {"".join(bodies)}
  </worldbody>
  <equality>{"".join(welds)}</equality>
</mujoco>"""
    return mujoco.MjModel.from_xml_string(xml), centroids


def simulate_collapse(points: np.ndarray, labels: np.ndarray, count: int, frames: int, fps: float,
                      settings: CollapseSettings = CollapseSettings(), progress=None) -> RigidCache:
    """Simulate the fragments (points (M,3) in the physics frame with fragment labels) for
    ``frames`` frames at ``fps`` and return their per-frame poses and events."""
    extent = float(np.linalg.norm(points.max(0) - points.min(0))) or 1.0
    hulls = fragment_hulls(points, labels, count, min_thickness=0.02 * extent)
    spacing = float(np.median(cKDTree(points).query(points, k=2)[0][:, 1]))
    pairs = contact_pairs(points, labels, count, gap=max(3.0 * spacing, 1e-3 * extent))
    lowest = np.array([points[labels == f, 2].min() for f in range(count)])
    middle = np.array([points[labels == f, 2].mean() for f in range(count)])
    base, height = float(points[:, 2].min()), float(np.ptp(points[:, 2])) or 1.0
    grounded = np.nonzero(lowest <= base + 0.02 * height)[0] if settings.anchored else np.zeros(0, int)
    # the supports crumble on demolition: the lowest layer, and every piece standing on the base
    standing = np.nonzero(lowest <= base + 0.02 * height)[0]
    supports = np.union1d(np.nonzero(middle <= base + settings.support_height * height)[0], standing)
    model, centroids = build_model(hulls, pairs, grounded, settings, fps)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    masses = model.body_mass[1 : count + 1].copy()
    weld_pairs = [tuple(p) for p in pairs] + [(int(g), -1) for g in grounded]
    bond_limit = np.array([settings.glue_strength * GRAVITY * (masses[a] + (masses[b] if b >= 0 else masses[a]))
                           for a, b in weld_pairs])
    positions = np.zeros((frames, count, 3))
    quats = np.zeros((frames, count, 4))
    visible = np.ones((frames, count), dtype=bool)
    gone = np.zeros(count, dtype=bool)
    events: list[dict] = []
    touching = np.zeros(count, dtype=bool)
    for frame in range(frames):
        if frame == settings.trigger_frame:
            _fire_trigger(model, data, settings, supports, weld_pairs, centroids, masses, gone, events, frame, count)
        if frame > 0:
            for _ in range(settings.substeps):
                mujoco.mj_step(model, data)
                _break_overloaded(data, weld_pairs, bond_limit, events, frame)
        positions[frame] = data.xpos[1 : count + 1]
        quats[frame] = data.xquat[1 : count + 1]
        visible[frame] = ~gone
        touching = _ground_impacts(model, data, count, touching, events, frame)
        if progress is not None:
            progress(frame + 1, frames)
    return RigidCache(fps, centroids, positions, quats, visible, masses, events)


def _fire_trigger(model: mujoco.MjModel, data: mujoco.MjData, settings: CollapseSettings, supports: np.ndarray,
                  weld_pairs: list[tuple[int, int]], centroids: np.ndarray, masses: np.ndarray, gone: np.ndarray,
                  events: list[dict], frame: int, count: int) -> None:
    """Start the collapse as the settings say (see the module docstring)."""
    if settings.trigger == "demolition":
        for s in supports:
            gone[s] = True
            model.geom_contype[s + 1] = 0  # geom 0 is the ground
            model.geom_conaffinity[s + 1] = 0
            events.append({"frame": frame, "kind": "crumble", "position": data.xpos[s + 1].tolist(), "speed": 0.0,
                           "fragment": int(s)})
        for index, (a, b) in enumerate(weld_pairs):
            if a in supports or b in supports:
                data.eq_active[index] = 0
    elif settings.trigger == "impact":
        target = np.asarray(settings.impact_point, dtype=np.float64)
        direction = _unit(settings.impact_direction)
        qadr = model.jnt_qposadr[count]  # the projectile's free joint comes after the fragments
        vadr = model.jnt_dofadr[count]
        data.qpos[qadr : qadr + 3] = target - 3.0 * settings.impact_radius * direction
        data.qvel[vadr : vadr + 3] = settings.impact_speed * direction
        mujoco.mj_forward(model, data)
    elif settings.trigger == "charge":
        centre = np.asarray(settings.charge_point, dtype=np.float64)
        for index, (a, b) in enumerate(weld_pairs):
            near = [f for f in (a, b) if f >= 0 and np.linalg.norm(centroids[f] - centre) < settings.charge_radius]
            if near:
                data.eq_active[index] = 0
        for f in range(count):
            offset = data.xpos[f + 1] - centre
            distance = float(np.linalg.norm(offset))
            if distance < settings.charge_radius:
                speed = settings.charge_impulse * (1.0 - distance / settings.charge_radius)
                vadr = model.jnt_dofadr[f]
                data.qvel[vadr : vadr + 3] += speed * offset / max(distance, 1e-6)
                events.append({"frame": frame, "kind": "break", "position": data.xpos[f + 1].tolist(), "speed": speed,
                               "fragment": f})


def _break_overloaded(data: mujoco.MjData, weld_pairs: list[tuple[int, int]], bond_limit: np.ndarray,
                      events: list[dict], frame: int) -> None:
    """Deactivate every weld whose constraint force exceeds its bond limit."""
    rows = np.nonzero(data.efc_type == mujoco.mjtConstraint.mjCNSTR_EQUALITY)[0]
    if not len(rows):
        return
    ids = data.efc_id[rows]
    force = data.efc_force[rows]
    load = np.zeros(len(weld_pairs))
    # 6 rows per active weld: 3 force, 3 torque; use the force magnitude
    for weld in np.unique(ids):
        f = force[ids == weld]
        load[weld] = float(np.linalg.norm(f[:3]))
    for weld in np.nonzero((load > bond_limit) & (data.eq_active == 1))[0]:
        data.eq_active[weld] = 0
        a, b = weld_pairs[weld]
        position = data.xpos[a + 1] if b < 0 else 0.5 * (data.xpos[a + 1] + data.xpos[b + 1])
        events.append({"frame": frame, "kind": "break", "position": position.tolist(), "speed": 0.0, "fragment": int(a)})


def _ground_impacts(model: mujoco.MjModel, data: mujoco.MjData, count: int, touching: np.ndarray,
                    events: list[dict], frame: int, min_speed: float = 1.0) -> np.ndarray:
    """Record a ground impact when a fragment starts touching the ground moving fast."""
    now = np.zeros(count, dtype=bool)
    for contact in data.contact[: data.ncon]:
        g1, g2 = contact.geom1, contact.geom2
        if 0 not in (g1, g2):
            continue
        other = (g2 if g1 == 0 else g1) - 1
        if 0 <= other < count:
            now[other] = True
    velocity = np.zeros(6)
    for f in np.nonzero(now & ~touching)[0]:
        mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_BODY, int(f + 1), velocity, 0)
        speed = float(np.linalg.norm(velocity[3:]))
        if speed >= min_speed:
            events.append({"frame": frame, "kind": "impact", "position": data.xpos[f + 1].tolist(), "speed": speed,
                           "fragment": int(f)})
    return now


def _vec(v: np.ndarray) -> str:
    return " ".join(f"{x:.6g}" for x in v)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)
