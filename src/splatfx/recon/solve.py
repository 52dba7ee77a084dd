"""The camera solve stage: from footage to cameras, plus the scene's orientation and scale.

Structure from motion runs through pycolmap (COLMAP): SIFT features on the CPU, matching
of image pairs (every pair for small sets, neighbouring frames for long plates, optionally
with loop-closure pairs between evenly spaced keyframes), incremental mapping, the largest
model kept, and undistortion to a pinhole camera so that every later stage sees one.
Features are found at a capped size (``max_image_size``); cameras stay at full size. Video
plates and long sequences are reconstructed from sharp keyframes spread along the path;
every other frame is then registered against that model or, failing that, interpolated.
Known cameras can be imported instead (a COLMAP model, ``transforms.json`` or an LLFF
capture). Either way the output folder (``SHOT/solve/``) holds::

    images/              undistorted images (the pinhole model's images)
    sparse/0/            COLMAP binary model: PINHOLE cameras, images, points3D
    distorted/sparse/0/  the model as solved, with its lens distortion (to match the plates)
    report.json          registered/total images, reprojection error, points, timings, frames
    scene.json           up vector, ground plane and metric scale (see splatfx.recon.orient)

The folder is built beside its final place and renamed onto it, so a failed or
interrupted solve never leaves a half-written ``solve/``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, Sequence

import cv2
import numpy as np
import pycolmap
from PIL import Image

from splatfx.io import colmap
from splatfx.core.atomic import write_text_atomic
from splatfx.core.color import linear_to_srgb
from splatfx.io.dataset import load_dataset
from splatfx.core.errors import ConfigError, InputError
from splatfx.io.images import JPEG_SUFFIXES, PNG_SUFFIXES, write_jpeg
from splatfx.recon.orient import ScaleMeasure, orient_scene
from splatfx.io.plates import ImagePlates, Plates, open_plates
from splatfx.core.progress import make_progress
from splatfx.shot.folder import DISTORTED_MODEL, REPORT_JSON, SCENE_JSON, SPARSE_MODEL, Shot
from splatfx.shot.runner import StageResult, run_stage
from splatfx.shot.scene_frame import SceneFrame

PathLike = str | os.PathLike[str]
Matcher = Literal["auto", "exhaustive", "sequential"]

#: Images COLMAP reads directly; other plates (EXR, video) are exported as JPEG first.
COLMAP_READABLE = JPEG_SUFFIXES | PNG_SUFFIXES


class SolveWarning(UserWarning):
    """Something about the solve the artist should know (e.g. frames left without a camera)."""


@dataclass(frozen=True)
class SolveConfig:
    """Settings of one camera solve. ``matcher="auto"`` matches every pair up to
    ``exhaustive_max_images`` images and neighbouring frames beyond."""

    matcher: Matcher = "auto"
    exhaustive_max_images: int = 150
    overlap: int = 10  # sequential: each frame is matched with this many following ones
    loop_closure: bool = False  # sequential: also match evenly spaced keyframes pairwise
    loop_keyframes: int = 40  # number of keyframes matched pairwise for loop closure
    camera_model: str = "SIMPLE_RADIAL"
    single_camera: bool = True  # one lens for every image (plates from one camera)
    max_image_size: int = 1600  # features are found on images downscaled to this longest side
    keyframes: Literal["auto", "all"] = "auto"  # auto: sequential solves map sharp keyframes, register the rest
    keyframe_spacing: float = 0.03  # image motion between keyframes, as a fraction of the image width
    keyframe_max_gap: int = 24  # at most this many frames from one keyframe to the next
    max_features: int = 0  # SIFT features per image; 0: 2048, or 1024 when matching every pair of > 60 images
    min_registered: int = 3  # fail below this many registered images ...
    min_registered_fraction: float = 0.5  # ... or below this fraction of the images
    up: Literal["auto", "cameras"] = "auto"  # auto: ground plane (else cameras' up); cameras: cameras' up
    scale: ScaleMeasure = field(default_factory=ScaleMeasure)
    num_threads: int = 0  # 0: every core this process may use
    seed: int = 0


@dataclass
class SolveReport:
    """What a solve (or an import) produced; saved as ``report.json``."""

    source: str  # "solve" or "import"
    images_dir: str
    images_total: int
    images_registered: int
    unregistered: list[str]
    mean_reprojection_error_px: float | None
    points3D: int
    mean_track_length: float | None
    camera_model: str
    matcher: str | None
    image_pairs: int
    features: int  # SIFT features per image asked for (0: imported)
    seconds: dict[str, float]
    frames: list[dict] = field(default_factory=list)  # {"frame", "image", "registered", "camera", ...}
    max_image_size: int | None = None  # longest side SIFT features were found at (None: imported)
    keyframes: int | None = None  # images the mapper reconstructed from (the rest registered to them)
    images_solved: int | None = None  # images posed by the mapper (keyframes that registered)
    images_interpolated: int = 0  # frames without a camera of their own, posed between neighbours

    def figures(self) -> dict[str, float | int | None]:
        """The headline numbers (for the manifest and the benchmark)."""
        return {
            "images_total": self.images_total,
            "images_registered": self.images_registered,
            "mean_reprojection_error_px": self.mean_reprojection_error_px,
            "points3D": self.points3D,
            "seconds": self.seconds.get("total"),
        }

    def summary(self) -> str:
        error = "n/a" if self.mean_reprojection_error_px is None else f"{self.mean_reprojection_error_px:.3f} px"
        return (f"{self.images_registered} of {self.images_total} images registered, "
                f"mean reprojection error {error}, {self.points3D} points, "
                f"{self.seconds.get('total', 0.0):.1f} s")


# --- entry points -------------------------------------------------------------------------------
def solve_images(images: PathLike, out: PathLike, config: SolveConfig = SolveConfig(),
                 *, verbose: bool = False) -> SolveReport:
    """Solve the cameras of the images (or any plates) at ``images`` into the folder ``out``."""
    with open_plates(images) as plates:
        return solve_plates(plates, out, config, verbose=verbose)


def solve_plates(plates: Plates, out: PathLike, config: SolveConfig = SolveConfig(),
                 *, verbose: bool = False) -> SolveReport:
    """Solve the cameras of ``plates`` into ``out`` (layout in the module doc).

    Raises InputError naming the images when too few images can be registered;
    images that cannot be registered are named in a :class:`SolveWarning`.
    """
    out = Path(out)
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    with _building(out) as build, _colmap_logging(verbose), make_progress() as progress:
        work = build / ".work"
        work.mkdir()
        image_dir, names = _colmap_images(plates, work, progress)
        frames = dict(zip(names, plates.frames))
        if len(names) < 2:
            raise InputError(plates.source, f"a camera solve needs at least 2 images, found {len(names)}")
        pycolmap.set_random_seed(config.seed)
        db = work / "database.db"
        matcher = resolve_matcher(config, len(names))
        features = feature_count(config, matcher, len(names))
        measures = None
        keys = list(range(len(names)))
        if use_keyframes(config, matcher):
            measures = _timed(seconds, "keyframes", lambda: measure_frames(image_dir, names, progress))
            keys = choose_keyframes(measures, config.keyframe_spacing, config.keyframe_max_gap)
        _timed(seconds, "features", lambda: extract_features(db, image_dir, names, config, features, progress))
        pairs = keyframe_pairs(len(names), keys, matcher, config)
        _timed(seconds, "matching", lambda: match_pairs(db, [(names[i], names[j]) for i, j in pairs],
                                                        work, config, progress))
        key_names = [names[i] for i in keys]
        model = _timed(seconds, "mapping", lambda: map_largest(db, image_dir, work, key_names, config, progress))
        solved = {model.image(i).name for i in model.reg_image_ids()}
        registered: set[str] = set()
        if len(keys) < len(names) and solved:
            others = [n for k, n in enumerate(names) if n not in solved]
            neighbours = {names[k]: [names[j] for j in nearest_keyframes(k, keys)] for k in range(len(names))}
            registered = _timed(seconds, "registration", lambda: register_images(
                db, model, others, neighbours, config, progress))
        posed = solved | registered
        if len(keys) < len(names):  # the keyframes' reconstruction must hold; the rest follow it
            _check_registered(plates.source, len(solved), len(keys), config, "keyframes")
        else:
            _check_registered(plates.source, len(solved), len(names), config)
        interpolated = {} if measures is None else interpolate_poses(model, names, [frames[n] for n in names], posed)
        unregistered = [n for n in names if n not in posed and n not in interpolated]
        if unregistered:
            warnings.warn(SolveWarning(f"{plates.source}: {len(unregistered)} of {len(names)} images could not be "
                                       f"registered and have no camera: {', '.join(unregistered)}"), stacklevel=2)
        distorted = build / DISTORTED_MODEL
        distorted.mkdir(parents=True)
        model.write_binary(str(distorted))
        _timed(seconds, "undistortion", lambda: undistort(distorted, image_dir, build, config, progress))
        orient_model(build / SPARSE_MODEL, config).save(build / SCENE_JSON)
        shutil.rmtree(work)
        seconds["total"] = time.perf_counter() - t_start
        rows = []
        for k, name in enumerate(names):
            how = ("solved" if name in solved else "registered" if name in registered
                   else "interpolated" if name in interpolated else None)
            row = {"frame": frames[name], "image": name, "registered": name in posed, "camera": how,
                   "keyframe": name in key_names}
            if measures is not None:
                row["sharpness"] = round(float(measures.sharpness[k]), 4)
            if name in interpolated:
                row.update(interpolated[name])
            rows.append(row)
        report = SolveReport(
            source="solve", images_dir=str(plates.source), images_total=len(names),
            images_registered=len(posed), unregistered=unregistered,
            mean_reprojection_error_px=float(model.compute_mean_reprojection_error()),
            points3D=int(model.num_points3D()), mean_track_length=float(model.compute_mean_track_length()),
            camera_model=config.camera_model, matcher=matcher, image_pairs=len(pairs), features=features,
            seconds={k: round(v, 3) for k, v in seconds.items()}, frames=rows,
            max_image_size=config.max_image_size, keyframes=len(keys), images_solved=len(solved),
            images_interpolated=len(interpolated),
        )
        write_report(build / REPORT_JSON, report)
    return report


def import_cameras(source: PathLike, out: PathLike, config: SolveConfig = SolveConfig(),
                   *, split: str = "all", verbose: bool = False) -> SolveReport:
    """Write known cameras into ``out`` in the layout a solve writes (see the module doc).

    ``source`` is a capture folder (COLMAP project or bare model, ``transforms.json``,
    LLFF) or one of its camera files (``transforms*.json``, ``poses_bounds.npy``). It is
    read by :func:`splatfx.io.dataset.load_dataset`; its images are copied into ``out`` and
    distorted cameras are undistorted to PINHOLE like a solve's.
    """
    out = Path(out)
    t_start = time.perf_counter()
    root, layout = _capture_root(Path(source))
    data = load_dataset(root, split, layout=layout)
    data.validate()
    names, cameras = data.names, data.cameras
    points = None if data.points is None else _colmap_points(data.points.xyz, data.points.rgb)
    model = colmap.model_from_cameras(names, cameras, points)
    seconds: dict[str, float] = {}
    with _building(out) as build, _colmap_logging(verbose), make_progress() as progress:
        staged = build / ".work" / "images"
        task = progress.add_task("copying images", total=len(data), rate="")
        for frame in data:
            target = staged / frame.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(frame.image_path, target)
            progress.advance(task)
        distorted = build / DISTORTED_MODEL
        colmap.write_model(model, distorted)
        if any(c.dist is not None for c in cameras):
            _timed(seconds, "undistortion", lambda: undistort(distorted, staged, build, config, progress))
        else:
            staged.rename(build / "images")
            colmap.write_model(model, build / SPARSE_MODEL)
        orient_model(build / SPARSE_MODEL, config).save(build / SCENE_JSON)
        shutil.rmtree(build / ".work")
        seconds["total"] = time.perf_counter() - t_start
        report = SolveReport(
            source="import", images_dir=str(root), images_total=len(names), images_registered=len(names),
            unregistered=[], mean_reprojection_error_px=None, points3D=0 if points is None else len(points),
            mean_track_length=None, camera_model=sorted({c.model for c in model.cameras.values()})[0],
            matcher=None, image_pairs=0, features=0, seconds={k: round(v, 3) for k, v in seconds.items()},
            frames=[{"frame": None, "image": n, "registered": True} for n in names],
        )
        write_report(build / REPORT_JSON, report)
    return report


def config_for_shot(shot: Shot) -> SolveConfig:
    """The SolveConfig a shot's ``[solve]`` table asks for, seeded by ``[shot] seed``."""
    section = shot.config.solve
    scale = section.scale
    return SolveConfig(matcher=section.matcher, loop_closure=section.loop_closure,
                       camera_model=section.camera_model, single_camera=section.single_camera,
                       max_image_size=section.max_image_size, keyframes=section.keyframes,
                       keyframe_spacing=section.keyframe_spacing,
                       up=section.up, scale=ScaleMeasure(scale.kind, scale.metres, scale.points, scale.box),
                       seed=shot.config.shot.seed)


def run_solve(shot: Shot, *, force: bool = False, config: SolveConfig | None = None, verbose: bool = False,
              import_path: PathLike | None = None) -> StageResult:
    """The shot's ``solve`` stage: cameras for the plates (:func:`run_orient` then orients them).

    ``config`` defaults to :func:`config_for_shot`. Known cameras are imported instead of
    solving from ``import_path``, else from ``import_cameras`` in ``[solve]`` (a path in
    the shot folder). Skipped when its inputs and settings did not change since its last run.
    """
    section = shot.config.solve
    config = config or config_for_shot(shot)
    out = shot.solve_dir
    # what the cameras depend on: orientation is the next stage's, threads change nothing asked for
    solve_settings = {k: v for k, v in asdict(config).items() if k not in ("up", "scale", "num_threads")}
    if import_path is None and section.import_cameras is not None:
        import_path = shot.path(section.import_cameras)
    source = None if import_path is None else Path(import_path)
    if source is not None:
        solve_settings["import_cameras"] = str(source)
    inputs = {"plates": shot.plate_files()} if source is None else {"import": source}

    def work() -> dict:
        if source is not None:
            return import_cameras(source, out, config, verbose=verbose).figures()
        with shot.open_plates() as plates:
            return solve_plates(plates, out, config, verbose=verbose).figures()
    return run_stage(shot, "solve", solve_settings, inputs, [shot.sparse_model, shot.solve_report],
                     work, force=force, seed=config.seed)


def run_orient(shot: Shot, *, force: bool = False, config: SolveConfig | None = None) -> StageResult:
    """The shot's ``orient`` stage: ``solve/scene.json`` (up, ground, metric scale) of the
    solved cameras; a stage of its own, so changing only the scale re-orients in seconds."""
    config = config or config_for_shot(shot)
    orient_settings = {"up": config.up, "scale": asdict(config.scale)}
    return run_stage(shot, "orient", orient_settings, {"solve": shot.sparse_model}, [shot.scene_json],
                     lambda: _reorient(shot, config), force=force, seed=config.seed)


def _reorient(shot: Shot, config: SolveConfig) -> dict:
    """Recompute the shot's ``solve/scene.json``; its figures for the manifest."""
    scene = orient_model(shot.sparse_model, config)
    scene.save(shot.scene_json)
    return {"scale": scene.scale, "up_source": scene.up_source, "camera_up_angle_deg": scene.camera_up_angle_deg}


# --- steps ----------------------------------------------------------------------------------------
def resolve_matcher(config: SolveConfig, count: int) -> str:
    """The matcher ``auto`` stands for: exhaustive for small sets, sequential beyond."""
    if config.matcher != "auto":
        return config.matcher
    return "exhaustive" if count <= config.exhaustive_max_images else "sequential"


def feature_count(config: SolveConfig, matcher: str, count: int) -> int:
    """SIFT features per image: the configured number, else 2048, or 1024 when every pair of
    more than 60 images is matched (matching time grows with pairs × features²)."""
    if config.max_features > 0:
        return config.max_features
    return 1024 if matcher == "exhaustive" and count > 60 else 2048


def image_pairs(count: int, matcher: str, overlap: int = 10, loop_closure: bool = False,
                loop_keyframes: int = 40) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, to match among ``count`` images in order.

    exhaustive: every pair. sequential: each image with the next ``overlap`` images and
    with images 2^k ahead (k < overlap; COLMAP's quadratic overlap, which bridges short
    gaps); with ``loop_closure`` also every pair among ``loop_keyframes`` evenly spaced
    keyframes, so a plate that comes back to where it started closes its loop.
    """
    if matcher == "exhaustive":
        return [(i, j) for i in range(count) for j in range(i + 1, count)]
    if matcher != "sequential":
        raise ValueError(f"unknown matcher {matcher!r}")
    offsets = set(range(1, overlap + 1)) | {2 ** k for k in range(overlap)}
    pairs = {(i, i + d) for i in range(count) for d in offsets if i + d < count}
    if loop_closure:
        keys = np.unique(np.linspace(0, count - 1, min(count, loop_keyframes)).round().astype(int)).tolist()
        pairs |= {(a, b) for n, a in enumerate(keys) for b in keys[n + 1:]}
    return sorted(pairs)


def use_keyframes(config: SolveConfig, matcher: str) -> bool:
    """Whether the mapper reconstructs from keyframes only: sequential solves (video plates,
    long sequences) with ``keyframes = "auto"``; stills matched exhaustively use every image."""
    return config.keyframes == "auto" and matcher == "sequential"


@dataclass(frozen=True)
class FrameMeasures:
    """Per frame, in order: ``sharpness`` (variance of the Laplacian at :data:`MEASURE_SIZE`,
    divided by the sequence's median: below about 0.5 is motion blur) and ``motion`` (median
    image motion from the previous frame, as a fraction of the image width; 1 where tracking
    was lost, 0 for the first frame)."""

    sharpness: np.ndarray
    motion: np.ndarray


#: Longest side (px) of the grey images sharpness and motion are measured on.
MEASURE_SIZE = 480


def measure_frames(image_dir: Path, names: Sequence[str], progress=None) -> FrameMeasures:
    """Sharpness and frame-to-frame motion of the images ``names`` (see :class:`FrameMeasures`).

    Each image is decoded once, reduced (JPEG DCT scaling) and grey, at :data:`MEASURE_SIZE`;
    motion is the median Lucas–Kanade displacement of corners tracked forward and back.
    """
    task = None if progress is None else progress.add_task("sharpness and motion", total=len(names), rate="")
    sharpness, motion = np.zeros(len(names)), np.zeros(len(names))
    previous = None
    for k, name in enumerate(names):
        grey = _small_grey(image_dir / name)
        sharpness[k] = cv2.Laplacian(grey, cv2.CV_32F).var()
        if previous is not None:
            motion[k] = _image_motion(previous, grey)
        previous = grey
        if task is not None:
            progress.advance(task)
    median = float(np.median(sharpness))
    return FrameMeasures(sharpness / median if median > 0 else sharpness, motion)


def _small_grey(path: Path) -> np.ndarray:
    """``path`` as a grey float32 image whose longest side is :data:`MEASURE_SIZE` (at most)."""
    with Image.open(path) as im:
        longest = max(im.size)
    reduce = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
              8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
    factor = max([f for f in reduce if longest / f >= MEASURE_SIZE] or [1])
    grey = cv2.imread(str(path), reduce[factor] | cv2.IMREAD_IGNORE_ORIENTATION)
    if grey is None:
        raise InputError(path, "cannot be read as an image")
    scale = MEASURE_SIZE / max(grey.shape)
    if scale < 1:
        grey = cv2.resize(grey, (round(grey.shape[1] * scale), round(grey.shape[0] * scale)),
                          interpolation=cv2.INTER_AREA)
    return grey.astype(np.float32)


def _image_motion(a: np.ndarray, b: np.ndarray) -> float:
    """Median displacement of corners tracked from ``a`` to ``b`` (fraction of the width);
    1.0 when fewer than 20 corners survive the forward-backward check (tracking lost)."""
    a8, b8 = a.astype(np.uint8), b.astype(np.uint8)
    corners = cv2.goodFeaturesToTrack(a8, maxCorners=300, qualityLevel=0.01, minDistance=8)
    if corners is None or len(corners) < 20:
        return 1.0
    ahead, ok1, _ = cv2.calcOpticalFlowPyrLK(a8, b8, corners, None, winSize=(21, 21), maxLevel=4)
    back, ok2, _ = cv2.calcOpticalFlowPyrLK(b8, a8, ahead, None, winSize=(21, 21), maxLevel=4)
    good = (ok1[:, 0] == 1) & (ok2[:, 0] == 1) & (np.linalg.norm(back - corners, axis=2)[:, 0] < 1.0)
    if good.sum() < 20:
        return 1.0
    return float(np.median(np.linalg.norm((ahead - corners)[good, 0], axis=1)) / a.shape[1])


def choose_keyframes(measures: FrameMeasures, spacing: float, max_gap: int) -> list[int]:
    """Indices of the frames to reconstruct from: the sharpest frame of each stretch of the
    path over which the image moves by ``spacing`` (fraction of the width) or which is
    ``max_gap`` frames long, so keyframes are sharp and spread along the path.

    The first and last frames start and end a stretch; when the whole plate moves by less
    than ten spacings, the spacing shrinks so that there are about ten stretches.
    """
    count = len(measures.motion)
    if count <= 2:
        return list(range(count))
    travelled = np.cumsum(measures.motion)
    step = max(min(spacing, float(travelled[-1]) / 10), 1e-9)
    stretches, start = [], 0
    for k in range(1, count):
        if travelled[k] - travelled[start] >= step or k - start >= max_gap:
            stretches.append((start, k))
            start = k
    stretches.append((start, count))
    keys = [a + int(np.argmax(measures.sharpness[a:b])) for a, b in stretches]
    return sorted(set(keys))


def nearest_keyframes(index: int, keys: Sequence[int], each_side: int = 2) -> list[int]:
    """Up to ``each_side`` keyframes before and after frame ``index`` (itself excluded)."""
    at = int(np.searchsorted(keys, index))
    before = [k for k in keys[max(0, at - each_side):at] if k != index]
    after = [k for k in keys[at:at + each_side + 1] if k != index][:each_side]
    return before + after


def keyframe_pairs(count: int, keys: Sequence[int], matcher: str, config: SolveConfig) -> list[tuple[int, int]]:
    """Index pairs to match: :func:`image_pairs` among the keyframes, and every other frame
    with its :func:`nearest_keyframes` (to register it against the keyframes' model)."""
    among = image_pairs(len(keys), matcher, config.overlap, config.loop_closure, config.loop_keyframes)
    pairs = {(keys[i], keys[j]) for i, j in among}
    key_set = set(keys)
    for k in range(count):
        if k not in key_set:
            pairs |= {(min(k, j), max(k, j)) for j in nearest_keyframes(k, keys)}
    return sorted(pairs)


def register_images(db: Path, model: pycolmap.Reconstruction, names: Sequence[str],
                    neighbours: dict[str, list[str]], config: SolveConfig, progress=None,
                    min_inliers: int = 30) -> set[str]:
    """Pose each of ``names`` against the keyframes' model and add it (names posed).

    The 2D–3D correspondences are the image's verified matches with its neighbouring
    keyframes whose keypoints belong to 3D points; the pose is COLMAP's LO-RANSAC absolute
    pose, refined (``pycolmap.estimate_and_refine_absolute_pose``), with at least
    ``min_inliers`` inliers. The model's keyframes and points do not move.
    """
    task = None if progress is None else progress.add_task("registering frames", total=len(names), rate="")
    options = pycolmap.AbsolutePoseEstimationOptions()
    options.ransac.random_seed = config.seed
    posed = set()
    database = pycolmap.Database.open(str(db))
    try:
        images = {im.name: im for im in database.read_all_images()}
        for name in names:
            image = images[name]
            keypoints = np.asarray(database.read_keypoints(image.image_id))[:, :2].astype(np.float64)
            found = _correspondences(database, model, image.image_id, neighbours.get(name, []))
            if task is not None:
                progress.advance(task)
            if len(found) < min_inliers:
                continue
            idx = np.array(list(found))
            xyz = np.array([model.point3D(found[i]).xyz for i in idx])
            camera = model.camera(image.camera_id)
            result = pycolmap.estimate_and_refine_absolute_pose(keypoints[idx], xyz, camera, options)
            if result is None or result["num_inliers"] < min_inliers:
                continue
            new = pycolmap.Image(name=name, keypoints=keypoints, camera_id=image.camera_id, image_id=image.image_id)
            model.add_image_with_trivial_frame(new, result["cam_from_world"])
            for i in idx[np.asarray(result["inlier_mask"], bool)]:
                model.add_observation(found[i], pycolmap.TrackElement(image.image_id, int(i)))
            posed.add(name)
    finally:
        database.close()
    return posed


def _correspondences(database: pycolmap.Database, model: pycolmap.Reconstruction, image_id: int,
                     keyframes: Sequence[str]) -> dict[int, int]:
    """Keypoint index of ``image_id`` → 3D point id, through verified matches with ``keyframes``."""
    found: dict[int, int] = {}
    for key_name in keyframes:
        key = model.find_image_with_name(key_name)
        if key is None or not key.has_pose or not database.exists_two_view_geometry(image_id, key.image_id):
            continue
        matches = database.read_two_view_geometry(image_id, key.image_id).inlier_matches
        points = key.points2D
        for mine, theirs in np.asarray(matches).reshape(-1, 2):
            point = points[int(theirs)]
            if point.has_point3D() and int(mine) not in found:
                found[int(mine)] = int(point.point3D_id)
    return found


def interpolate_poses(model: pycolmap.Reconstruction, names: Sequence[str], frame_numbers: Sequence[int],
                      posed: set[str]) -> dict[str, dict]:
    """Poses for the images not in ``posed``, between the nearest posed frames before and
    after (centre linear, rotation slerp, by frame number); before the first or after the
    last posed frame the nearest pose is held. Each value: ``pose`` (COLMAP world-to-camera:
    ``rotation_wxyz``, ``translation``, in solve coordinates) and ``interpolated_from``
    (the frame numbers it came from)."""
    known = [(f, model.find_image_with_name(n).cam_from_world()) for n, f in zip(names, frame_numbers) if n in posed]
    if not known:
        return {}
    times = np.array([f for f, _ in known], float)
    quats = np.array([_wxyz(p.rotation.quat) for _, p in known])
    centres = np.array([-(p.rotation.matrix().T @ p.translation) for _, p in known])
    out = {}
    for name, frame in zip(names, frame_numbers):
        if name in posed:
            continue
        at = int(np.searchsorted(times, frame))
        if at == 0 or at == len(times):
            k = 0 if at == 0 else len(times) - 1
            q, c, source = quats[k], centres[k], [int(times[k])]
        else:
            a, b = at - 1, at
            t = (frame - times[a]) / (times[b] - times[a])
            q, c, source = _slerp(quats[a], quats[b], t), (1 - t) * centres[a] + t * centres[b], [int(times[a]), int(times[b])]
        rotation = _quat_matrix(q)
        out[name] = {"pose": {"rotation_wxyz": [round(float(v), 9) for v in q],
                              "translation": [round(float(v), 9) for v in -rotation @ c]},
                     "interpolated_from": source}
    return out


def _wxyz(xyzw: np.ndarray) -> np.ndarray:
    x, y, z, w = np.asarray(xyzw, float)
    return np.array([w, x, y, z])


def _slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions (shortest arc)."""
    if q0 @ q1 < 0:
        q1 = -q1
    angle = math.acos(min(1.0, float(q0 @ q1)))
    if angle < 1e-9:
        return q0
    q = (math.sin((1 - t) * angle) * q0 + math.sin(t * angle) * q1) / math.sin(angle)
    return q / np.linalg.norm(q)


def _quat_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def extract_features(db: Path, image_dir: Path, names: Sequence[str], config: SolveConfig,
                     features: int, progress) -> None:
    """Import ``names`` (one shared camera unless ``single_camera`` is off) and find SIFT features."""
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = config.camera_model
    mode = pycolmap.CameraMode.SINGLE if config.single_camera else pycolmap.CameraMode.PER_IMAGE
    pycolmap.Database.open(str(db)).close()
    pycolmap.import_images(str(db), str(image_dir), camera_mode=mode, image_names=list(names), options=reader)
    options = pycolmap.FeatureExtractionOptions()
    options.num_threads = _threads(config)
    options.max_image_size = config.max_image_size
    options.sift.max_num_features = features
    task = progress.add_task("features", total=len(names), rate="")
    step = max(2 * _threads(config), 4)
    for start in range(0, len(names), step):
        chunk = list(names[start:start + step])
        pycolmap.extract_features(str(db), str(image_dir), image_names=chunk, camera_mode=mode,
                                  reader_options=reader, extraction_options=options, device=pycolmap.Device.cpu)
        progress.advance(task, len(chunk))


def match_pairs(db: Path, pairs: Sequence[tuple[str, str]], work: Path, config: SolveConfig,
                progress) -> None:
    """Match and geometrically verify the named image pairs, a chunk at a time."""
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = _threads(config)
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = config.seed
    pair_file = work / "pairs.txt"
    pairing = pycolmap.ImportedPairingOptions()
    pairing.match_list_path = str(pair_file)
    task = progress.add_task("matching", total=len(pairs), rate="")
    step = 256
    for start in range(0, len(pairs), step):
        chunk = pairs[start:start + step]
        pair_file.write_text("".join(f"{a} {b}\n" for a, b in chunk))
        pycolmap.match_image_pairs(str(db), matching_options=matching, pairing_options=pairing,
                                   verification_options=verification, device=pycolmap.Device.cpu)
        progress.advance(task, len(chunk))


def map_largest(db: Path, image_dir: Path, work: Path, names: Sequence[str], config: SolveConfig,
                progress) -> pycolmap.Reconstruction:
    """Incremental mapping of ``names``; the model with the most registered images (empty if none)."""
    count = len(names)
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = _threads(config)
    options.random_seed = config.seed
    options.image_names = list(names)
    options.min_model_size = min(options.min_model_size, max(3, count // 4))
    task = progress.add_task("mapping", total=count, rate="")
    models_dir = work / "models"
    models_dir.mkdir()
    models = pycolmap.incremental_mapping(str(db), str(image_dir), str(models_dir), options=options,
                                          next_image_callback=lambda: progress.advance(task))
    progress.update(task, completed=count)
    if not models:
        return pycolmap.Reconstruction()
    return max(models.values(), key=lambda m: m.num_reg_images())


def undistort(model_dir: Path, image_dir: Path, build: Path, config: SolveConfig, progress) -> None:
    """Undistort the images and the model to PINHOLE: ``build/images`` and ``build/sparse/0``."""
    task = progress.add_task("undistorting", total=1, rate="")
    staging = build / ".work" / "undistorted"
    pycolmap.undistort_images(str(staging), str(model_dir), str(image_dir), output_type="COLMAP",
                              jpeg_quality=95, num_threads=_threads(config))
    (build / "sparse").mkdir()
    (staging / "images").rename(build / "images")
    (staging / "sparse").rename(build / SPARSE_MODEL)
    progress.advance(task)


def orient_model(model_dir: Path, config: SolveConfig) -> SceneFrame:
    """Up, ground and metric scale of the COLMAP model in ``model_dir`` (see splatfx.recon.orient)."""
    model = colmap.read_model(model_dir)
    cameras = [colmap.colmap_to_camera(model.cameras[im.camera_id], im, model_dir)
               for im in sorted(model.images.values(), key=lambda im: im.name)]
    try:
        return orient_scene(model.points.xyz, cameras, config.scale, use_ground_plane=config.up == "auto",
                            seed=config.seed)
    except ValueError as exc:  # a given measure that cannot set the scale (e.g. an empty box)
        raise ConfigError("[solve.scale]", str(exc)) from None


def write_report(path: Path, report: SolveReport) -> None:
    write_text_atomic(path, json.dumps(asdict(report), indent=2) + "\n")


def load_report(path: PathLike) -> SolveReport:
    """Read a ``report.json`` written by a solve or an import."""
    path = Path(path)
    try:
        return SolveReport(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise InputError(path, "report.json does not exist (run `splatfx solve` first)") from None
    except (json.JSONDecodeError, TypeError) as exc:
        raise InputError(path, f"not a splatfx solve report ({exc})") from None


# --- helpers --------------------------------------------------------------------------------------
def _check_registered(source: Path, registered: int, total: int, config: SolveConfig, what: str = "images") -> None:
    needed = max(min(config.min_registered, total), math.ceil(config.min_registered_fraction * total))
    if registered < needed:
        raise InputError(source, f"only {registered} of {total} {what} could be registered: "
                                 "the images do not overlap enough")


def _colmap_images(plates: Plates, work: Path, progress) -> tuple[Path, list[str]]:
    """A folder COLMAP can read and the image names in frame order.

    JPEG/PNG plates in one folder are used in place; anything else (EXR, video) is
    written as sRGB JPEGs (quality 95) named by frame number into ``work/frames``.
    """
    if isinstance(plates, ImagePlates):
        files = [plates.path(f) for f in plates.frames]
        folders = {f.parent for f in files}
        if len(folders) == 1 and all(f.suffix.lower() in COLMAP_READABLE for f in files):
            return folders.pop(), [f.name for f in files]
    folder = work / "frames"
    folder.mkdir()
    task = progress.add_task("exporting frames", total=len(plates), rate="")
    names = []
    for frame, pixels in plates.items():
        rgb = pixels[..., :3] if pixels.shape[2] >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
        if plates.encoding == "linear":
            rgb = linear_to_srgb(rgb)
        names.append(f"{frame:06d}.jpg")
        write_jpeg(folder / names[-1], rgb)
        progress.advance(task)
    return folder, names


def _capture_root(source: Path) -> tuple[Path, str | None]:
    """The capture folder and layout for an import: a folder as given, or a camera file's folder."""
    if source.is_dir():
        if colmap.is_model(source) and not (source / "images").is_dir():
            # a bare model folder (e.g. project/sparse/0): the project root holds images/
            for parent in source.parents[:2]:
                if (parent / "images").is_dir():
                    return parent, "colmap"
        return source, None
    if not source.exists():
        raise InputError(source, "cameras to import do not exist")
    if source.name == "poses_bounds.npy":
        return source.parent, "llff"
    if source.suffix == ".json":
        return source.parent, "transforms"
    raise InputError(source, "cannot import cameras from this file: give a COLMAP model folder, "
                             "a transforms.json or a poses_bounds.npy")


def _colmap_points(xyz: np.ndarray, rgb: np.ndarray) -> colmap.ColmapPoints:
    """Sparse points without tracks (imported captures carry positions and colours only)."""
    count = len(xyz)
    return colmap.ColmapPoints(np.arange(1, count + 1), xyz, rgb, np.full(count, -1.0), np.zeros(count),
                               np.zeros((0, 2)))


def _threads(config: SolveConfig) -> int:
    if config.num_threads > 0:
        return config.num_threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def _timed(seconds: dict[str, float], name: str, fn: Callable):
    t0 = time.perf_counter()
    value = fn()
    seconds[name] = time.perf_counter() - t0
    return value


@contextlib.contextmanager
def _colmap_logging(verbose: bool) -> Iterator[None]:
    """COLMAP's log: silent (splatfx reports what went wrong), or everything on stderr with ``verbose``."""
    log = pycolmap.logging
    old = (log.minloglevel, log.logtostderr)
    log.minloglevel, log.logtostderr = (0, True) if verbose else (3, False)
    try:
        yield
    finally:
        log.minloglevel, log.logtostderr = old


@contextlib.contextmanager
def _building(out: Path) -> Iterator[Path]:
    """A fresh folder beside ``out`` that replaces ``out`` when the block succeeds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp.", dir=out.parent))
    build.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the output is a normal folder
    try:
        yield build
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old.{uuid.uuid4().hex[:8]}"
    if out.exists():
        out.rename(old)
    build.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
