"""Rigid-body collapse of fragments with MuJoCo.

The scene is simulated in its physics frame (z-up, metres, ground at z = 0). Every
fragment is a free body whose collision shape is the convex hull of its points and whose
mass is hull volume × density. Neighbouring fragments are glued by weld constraints, and
the lowest fragments are welded to the ground. A weld breaks when the force it carries
exceeds its load at rest (measured by letting the intact structure stand for a moment
first) by more than ``glue_strength`` times the weight of the pair: so any structure
stands by itself, and only what a trigger adds (a lost support, a hit, a blast) breaks
it. A step that overloads welds is taken again without them, so a blow is not passed on
through glue that breaks under it. Nothing moves before the trigger (those frames are not
simulated): the structure stands as the plates show it, even where a scanned structure is
not one welded piece. A trigger starts the collapse:

- ``demolition``: at frame F the supports (the lowest layer and every piece standing on
  the base) crumble: they lose their welds and collisions and leave the simulation (the
  debris and dust systems take over there), and the rest falls;
- ``impact``: at frame F a projectile (sphere) sets off from just outside the structure
  and flies with a given direction and speed at the impact point;
- ``charge``: at frame F an outward velocity from a point, falling off linearly with
  distance, throws fragments away; every bond the blast overloads breaks at once.

Besides the ground plane, static boxes (:mod:`splatfx.fx.colliders`: placed by the artist
or fitted to the rest of the scene) stop falling pieces, with the ground's friction and
restitution.

The simulation is deterministic: the same fragments and settings give the same cache.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import mujoco
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import ConvexHull, QhullError, cKDTree

from splatfx.fx.animation import RigidCache
from splatfx.fx.colliders import StaticBox
from splatfx.fx.fracture import Fracture, merge_fragments
from splatfx.core.rotation import rotmats_to_quats

GRAVITY = 9.81
CONCRETE_DENSITY = 2400.0  # kg/m³
REST_SECONDS = 0.1  # how long the intact structure stands to measure its welds' loads at rest


@dataclass(frozen=True)
class CollapseSettings:
    """Physical settings of a collapse (SI units in the physics frame)."""

    density: float = CONCRETE_DENSITY
    friction: float = 0.8
    restitution: float = 0.1
    glue_strength: float = 2.0  # a bond breaks when it carries this × the pair's weight more than at rest
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
    colliders: tuple[StaticBox, ...] = ()  # static boxes besides the ground plane


def fragment_hulls(points: np.ndarray, labels: np.ndarray, count: int, min_thickness: float,
                   floor: float | None = None) -> list[np.ndarray]:
    """Convex-hull vertices of each fragment's points.

    A fragment thinner than ``min_thickness`` along a principal axis (a patch of wall
    surface, at any angle) is thickened along that axis by copies of its points shifted
    both ways, so every body has a volume; copies nearer to another fragment's points than
    to their own are dropped, so thickened neighbours do not start out overlapping (which
    would push them apart the moment their glue breaks). With ``floor`` no vertex lies
    below that height: the ground plane would push such a piece up.
    """
    tree = cKDTree(points)
    hulls = []
    for fragment in range(count):
        pts = points[labels == fragment]
        centre = pts.mean(axis=0)
        axes = np.linalg.svd(pts - centre, full_matrices=False)[2] if len(pts) > 1 else np.eye(3)
        axes = np.concatenate([axes, np.eye(3)[len(axes):]]) if len(axes) < 3 else axes
        extent = np.ptp((pts - centre) @ axes.T, axis=0)
        pads = [(min_thickness - extent[a]) / 2.0 * axes[a] for a in range(3) if extent[a] < min_thickness]
        if pads:
            thick = (pts[None] + _sign_sums(pads)[:, None]).reshape(-1, 3)
            own = labels[tree.query(thick)[1]] == fragment
            pts = np.concatenate([pts, thick[own] if own.sum() >= 4 else thick])
        if floor is not None:
            pts = np.column_stack([pts[:, :2], np.maximum(pts[:, 2], floor)])
        try:
            hulls.append(pts[ConvexHull(pts).vertices])
        except QhullError:
            hulls.append(pts[: min(len(pts), 64)])
    return hulls


def _sign_sums(vectors: list[np.ndarray]) -> np.ndarray:
    """Every sum ±v1 ±v2 … of the given vectors (2^k rows)."""
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * len(vectors), indexing="ij")).reshape(len(vectors), -1).T
    return signs @ np.array(vectors)


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


def collision_hulls(points: np.ndarray, labels: np.ndarray, count: int) -> list[np.ndarray]:
    """The fragments' collision shapes as :func:`simulate_collapse` builds them: hulls
    thickened to 2% of the structure's extent, none reaching below the ground (z = 0)."""
    extent = float(np.linalg.norm(points.max(0) - points.min(0))) or 1.0
    return fragment_hulls(points, labels, count, min_thickness=0.02 * extent, floor=0.0)


#: A collision hull smaller than this share of the minimum thickness cubed is too small or
#: too flat for the solver (MuJoCo refuses a flat mesh, or a body with next to no mass).
MIN_PIECE_VOLUME = 1e-3


def solvable_fracture(points: np.ndarray, fracture: Fracture) -> Fracture:
    """``fracture`` with every piece the solver cannot take merged into its neighbours.

    A piece whose collision hull (:func:`collision_hulls`) is flat or smaller than
    :data:`MIN_PIECE_VOLUME` of the thickness cube, typically a cell holding one or two
    Gaussians of a dense fracture, gives up its seed: its points join the nearest other
    pieces (:func:`splatfx.fx.fracture.merge_fragments`). Repeated until every piece is
    solvable; a fracture without such pieces is returned unchanged.
    """
    extent = float(np.linalg.norm(points.max(0) - points.min(0))) or 1.0
    smallest = MIN_PIECE_VOLUME * (0.02 * extent) ** 3
    while fracture.count > 1:
        hulls = collision_hulls(points, fracture.labels, fracture.count)
        small = np.array([_hull_volume(h) for h in hulls]) < smallest
        if not small.any():
            break
        fracture = merge_fragments(points, fracture, small)
    return fracture


def _hull_volume(vertices: np.ndarray) -> float:
    """Volume of the convex hull of ``vertices`` (0 for a flat or degenerate set)."""
    try:
        return float(ConvexHull(vertices).volume)
    except (QhullError, ValueError):
        return 0.0


def projectile_start(hulls: list[np.ndarray], settings: CollapseSettings) -> np.ndarray:
    """Where the projectile sets off: on the line through the impact point along its
    direction, far enough back that the sphere clears every fragment (no overlap at launch)."""
    target = np.asarray(settings.impact_point, dtype=np.float64)
    direction = _unit(settings.impact_direction)
    behind = max(float(((target - np.concatenate(hulls)) @ direction).max()), 0.0)
    return target - (behind + 1.1 * settings.impact_radius) * direction


def build_model(hulls: list[np.ndarray], pairs: np.ndarray, grounded: np.ndarray, settings: CollapseSettings,
                fps: float) -> tuple[mujoco.MjModel, np.ndarray]:
    """The MuJoCo model: ground plane, static boxes, one free body per fragment, welds,
    optional projectile (parked far above the scene until it is launched).

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
        start = projectile_start(hulls, settings)
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
    {"".join(_box_geom(i, box) for i, box in enumerate(settings.colliders))}
    {"".join(bodies)}
  </worldbody>
  <equality>{"".join(welds)}</equality>
</mujoco>"""
    return mujoco.MjModel.from_xml_string(xml), centroids


def _box_geom(index: int, box: StaticBox) -> str:
    """A static MuJoCo box geom (world body: it never moves; default friction and contact softness)."""
    quat = rotmats_to_quats(np.asarray(box.rotation, dtype=np.float64)[None])[0]
    return (f'<geom name="static{index}" type="box" pos="{_vec(box.center)}" quat="{_vec(quat)}" '
            f'size="{_vec(0.5 * np.asarray(box.size, dtype=np.float64))}"/>')


def simulate_collapse(points: np.ndarray, labels: np.ndarray, count: int, frames: int, fps: float,
                      settings: CollapseSettings = CollapseSettings(), progress=None) -> RigidCache:
    """Simulate the fragments (points (M,3) in the physics frame with fragment labels) for
    ``frames`` frames at ``fps`` and return their per-frame poses and events. An impact or
    charge point left unset is the structure's centre."""
    centre = tuple(points.mean(axis=0))
    settings = replace(settings, impact_point=centre if settings.impact_point is None else settings.impact_point,
                       charge_point=centre if settings.charge_point is None else settings.charge_point)
    extent = float(np.linalg.norm(points.max(0) - points.min(0))) or 1.0
    hulls = collision_hulls(points, labels, count)
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
    reserve = np.array([settings.glue_strength * GRAVITY * (masses[a] + (masses[b] if b >= 0 else masses[a]))
                        for a, b in weld_pairs])
    bond_limit = _rest_loads(model, len(weld_pairs), int(np.ceil(REST_SECONDS * fps * settings.substeps))) + reserve
    positions = np.zeros((frames, count, 3))
    quats = np.zeros((frames, count, 4))
    visible = np.ones((frames, count), dtype=bool)
    gone = np.zeros(count, dtype=bool)
    events: list[dict] = []
    touching = np.zeros(count, dtype=bool)
    # nothing happens before a trigger fires: the structure stands as the plates show it (a real
    # scan is rarely one welded piece, and a loose or soft part would sag or drop on its own);
    # with no trigger, a structure glued to the ground throughout stands still too
    standing = settings.trigger != "none" or (bool(len(grounded)) and _all_anchored(count, pairs, grounded))
    for frame in range(frames):
        if frame == settings.trigger_frame:
            _fire_trigger(model, data, settings, supports, weld_pairs, bond_limit, hulls, gone, events, frame, count)
            standing = standing and settings.trigger == "none"
        if frame > 0 and not standing:
            for _ in range(settings.substeps):
                velocity_before = _velocities(model, data, count)
                _step(model, data, weld_pairs, bond_limit, events, frame)
                touching = _ground_impacts(model, data, count, touching, velocity_before, events, frame)
        positions[frame] = data.xpos[1 : count + 1]
        quats[frame] = data.xquat[1 : count + 1]
        visible[frame] = ~gone
        if progress is not None:
            progress(frame + 1, frames)
    return RigidCache(fps, centroids, positions, quats, visible, masses, events)


def _fire_trigger(model: mujoco.MjModel, data: mujoco.MjData, settings: CollapseSettings, supports: np.ndarray,
                  weld_pairs: list[tuple[int, int]], bond_limit: np.ndarray, hulls: list[np.ndarray],
                  gone: np.ndarray, events: list[dict], frame: int, count: int) -> None:
    """Start the collapse as the settings say (see the module docstring)."""
    if settings.trigger == "demolition":
        for s in supports:
            gone[s] = True
            geom = model.body_geomadr[s + 1]  # fragment s is body s + 1 (body 0 is the world)
            model.geom_contype[geom] = 0
            model.geom_conaffinity[geom] = 0
            events.append({"frame": frame, "kind": "crumble", "position": data.xpos[s + 1].tolist(), "speed": 0.0,
                           "fragment": int(s)})
        for index, (a, b) in enumerate(weld_pairs):
            if a in supports or b in supports:
                data.eq_active[index] = 0
    elif settings.trigger == "impact":
        qadr = model.jnt_qposadr[count]  # the projectile's free joint comes after the fragments
        vadr = model.jnt_dofadr[count]
        data.qpos[qadr : qadr + 3] = projectile_start(hulls, settings)
        data.qvel[vadr : vadr + 6] = 0.0
        data.qvel[vadr : vadr + 3] = settings.impact_speed * _unit(settings.impact_direction)
        mujoco.mj_forward(model, data)
    elif settings.trigger == "charge":
        centre = np.asarray(settings.charge_point, dtype=np.float64)
        for f in range(count):
            offset = data.xpos[f + 1] - centre
            distance = float(np.linalg.norm(offset))
            speed = settings.charge_impulse * max(1.0 - distance / settings.charge_radius, 0.0)
            if speed > 0.0:
                vadr = model.jnt_dofadr[f]
                data.qvel[vadr : vadr + 3] += speed * offset / max(distance, 1e-6)
                events.append({"frame": frame, "kind": "break", "position": data.xpos[f + 1].tolist(), "speed": speed,
                               "fragment": f})
        # the bonds that would have to stop these velocity differences in one step take the
        # whole load at once: those it overloads break before the blast is damped by them
        mujoco.mj_forward(model, data)
        _break_overloaded(data, weld_pairs, bond_limit, events, frame)


def _all_anchored(count: int, pairs: np.ndarray, grounded: np.ndarray) -> bool:
    """Whether every fragment is glued, through its neighbours, to one welded to the ground."""
    ground = count  # an extra node standing for the ground
    a = np.concatenate([pairs[:, 0], grounded]).astype(int)
    b = np.concatenate([pairs[:, 1], np.full(len(grounded), ground)]).astype(int)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(count + 1, count + 1))
    labels = connected_components(graph, directed=False)[1]
    return bool(np.all(labels == labels[ground]))


def _weld_loads(data: mujoco.MjData, count: int) -> np.ndarray:
    """The force (N) each of the ``count`` welds carries in the last step (0 when inactive)."""
    load = np.zeros(count)
    rows = np.nonzero(data.efc_type == mujoco.mjtConstraint.mjCNSTR_EQUALITY)[0]
    if not len(rows):
        return load
    welds, first = np.unique(data.efc_id[rows], return_index=True)
    # 6 consecutive rows per active weld: 3 force, 3 torque; use the force magnitude
    load[welds] = np.linalg.norm(data.efc_force[rows[first][:, None] + np.arange(3)], axis=1)
    return load


def _rest_loads(model: mujoco.MjModel, count: int, steps: int) -> np.ndarray:
    """The most force each weld carries while the intact structure stands for ``steps``
    steps from rest (the settling transient included): the load it bears by itself."""
    data = mujoco.MjData(model)
    peak = np.zeros(count)
    for _ in range(steps if count else 0):
        mujoco.mj_step(model, data)
        peak = np.maximum(peak, _weld_loads(data, count))
    return peak


def _break_overloaded(data: mujoco.MjData, weld_pairs: list[tuple[int, int]], bond_limit: np.ndarray,
                      events: list[dict], frame: int) -> bool:
    """Deactivate every weld whose constraint force exceeds its bond limit; True if any broke."""
    load = _weld_loads(data, len(weld_pairs))
    broken = np.nonzero((load > bond_limit) & (data.eq_active == 1))[0]
    for weld in broken:
        data.eq_active[weld] = 0
        a, b = weld_pairs[weld]
        position = data.xpos[a + 1] if b < 0 else 0.5 * (data.xpos[a + 1] + data.xpos[b + 1])
        events.append({"frame": frame, "kind": "break", "position": position.tolist(), "speed": 0.0, "fragment": int(a)})
    return bool(len(broken))


def _step(model: mujoco.MjModel, data: mujoco.MjData, weld_pairs: list[tuple[int, int]], bond_limit: np.ndarray,
          events: list[dict], frame: int, retakes: int = 4) -> None:
    """One physics step in which no weld passes on more force than it can bear.

    A step that overloads welds is taken back and taken again without them (up to
    ``retakes`` times): a hit then moves the pieces it struck, instead of spreading its
    force through glue that should have broken to every piece of the structure at once.
    """
    saved = data.qpos.copy(), data.qvel.copy(), data.qacc_warmstart.copy(), data.time
    for attempt in range(retakes + 1):
        mujoco.mj_step(model, data)
        if not _break_overloaded(data, weld_pairs, bond_limit, events, frame) or attempt == retakes:
            return
        data.qpos[:], data.qvel[:], data.qacc_warmstart[:], data.time = saved


def _velocities(model: mujoco.MjModel, data: mujoco.MjData, count: int) -> np.ndarray:
    """Each fragment's linear velocity (count,3) (a free joint's first 3 dofs: world frame)."""
    return data.qvel[model.jnt_dofadr[:count, None] + np.arange(3)]


def _ground_impacts(model: mujoco.MjModel, data: mujoco.MjData, count: int, touching: np.ndarray,
                    velocity_before: np.ndarray, events: list[dict], frame: int, min_speed: float = 1.0) -> np.ndarray:
    """After a step: record an impact where a fragment starts touching the ground or a static
    box, at the speed it approached the surface with before the step (its velocity along the
    contact normal: a piece sliding or rolling along does not count)."""
    now = np.zeros(count, dtype=bool)
    normal = np.zeros((count, 3))
    bodies = model.geom_bodyid[data.contact.geom[: data.ncon]].reshape(-1, 2)
    other = bodies.max(axis=1) - 1  # the fragment (body f + 1) in a contact with the world (body 0)
    landed = (bodies.min(axis=1) == 0) & (other >= 0) & (other < count)
    now[other[landed]] = True
    normal[other[landed]] = data.contact.frame[: data.ncon].reshape(-1, 9)[landed, :3]
    for f in np.nonzero(now & ~touching)[0]:
        speed = float(abs(velocity_before[f] @ normal[f]))
        if speed >= min_speed:
            events.append({"frame": frame, "kind": "impact", "position": data.xpos[f + 1].tolist(), "speed": speed,
                           "fragment": int(f)})
    return now


def _vec(v: np.ndarray) -> str:
    return " ".join(f"{x:.6g}" for x in v)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)
