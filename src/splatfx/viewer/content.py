"""What the viewer reads from a shot besides the splats: the solved plate cameras in the
display frame, thumbnails, the comp frames, and which stages can run."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from splatfx.core.color import linear_to_srgb
from splatfx.core.errors import SplatfxError
from splatfx.fx.animation import Similarity, load_frame
from splatfx.io.images import IMAGE_SUFFIXES, read_image
from splatfx.core.rotation import rotmat_to_quat
from splatfx.shot.folder import Shot

#: The stages the viewer can run: name → (module, function(shot, *, force=False)).
STAGES: dict[str, tuple[str, str]] = {
    "fx.select": ("splatfx.fx.stage", "run_select"),
    "fx.collapse": ("splatfx.fx.stage", "run_collapse"),
    "fx.snow": ("splatfx.fx.stage", "run_snow"),
    "render": ("splatfx.render.stage", "run_render"),
    "refine": ("splatfx.refine.stage", "run_refine"),
    "comp": ("splatfx.comp.stage", "run_comp"),
}


@dataclass(frozen=True)
class PlateCamera:
    """One solved plate camera placed in the display frame, with its image file."""

    name: str
    image_path: Path
    fov_y: float  # radians
    aspect: float  # width / height
    wxyz: np.ndarray  # camera-to-display rotation (OpenCV axes)
    position: np.ndarray
    frame: int | None  # the shot frame it belongs to, when known


def scene_frame(shot: Shot) -> Similarity | None:
    """The solve→world similarity from ``solve/scene.json``, or None without one."""
    return load_frame(shot) if shot.scene_json.is_file() else None


def plate_cameras(shot: Shot, frame: Similarity | None) -> list[PlateCamera]:
    """The solved cameras of ``solve/`` in the display frame (empty without a solve)."""
    from splatfx.io.dataset import load_dataset

    dataset = load_dataset(shot.solve_dir, split="all")
    frames = _frames_by_image(shot)
    sim = frame or Similarity()
    cameras = []
    for item in dataset:
        cam = item.camera
        rotation = sim.rotation @ cam.R.T  # camera → display
        cameras.append(PlateCamera(
            name=item.name, image_path=item.image_path, fov_y=cam.fov_y(), aspect=cam.width / cam.height,
            wxyz=rotmat_to_quat(rotation), position=sim.to_world(cam.center[None])[0],
            frame=frames.get(item.name, frames.get(Path(item.name).stem)),
        ))
    return cameras


def _frames_by_image(shot: Shot) -> dict[str, int]:
    """Solved image name → shot frame: from ``solve/report.json`` when it says, else the
    plates' file names (a solve names images after the plates, or ``NNNNNN.jpg``)."""
    report = shot.solve_report
    if report.is_file():
        try:
            rows = json.loads(report.read_text()).get("frames", [])
            found = {str(r["image"]): int(r["frame"]) for r in rows}
            if found:
                return found
        except (ValueError, KeyError, TypeError):
            pass
    from splatfx.io.plates import ImagePlates

    try:
        with shot.open_plates() as plates:
            if isinstance(plates, ImagePlates):
                return {plates.path(f).name: f for f in plates.frames}
            return {f"{f:06d}": f for f in plates.frames}
    except SplatfxError:  # plates moved away: the cameras still show, without their frames
        return {}


def thumbnail(path: Path, longest: int) -> np.ndarray:
    """An sRGB uint8 (H,W,3) copy of an image no larger than ``longest`` pixels."""
    if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
        with PILImage.open(path) as im:
            im.draft("RGB", (longest, longest))
            im = im.convert("RGB")
            im.thumbnail((longest, longest))
            return np.asarray(im)
    image = read_image(path)
    return fit_image(display_rgb(image.pixels, image.encoding), longest)


def display_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """Float pixels (H,W,C) as sRGB uint8 (H,W,3)."""
    rgb = pixels[..., :3] if pixels.shape[2] >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
    if encoding == "linear":
        rgb = linear_to_srgb(np.clip(rgb, 0.0, None))
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def fit_image(rgb: np.ndarray, longest: int) -> np.ndarray:
    """``rgb`` (uint8) shrunk so its longest side is at most ``longest``."""
    h, w = rgb.shape[:2]
    factor = longest / max(h, w)
    if factor >= 1:
        return rgb
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return np.asarray(PILImage.fromarray(rgb).resize(size, PILImage.BILINEAR))


def comp_frames(shot: Shot) -> dict[int, Path]:
    """Comp frames in ``comp/`` by frame number (the last number in a file's name; PNG
    preferred over JPEG over EXR when several exist for one frame)."""
    preference = {".png": 0, ".jpg": 1, ".jpeg": 1, ".exr": 2}
    found: dict[int, Path] = {}
    if not shot.comp_dir.is_dir():
        return found
    for path in sorted(shot.comp_dir.rglob("*")):
        suffix = path.suffix.lower()
        numbers = re.findall(r"\d+", path.stem)
        if suffix not in IMAGE_SUFFIXES or not numbers or not path.is_file():
            continue
        frame = int(numbers[-1])
        if frame not in found or preference[suffix] < preference[found[frame].suffix.lower()]:
            found[frame] = path
    return found


def stage_function(name: str) -> Callable[..., Any] | str:
    """The function running stage ``name``, or why it cannot run (its module is not there yet)."""
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(STAGES)}")
    module_name, function = STAGES[name]
    try:
        if importlib.util.find_spec(module_name) is None:
            return f"not available yet ({module_name} is not installed)"
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return f"not available ({module_name}: {exc})"
    fn = getattr(module, function, None)
    return fn if callable(fn) else f"not available yet ({module_name} has no {function})"
