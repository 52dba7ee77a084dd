"""The typed schema of ``shot.toml``: one frozen dataclass per table, validated on load.

Every setting is declared once, as a dataclass field made by :func:`setting`, which
carries its default, its one-line meaning and its allowed range; the type annotation
gives its type (``Literal`` for choices, ``X | None`` for optional, tuples for arrays).
Adding a setting is therefore a one-line change, and the loader, the saver, the error
messages and the key listing in docs/shot.md all follow from that line.

Bad files are answered with :class:`~splatfx.core.errors.ConfigError` naming the file, the
table and the key, e.g. ``shot.toml [train] max_steps: must be a positive integer, got -3``.
Unknown keys get a "did you mean" suggestion. Paths are relative to the shot folder and
may not leave it; only ``[shot] plates`` may be absolute (plates referenced in place).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import ntpath
import os
import posixpath
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

import tomli_w

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from splatfx.core.atomic import write_text_atomic
from splatfx.core.errors import ConfigError

PathLike = str | os.PathLike[str]
T = typing.TypeVar("T")
Vec3 = tuple[float, float, float]

#: The scale assumed when nothing was measured: hand-held cameras, on average this many
#: metres above the ground (splatfx.recon.orient's default; kept here so that reading shot.toml
#: does not import the numeric stack).
DEFAULT_CAMERA_HEIGHT_M = 1.6


_HEADER = "# splatfx shot settings: every key is described in docs/shot.md\n\n"

#: The largest seed and frame number: both land in EXR headers, whose integers are 32-bit.
EXR_INT_MAX = 2**31 - 1
#: TOML integers are 64-bit; a larger one would overflow numpy and torch where it is used.
TOML_INT_MIN, TOML_INT_MAX = -2**63, 2**63 - 1


class Invalid(ValueError):
    """A cross-field check failed: ``key`` (within the table being checked) and the problem."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


def setting(default: Any, doc: str, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, path: bool = False, absolute_ok: bool = False, empty_ok: bool = False) -> Any:
    """Declare one setting: its default, its meaning, and its range (``ge``/``gt``/``le``,
    applied to a number or to every number of an array). ``path`` marks a path relative
    to the shot folder; ``absolute_ok`` also allows an absolute one, ``empty_ok`` an empty
    one (``[shot] plates = ""``: a shot without plates)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for an array default so configs stay immutable")
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "path": path, "absolute_ok": absolute_ok}
    if empty_ok:
        meta["empty_ok"] = True
    return field(default=default, metadata=meta)


def redefault(cls: type, name: str, default: Any) -> Any:
    """Setting ``name`` of table ``cls`` (meaning, range) with another default, for a stage
    config that extends the table (e.g. a capture's held-out images outside a shot)."""
    declared = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field(default=default, metadata=declared.metadata)


def table(cls: type, doc: str) -> Any:
    """Declare a sub-table (a nested dataclass) with its meaning."""
    return field(default_factory=cls, metadata={"doc": doc, "table": True})


@dataclass(frozen=True, order=True)
class FrameRange:
    """An inclusive range of frame numbers, written ``"1001-1128"`` in shot.toml."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0:
            raise ValueError(f"frames must not be negative, got {self.start}")
        if self.end < self.start:
            raise ValueError(f"end frame {self.end} is before start frame {self.start}")
        if self.end > EXR_INT_MAX:
            raise ValueError(f"frames must be at most {EXR_INT_MAX} (EXR headers store 32-bit frame numbers), "
                             f"got {self.end}")

    def __len__(self) -> int:
        return self.end - self.start + 1

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end + 1))

    def __contains__(self, frame: object) -> bool:
        return isinstance(frame, int) and self.start <= frame <= self.end

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"

    @classmethod
    def parse(cls, value: object) -> FrameRange:
        """From ``"START-END"``, ``"FRAME"`` or ``[START, END]``; ValueError says why not."""
        if isinstance(value, str):
            m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", value)
            if not m:
                raise ValueError(f'must look like "1001-1096", got {value!r}')
            return cls(int(m[1]), int(m[2] if m[2] is not None else m[1]))
        if (isinstance(value, (list, tuple)) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            return cls(value[0], value[1])
        raise ValueError(f'must be "START-END" or [START, END], got {value!r}')

    def to_toml(self) -> str:
        return str(self)


# --- the tables -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShotSection:
    """[shot]: what the footage is and how it is numbered."""

    name: str = setting("", "shot name for reports; empty means the shot folder's name")
    fps: float = setting(24.0, "frames per second of the plates and every output (at most 1000)", gt=0, le=1000)
    frames: FrameRange | None = setting(
        None, 'frame range "START-END" of the plates; absent: the plate count from 1001 (required '
        'without plates)')
    plates: str = setting("plates", "the footage: folder, sequence pattern (plate.####.exr) "
                          "or video; relative to the shot folder, or absolute when referenced; empty: "
                          "a shot without plates (started from a capture, `splatfx init --scene`)",
                          path=True, absolute_ok=True, empty_ok=True)
    size: tuple[int, int] | None = setting(
        None, "image size [width, height] of a shot without plates (its render and comp size before "
        "[render] resolution_scale and [shot] proxy); ignored with plates, required without", ge=1, le=65536)
    plates_mode: Literal["reference", "copy"] = setting(
        "reference", "reference: plates stay where they are; copy: they were copied into plates/")
    skip_frames: tuple[int, ...] = setting(
        (), "plate frames left out as gaps in the frame numbers (`splatfx init --skip-bad-frames` "
        "lists those that do not decode)", ge=0, le=EXR_INT_MAX)
    seed: int = setting(0, "seed of every random choice in every stage, 0 to 2147483647", ge=0, le=EXR_INT_MAX)
    proxy: float = setting(
        1.0, "render, refine and comp at this fraction of full size for quick looks (1: full size; "
        "e.g. 0.5, 0.25), into proxy/<proxy>/ beside the full-size frames", gt=0, le=1)

    def check(self) -> None:
        if self.plates_mode == "copy" and _is_absolute(self.plates):
            raise Invalid("plates", "plates_mode 'copy' needs plates inside the shot folder, "
                                    f"got the absolute path {self.plates!r}")
        outside = [f for f in self.skip_frames if self.frames is not None and f not in self.frames]
        if outside:
            raise Invalid("skip_frames", f"frame {outside[0]} is outside the shot's frames {self.frames}")
        if not self.plates:  # a shot without plates: nothing to count frames or measure a size from
            if self.frames is None:
                raise Invalid("frames", 'a shot without plates (plates = "") needs its frame range, e.g. '
                                        '"1001-1048"')
            if self.size is None:
                raise Invalid("size", 'a shot without plates (plates = "") needs its image size [width, height]')
            if self.skip_frames:
                raise Invalid("skip_frames", 'a shot without plates (plates = "") has no plate frames to skip')


@dataclass(frozen=True)
class ScaleSection:
    """[solve.scale]: one known measure that sets the scene's size in metres."""

    kind: Literal["camera_height", "distance", "height"] = setting(
        "camera_height", "camera_height: the cameras' mean height above the ground is `metres` "
        "(the default assumes hand-held footage); distance: `points` are two points `metres` "
        "apart; height: the solved points inside `box` span `metres` vertically")
    metres: float = setting(DEFAULT_CAMERA_HEIGHT_M, "the measure, in metres", gt=0)
    points: tuple[Vec3, ...] = setting((), "distance: two points [x, y, z] in solve coordinates")
    box: tuple[float, ...] = setting(
        (), "height: selection box [xmin, ymin, zmin, xmax, ymax, zmax] in solve coordinates")

    def check(self) -> None:
        if self.kind == "distance" and len(self.points) != 2:
            raise Invalid("points", f"kind 'distance' needs exactly two points, got {len(self.points)}")
        if self.box and len(self.box) != 6:
            raise Invalid("box", f"must hold 6 numbers [xmin, ymin, zmin, xmax, ymax, zmax], "
                                 f"got {len(self.box)}")
        if self.kind == "height" and not self.box:
            raise Invalid("box", "kind 'height' needs the selection box")


@dataclass(frozen=True)
class SolveSection:
    """[solve]: how cameras are found for the plates (or imported)."""

    matcher: Literal["auto", "exhaustive", "sequential"] = setting(
        "auto", "feature matching: auto (every pair up to 150 images, else neighbouring frames), "
        "exhaustive (every pair: robust, short shots) or sequential (neighbouring frames: long plates)")
    loop_closure: bool = setting(False, "sequential matcher: also match frames that revisit a place")
    camera_model: Literal["SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV"] = setting(
        "SIMPLE_RADIAL", "COLMAP lens model to solve for")
    single_camera: bool = setting(True, "one lens for every plate (false: one per frame, e.g. zooms)")
    max_image_size: int = setting(
        1600, "longest side (px) the features are found at; cameras stay at the plates' full size", ge=64)
    keyframes: Literal["auto", "all"] = setting(
        "auto", "auto: a sequential solve reconstructs from sharp keyframes spread along the path and "
        "registers (or interpolates) every other frame; all: every frame is reconstructed")
    keyframe_spacing: float = setting(
        0.03, "image motion from one keyframe to the next, as a fraction of the plate width", gt=0, le=1)
    import_cameras: str | None = setting(
        None, "known cameras instead of a solve: a COLMAP model folder, transforms.json or "
        "poses_bounds.npy inside the shot folder", path=True)
    up: Literal["auto", "cameras"] = setting(
        "auto", "world up: auto finds the ground plane (else the cameras' mean up); cameras "
        "always uses the cameras' mean up")
    scale: ScaleSection = table(ScaleSection, "the metric scale")


@dataclass(frozen=True)
class TrainSection:
    """[train]: fitting the Gaussian scene to the plates (splatfx.recon.train.TrainConfig extends
    this table with the recipe's fixed settings; ``splatfx train`` has a flag per key)."""

    max_steps: int | Literal["auto"] = setting(
        "auto", "optimisation steps; auto: 30,000 (3DGS), but on a CPU with max_minutes the 3DGS schedule is "
        "laid over the time limit instead (docs/train.md)", ge=1)
    max_minutes: float | None = setting(None, "stop after this wall time (absent: no limit)", gt=0)
    strategy: Literal["adc", "mcmc"] = setting(
        "adc", "densification: adaptive density control (3DGS) or MCMC (capped count)")
    max_gaussians: int | Literal["auto"] = setting(
        "auto", "upper bound on the number of Gaussians; auto: 1,000,000, but on a CPU with max_minutes as many "
        "as leave the limit 1,000 steps at the working size", ge=1)
    sh_degree: int = setting(3, "spherical-harmonic degree of the colours (0-3)", ge=0, le=3)
    downscale: float | Literal["auto"] = setting(
        "auto", "auto: the largest size that buys ~2,000 steps (or max_steps) in max_minutes, never below 384 px "
        "(docs/train.md); a number trains on plates resized by 1/downscale (2: half size)", ge=1)
    background: Vec3 | None = setting(None, "linear RGB behind the scene while training "
                                      "(absent: black unless the capture defines one)", ge=0, le=1)
    random_background: bool = setting(False, "a random background colour each step (plates with alpha)")
    ssim_weight: float = setting(0.2, "weight of the SSIM term in the photometric loss", ge=0, le=1)
    holdout_every: int = setting(0, "hold out every Nth frame for evaluation (0: train on all)", ge=0)
    exposure: Literal["auto", "affine", "off"] = setting(
        "auto", "per-plate exposure compensation while training: affine learns a colour matrix and offset per "
        "plate, so the scene does not bake in the plates' exposure changes; auto: affine for photographed "
        "captures (a solve, COLMAP, LLFF), off for rendered ones (transforms.json)")


@dataclass(frozen=True)
class SelectSection:
    """[fx.select]: the part of the scene the effects act on (world frame: z-up, metres)."""

    shape: Literal["box", "polygon", "masks"] = setting(
        "box", "box: an oriented box; polygon: a ground polygon extruded from z_min to z_max; "
        "masks: votes from 2D masks drawn on some plates")
    center: Vec3 = setting((0.0, 0.0, 5.0), "box: centre [x, y, z] in metres")
    size: Vec3 = setting((10.0, 10.0, 10.0), "box: full edge lengths [x, y, z] in metres", gt=0)
    rotation: Vec3 = setting((0.0, 0.0, 0.0), "box: rotation [x, y, z], XYZ Euler angles in degrees")
    polygon: tuple[tuple[float, float], ...] = setting((), "polygon: ground points [[x, y], ...] in metres")
    z_min: float = setting(0.0, "polygon: bottom of the extrusion, metres above the ground")
    z_max: float = setting(10.0, "polygon: top of the extrusion, metres above the ground")
    masks: str = setting("fx/masks", "masks: folder of mask images named like the plates", path=True)
    mask_votes: float = setting(0.6, "masks: share of the views seeing a Gaussian whose mask must cover it",
                                gt=0, le=1)

    def check(self) -> None:
        if self.shape == "polygon" and len(self.polygon) < 3:
            raise Invalid("polygon", f"shape 'polygon' needs at least 3 points, got {len(self.polygon)}")
        if self.z_max <= self.z_min:
            raise Invalid("z_max", f"must be above z_min ({self.z_min:g}), got {self.z_max:g}")


@dataclass(frozen=True)
class ColliderBox:
    """One static box of [fx.collapse] colliders: an oriented box like the [fx.select] box."""

    center: Vec3 | None = setting(None, "centre [x, y, z] in metres (required)")
    size: Vec3 | None = setting(None, "full edge lengths [x, y, z] in metres (required)", gt=0)
    rotation: Vec3 = setting((0.0, 0.0, 0.0), "rotation [x, y, z], XYZ Euler angles in degrees")

    def check(self) -> None:
        for key in ("center", "size"):
            if getattr(self, key) is None:
                raise Invalid(key, "is required (a collider is {center = [x, y, z], size = [x, y, z]})")


@dataclass(frozen=True)
class CollapseSection:
    """[fx.collapse]: fracture the selection and let it fall (see splatfx.fx.rigid)."""

    fragments: int = setting(200, "number of pieces the selection is broken into (Voronoi cells)", ge=1)
    fill: bool = setting(True, "make the pieces solid: an opaque skin behind the reconstructed surface and on the "
                               "wall's inner side, and filled fracture faces, textured with the material")
    fill_max: int = setting(60_000, "most Gaussians added for the skin and the fracture faces together", ge=0)
    wall_thickness: float | None = setting(
        None, "thickness of the walls in metres (absent: estimated from the selection, see docs/fx.md)", gt=0)
    backdrop: bool = setting(
        True, "paint what the structure hid once, from the plates, and place it behind it as Gaussians, so the "
              "uncovered background holds still from frame to frame (see docs/fx.md)")
    density: float = setting(2400.0, "material density in kg/m³ (concrete 2400, wood 600)", gt=0)
    trigger: Literal["demolition", "impact", "charge", "none"] = setting(
        "demolition", "demolition: the lowest supports crumble and gravity wins; impact: a projectile "
        "hits trigger_point; charge: an outward impulse from trigger_point; none: only gravity and glue")
    trigger_frame: int | None = setting(None, "frame at which it starts (absent: the first frame)", ge=0)
    trigger_point: Vec3 | None = setting(
        None, "impact or charge point [x, y, z] in metres (absent: the selection's centre)")
    support_height: float = setting(
        0.1, "demolition: pieces centred this low (fraction of the selection's height) are the supports",
        gt=0, le=1)
    impact_direction: Vec3 = setting((1.0, 0.0, 0.0), "impact: direction of the projectile")
    impact_speed: float = setting(25.0, "impact: projectile speed in m/s", ge=0)
    impact_mass: float = setting(2000.0, "impact: projectile mass in kg", gt=0)
    impulse: float = setting(12.0, "charge: outward speed given at the charge point, m/s", ge=0)
    charge_radius: float = setting(5.0, "charge: reach of the blast in metres", gt=0)
    glue_strength: float = setting(
        2.0, "a bond between pieces breaks when it carries this many times the pair's weight more than it does "
        "at rest", ge=0)
    friction: float = setting(0.8, "Coulomb friction between pieces and with the ground", ge=0)
    restitution: float = setting(0.1, "bounciness of contacts, 0-1", ge=0, le=1)
    debris: int = setting(4000, "small solid chips thrown off where pieces break", ge=0)
    debris_size: float = setting(0.04, "size of the smallest debris chips in metres", gt=0)
    debris_size_max: float | None = setting(
        None, "size of the largest debris chunks in metres (absent: 10 × debris_size)", gt=0)
    debris_exponent: float = setting(
        2.5, "power law of the debris sizes: the number of chips larger than s falls as s^-exponent", gt=0)
    dust: int = setting(1500, "dust puffs released where supports crumble and pieces land", ge=0)
    dust_opacity: float = setting(0.55, "opacity of a young dust puff, 0-1 (it thins out as it ages)", gt=0, le=1)
    dust_lifetime: float = setting(6.0, "seconds a dust puff lives, on average", gt=0)
    substeps: int = setting(20, "physics steps per frame", ge=1)
    colliders: tuple[ColliderBox, ...] = setting(
        (), "static boxes the pieces land on besides the ground, world frame: "
        "[{center = [x, y, z], size = [x, y, z], rotation = [x, y, z]}, ...] (rotation optional, XYZ Euler degrees)")
    auto_colliders: bool = setting(
        False, "fit static boxes to the rest of the scene around the selection (a height map of its opaque "
        "Gaussians) so pieces land on neighbouring buildings and ground features")
    collider_margin: float = setting(5.0, "auto_colliders: how far around the selection, in metres", ge=0)
    collider_cell: float = setting(0.5, "auto_colliders: grid cell of the height map, in metres", gt=0)

    def check(self) -> None:
        if not any(self.impact_direction):
            raise Invalid("impact_direction", "must not be [0, 0, 0] (it is the projectile's direction)")


@dataclass(frozen=True)
class SnowSection:
    """[fx.snow]: falling snow (or ash, or anything toxic) over the scene."""

    density: float = setting(0.5, "falling flakes per cubic metre of air", ge=0)
    size: float = setting(0.025, "flake diameter in metres", gt=0)
    speed: float = setting(1.0, "falling speed in m/s", gt=0)
    wind: Vec3 = setting((0.4, 0.1, 0.0), "wind velocity [x, y, z] in m/s")
    turbulence: float = setting(0.3, "random sway, as a fraction of the falling speed", ge=0)
    color: Vec3 = setting((1.0, 1.0, 1.0), "flake colour (display RGB, 0-1)", ge=0)
    settle: bool = setting(True, "flakes that land stay on surfaces and accumulate")
    max_flakes: int = setting(300_000, "refuse settings that would need more flakes than this", ge=1)
    defocus: float = setting(
        0.03, "how soft flakes near the lens are: the blur circle of a flake 1 m from the plate camera, as a "
        "fraction of the image width (the lens is focused on the scene; 0: everything sharp)", ge=0)


@dataclass(frozen=True)
class LightSection:
    """[fx.light]: the key light that shades dust and debris (see splatfx.fx.lighting)."""

    direction: Vec3 | None = setting(
        None, "direction toward the sun [x, y, z] in the world frame, z up (absent: estimated from the "
        "shading of the reconstruction's surfaces)")
    key: float | None = setting(
        None, "the sun's share of the light, 0-1 (absent: estimated; 0 is an overcast sky)", ge=0, le=1)
    sky_color: Vec3 | None = setting(
        None, "colour of the sky's light (display RGB; absent: the reconstruction's bright upper colours)", ge=0)

    def check(self) -> None:
        if self.direction is not None and not any(self.direction):
            raise Invalid("direction", "must not be [0, 0, 0] (it points toward the sun)")


@dataclass(frozen=True)
class FxSection:
    """[fx]: which effects run, in order, and their settings."""

    effects: tuple[Literal["collapse", "snow"], ...] = setting(
        (), 'effects applied by `splatfx run`, in order, e.g. ["collapse", "snow"]')
    select: SelectSection = table(SelectSection, "what the effects act on")
    collapse: CollapseSection = table(CollapseSection, "fracture and rigid-body collapse")
    snow: SnowSection = table(SnowSection, "particle snow")
    light: LightSection = table(LightSection, "the key light on dust and debris")

    def check(self) -> None:
        _require_unique(self.effects, "effects")


@dataclass(frozen=True)
class RenderSection:
    """[render]: the frames and passes rendered from the (animated) scene."""

    camera: Literal["plates", "virtual"] = setting(
        "plates", "plates: the solved plate cameras; virtual: the camera in virtual_camera")
    virtual_camera: str | None = setting(
        None, "virtual: camera path file (transforms.json) inside the shot folder", path=True)
    passes: tuple[Literal["rgba", "depth", "motion", "mask", "id"], ...] = setting(
        ("rgba", "depth", "motion", "mask", "id"), "layers written into each frame's EXR")
    resolution_scale: float = setting(1.0, "output size relative to the plates' size, (0-4]", gt=0, le=4)
    shutter: float = setting(
        180.0, "shutter angle in degrees at the shot's fps (180: open half of each frame, 1/48 s at 24 fps); "
        "moving elements blur along their motion while it is open; 0: no motion blur", ge=0, le=360)
    shutter_samples: int = setting(
        16, "most sub-frame samples per blurred frame (fewer when the motion on screen is short)", ge=2)
    camera_blur: bool = setting(
        True, "the camera's own move while the shutter is open blurs the synthetic elements too, as it blurred "
        "the plate (false for plates without motion blur, e.g. a sequence of stills)")

    def check(self) -> None:
        _require_unique(self.passes, "passes")
        if self.camera == "virtual" and self.virtual_camera is None:
            raise Invalid("virtual_camera", "camera 'virtual' needs the virtual_camera file")


@dataclass(frozen=True)
class RefineSection:
    """[refine]: diffusion clean-up of the rendered frames."""

    model: str | None = setting(
        None, "the model: a folder inside the shot folder (a diffusers pipeline or the built-in sharpening pass, "
        "safetensors), or, where no such folder exists, a Hugging Face hub id owner/name[@revision] (fetched "
        "once into the Hugging Face cache, see docs/refine.md); absent: refine has no model to run", path=True)
    steps: int = setting(
        4, "denoising steps run on pixels of full strength (the built-in sharpening pass needs 1; SD-Turbo-class "
        "models 1-4, others 20 or more)", ge=1)
    strength: float = setting(0.3, "how far the model may move away from the render, 0-1", ge=0, le=1)
    seed: int | None = setting(None, "noise seed, 0 to 2147483647 (absent: [shot] seed)", ge=0, le=EXR_INT_MAX)
    prompt: str = setting("", "what the frames show, for text-conditioned models "
                              "(the built-in sharpening pass has none)")
    negative_prompt: str = setting("", "what to steer away from, for text-conditioned models (with guidance above 1)")
    guidance: float = setting(1.0, "classifier-free guidance scale for text-conditioned models (1: none)", ge=0)
    fill_holes: bool = setting(
        False, "paint the clean plate's holes (mask.holes) with the model instead of the comp's classical inpainting")
    hole_strength: float = setting(1.0, "strength in the holes when fill_holes paints them (1: from pure noise)",
                                   ge=0, le=1)
    feather: float = setting(2.0, "width in pixels of the blend ramp inside the matte edge", ge=0)
    batch: int = setting(4, "frames per model call (fewer when [refine] memory cannot hold them at the frames' size)",
                         ge=1)
    tile: int = setting(
        512, "side in pixels of the overlapping square tiles larger frames are refined in (memory grows with it)",
        ge=64)
    memory: float = setting(
        3.0, "GiB the stage may use for the frames it holds and the model's tiles; the batch is fitted to it",
        gt=0)
    train_steps: int = setting(400, "built-in per-scene sharpening pass (refine --train): training steps", ge=1)
    train_minutes: float | None = setting(
        None, "built-in sharpening pass: stop training (and save) after this many minutes (absent: no limit)", gt=0)
    train_patch: int = setting(64, "built-in sharpening pass: side of the square training patches, pixels", ge=8)
    train_widths: tuple[int, ...] = setting(
        (16, 32, 64), "built-in sharpening pass: UNet channel widths per level (each a multiple of 8)", ge=8)
    train_views: int = setting(
        64, "built-in sharpening pass: plate views its training pairs are rendered from, at most", ge=1)
    train_size: int = setting(
        1024, "built-in sharpening pass: longer side in pixels of its training pairs, at most (plates are "
              "area-averaged to it; smaller still when the pairs would pass 1 GiB)", ge=64)

    def check(self) -> None:
        if not self.train_widths:
            raise Invalid("train_widths", "needs at least one width")
        if any(w % 8 for w in self.train_widths):
            raise Invalid("train_widths", f"must be multiples of 8 (the UNet's 8 norm groups), got "
                                          f"{list(self.train_widths)}")


@dataclass(frozen=True)
class CompSection:
    """[comp]: the composite over the plates and what is written."""

    grain: float = setting(1.0, "strength of the plate-matched film grain on synthetic pixels (0: none)", ge=0)
    light_wrap: float = setting(0.1, "how much plate light bleeds over synthetic edges, 0-1", ge=0, le=1)
    ocio: str | None = setting(
        None, "OCIO config inside the shot folder (absent: plain sRGB / scene-linear)", path=True)
    outputs: tuple[Literal["exr", "png", "mp4"], ...] = setting(
        ("exr", "mp4"), "exr: final frames; png: 8-bit sRGB frames; mp4: the review movie")
    c2pa_cert: str | None = setting(
        None, "PEM certificate chain (signing certificate first, then its intermediates) inside the shot "
        "folder that signs C2PA Content Credentials into the PNG frames and MP4 movies (absent: unsigned)",
        path=True)
    c2pa_key: str | None = setting(None, "PEM private key of c2pa_cert's signing certificate, inside the shot folder",
                                   path=True)
    c2pa_alg: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = setting(
        "es256", "C2PA signature algorithm; must fit the key (EC P-256/384/521: es256/384/512; "
        "RSA: ps256/384/512; Ed25519: ed25519)")
    c2pa_tsa_url: str | None = setting(
        None, "RFC 3161 time-stamp authority URL that counter-signs every C2PA signature (absent: none)")

    def check(self) -> None:
        _require_unique(self.outputs, "outputs")
        if (self.c2pa_cert is None) != (self.c2pa_key is None):
            missing = "c2pa_key" if self.c2pa_key is None else "c2pa_cert"
            raise Invalid(missing, "must be set together with "
                                   f"{'c2pa_cert' if missing == 'c2pa_key' else 'c2pa_key'} to sign the outputs")
        if self.c2pa_tsa_url is not None and not re.match(r"https?://[^\s/]+", self.c2pa_tsa_url):
            raise Invalid("c2pa_tsa_url", f"must be an http:// or https:// URL, got {self.c2pa_tsa_url!r}")


@dataclass(frozen=True)
class FarmSection:
    """[farm]: where the per-frame stages (render, refine, comp) compute their frames; the
    frames are the same bytes whatever is chosen, so changing these reruns nothing."""

    executor: Literal["local", "ray"] = setting(
        "local", "local: processes on this machine; ray: tasks on the Ray cluster at ray_address")
    ray_address: str | None = setting(
        None, "ray: the cluster to join, e.g. \"10.0.0.5:6379\" (absent: RAY_ADDRESS, else one started with "
        "`ray start` on this machine, else a new local one)")
    chunk_size: int | None = setting(
        None, "frames per chunk, the unit sent to a worker and retried (absent: about four chunks per worker)", ge=1)
    workers: int | None = setting(
        None, "local: worker processes (absent: 1, in this process); ray: chunks in flight (absent: the "
        "cluster's CPUs)", ge=1)


@dataclass(frozen=True)
class ShotConfig:
    """The whole of ``shot.toml``."""

    shot: ShotSection = table(ShotSection, "the footage and its numbering")
    solve: SolveSection = table(SolveSection, "cameras")
    train: TrainSection = table(TrainSection, "the Gaussian scene")
    fx: FxSection = table(FxSection, "effects")
    render: RenderSection = table(RenderSection, "rendering")
    refine: RefineSection = table(RefineSection, "refinement")
    comp: CompSection = table(CompSection, "compositing")
    farm: FarmSection = table(FarmSection, "where the per-frame stages run")

    def check(self) -> None:
        trigger = self.fx.collapse.trigger_frame
        frames = self.shot.frames
        if trigger is not None and frames is not None and trigger not in frames:
            raise Invalid("fx.collapse.trigger_frame",
                          f"must lie in the shot's frames {frames}, got {trigger}")
        if not self.shot.plates and self.render.camera == "plates":
            raise Invalid("render.camera", 'a shot without plates ([shot] plates = "") has no plate camera: '
                                           'set camera = "virtual" and its virtual_camera file')


def _require_unique(values: tuple[str, ...], key: str) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise Invalid(key, f"lists {', '.join(map(repr, repeated))} more than once")


# --- loading --------------------------------------------------------------------------------------

def load_config(path: PathLike) -> ShotConfig:
    """Read and validate ``shot.toml``; ConfigError names the file, table and key at fault."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(p, "shot.toml does not exist (create the shot with `splatfx init`)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(p, f"is not valid TOML: {exc}") from None
    return config_from_dict(raw, p)


def config_from_dict(data: Mapping[str, Any], source: PathLike = "shot.toml") -> ShotConfig:
    """Validate already-parsed TOML data; ``source`` names the file in errors."""
    return _parse_table(ShotConfig, data, str(source), ())


def override(settings: T, source: str, **values: Any) -> T:
    """A copy of ``settings`` with ``values`` replaced, each shot.toml setting among them
    validated like the file (then the table's cross-field check).

    The one way a command-line flag overrides shot.toml for one run. ``settings`` is a
    table's dataclass, or a stage config that extends one (:class:`splatfx.recon.train.TrainConfig`),
    whose other fields are replaced as given. ``source`` names the flags in errors (e.g.
    ``"--max-steps"``). None values are ignored (flag not given).
    """
    fields = {f.name: f for f in dataclasses.fields(settings)}
    given = {k: v for k, v in values.items() if v is not None}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise TypeError(f"{type(settings).__name__} has no settings {unknown}")
    hints = typing.get_type_hints(type(settings))
    checked = {}
    for name, value in given.items():
        meta = fields[name].metadata
        if meta.get("table"):
            checked[name] = _parse_table(hints[name], _to_plain(value), source, (name,))
        elif "doc" in meta:
            checked[name] = _convert(_to_plain(value), hints[name], meta, _label(source, (), name))
        else:
            checked[name] = value
    result = dataclasses.replace(settings, **checked)
    _run_check(result, source, ())
    return result


def override_table(config: ShotConfig, table: str, source: str, **values: Any) -> ShotConfig:
    """``config`` with its table ``[table]`` overridden by ``values`` (see :func:`override`)."""
    return dataclasses.replace(config, **{table: override(getattr(config, table), source, **values)})


def check_ranges(settings: Any, source: str) -> None:
    """Check the choices and numeric ranges of the shot.toml settings in ``settings``, a
    table built in code rather than read (e.g. a stage config that extends a table)."""
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if "doc" not in f.metadata or value is None:
            continue
        tp = _union_arm(hints[f.name], value)
        label = _label(source, (), f.name)
        if typing.get_origin(tp) is Literal and value not in typing.get_args(tp):
            raise ConfigError(label, f"must be one of {_choices(typing.get_args(tp))}, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            _check_range(value, f.metadata, label)


def _union_arm(tp: Any, value: Any) -> Any:
    """The type of a union (``X | None``, ``float | Literal["auto"]``) that ``value`` is checked
    against: a choice for a string when the union has one, else its first other type."""
    if typing.get_origin(tp) not in (types.UnionType, typing.Union):
        return tp
    arms = [a for a in typing.get_args(tp) if a is not type(None)]
    choices = [a for a in arms if typing.get_origin(a) is Literal]
    others = [a for a in arms if typing.get_origin(a) is not Literal]
    if choices and (isinstance(value, str) or not others):
        return choices[0]
    return others[0]


def _run_check(obj: Any, source: str, where: tuple[str, ...]) -> None:
    """A table's cross-field ``check()``, its failure as a ConfigError naming the key."""
    try:
        if hasattr(obj, "check"):
            obj.check()
    except Invalid as exc:
        *inner, key = exc.key.split(".")
        raise ConfigError(_label(source, (*where, *inner), key), exc.problem) from None


def _parse_table(cls: type, data: Any, source: str, where: tuple[str, ...]) -> Any:
    """Build dataclass ``cls`` from a TOML table, checking keys, types and ranges."""
    if not isinstance(data, Mapping):
        raise ConfigError(_label(source, where), f"must be a table, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key not in fields:
            raise _unknown(key, isinstance(value, Mapping) or not where, fields, source, where)
    values = {}
    for name, value in data.items():
        f = fields[name]
        if f.metadata.get("table"):
            values[name] = _parse_table(hints[name], value, source, (*where, name))
        else:
            values[name] = _convert(value, hints[name], f.metadata, _label(source, where, name))
    obj = cls(**values)
    _run_check(obj, source, where)
    return obj


def _label(source: str, where: tuple[str, ...], key: str = "") -> str:
    """``"shot.toml [fx.collapse] fragments"``: file, table and key of a setting."""
    parts = [source]
    if where:
        parts.append(f"[{'.'.join(where)}]")
    if key:
        parts.append(key)
    return " ".join(parts)


def _unknown(key: str, is_table: bool, fields: Mapping[str, dataclasses.Field], source: str,
             where: tuple[str, ...]) -> ConfigError:
    """"unknown key; did you mean 'max_steps'?", or for a table "did you mean [fx.collapse]?"."""
    names = [n for n, f in fields.items() if bool(f.metadata.get("table")) == is_table] or list(fields)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    homes = [f"[{i.table}] {key}" for i in iter_settings() if i.key == key] if not where else []
    if homes:
        return ConfigError(_label(source, where, key), f"is outside any table; did you mean {' or '.join(homes)}?")
    if is_table:
        hint = f"; did you mean [{'.'.join((*where, close[0]))}]?" if close else ""
        return ConfigError(_label(source, (*where, key)), f"unknown table{hint} (tables here: {', '.join(names)})")
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(_label(source, where, key), f"unknown key{hint} (keys: {', '.join(names)})")


def _convert(value: Any, tp: Any, meta: Mapping[str, Any], label: str) -> Any:
    """Check ``value`` against type ``tp`` and the range/path rules in ``meta``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        arm = _union_arm(tp, value)
        others = [a for a in args if a is not type(None) and typing.get_origin(a) is not Literal]
        if typing.get_origin(arm) is Literal and others and value not in typing.get_args(arm):
            kind = {int: "an integer", float: "a number"}.get(others[0], _noun(others[0]))
            raise ConfigError(label, f"must be {kind} or {_choices(typing.get_args(arm))}, got {value!r}")
        return _convert(value, arm, meta, label)
    if tp is FrameRange:
        try:
            return FrameRange.parse(value)
        except ValueError as exc:
            raise ConfigError(label, str(exc)) from None
    if dataclasses.is_dataclass(tp):
        return _parse_inline_table(tp, value, label)
    if origin is Literal:
        if not isinstance(value, str) or value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(label, f"must be one of {_choices(args)}, got {value!r}{hint}")
        return value
    if origin is tuple:
        return _convert_array(value, args, meta, label)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(label, f"must be true or false, got {_describe(value)}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(label, f"must be an integer, got {_describe(value)}")
        _check_range(value, meta, label)
        if not TOML_INT_MIN <= value <= TOML_INT_MAX:
            raise ConfigError(label, f"must be a 64-bit integer (at most {TOML_INT_MAX} in size), got {value}")
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(label, f"must be a number, got {_describe(value)}")
        if not math.isfinite(value):
            raise ConfigError(label, f"must be a finite number, got {value}")
        return _check_range(float(value), meta, label)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(label, f"must be a string, got {_describe(value)}")
        if meta.get("path") and not (value == "" and meta.get("empty_ok")):
            _check_path(value, bool(meta.get("absolute_ok")), label)
        return value
    raise TypeError(f"{label}: the schema uses an unsupported type {tp!r}")


def _parse_inline_table(cls: type, data: Any, label: str) -> Any:
    """One table inside an array (e.g. an entry of [fx.collapse] colliders) as dataclass ``cls``."""
    if not isinstance(data, Mapping):
        raise ConfigError(label, f"must be a table, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{label} {key}", f"unknown key{hint} (keys: {', '.join(fields)})")
    obj = cls(**{key: _convert(value, hints[key], fields[key].metadata, f"{label} {key}") for key, value in data.items()})
    try:
        if hasattr(obj, "check"):
            obj.check()
    except Invalid as exc:
        raise ConfigError(f"{label} {exc.key}", exc.problem) from None
    return obj


def _convert_array(value: Any, args: tuple[Any, ...], meta: Mapping[str, Any], label: str) -> tuple:
    """A TOML array as a tuple: ``tuple[T, ...]`` of any length or ``tuple[A, B, C]`` exactly."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(label, f"must be an array, got {_describe(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
        item_types = [args[0]] * len(value)
    else:
        if len(value) != len(args):
            raise ConfigError(label, f"must be an array of {len(args)} {_noun(args[0])}, "
                                     f"got {len(value)} item{'s' if len(value) != 1 else ''}")
        item_types = list(args)
    return tuple(_convert(v, t, meta, f"{label}[{i}]") for i, (v, t) in enumerate(zip(value, item_types)))


def _check_range(value: float, meta: Mapping[str, Any], label: str) -> Any:
    ge, gt, le = meta.get("ge"), meta.get("gt"), meta.get("le")
    ok = (ge is None or value >= ge) and (gt is None or value > gt) and (le is None or value <= le)
    if ok:
        return value
    integer = isinstance(value, int)
    if integer and le is None and gt is None and ge in (0, 1):
        need = "a positive integer" if ge == 1 else "a non-negative integer (0 or more)"
    elif le is not None and (ge is not None or gt is not None):
        low = ge if ge is not None else gt
        need = f"between {low:g} and {_bound(le)}" if ge is not None else f"above {low:g} and at most {_bound(le)}"
    elif le is not None:
        need = f"at most {_bound(le)}"
    elif gt is not None:
        need = f"greater than {gt:g}"
    else:
        need = f"at least {ge:g}"
    raise ConfigError(label, f"must be {need}, got {value!r}")


def _bound(limit: float) -> str:
    """A range limit as written in shot.toml (2147483647, not 2.14748e+09)."""
    return str(limit) if isinstance(limit, int) else f"{limit:g}"


def _check_path(value: str, absolute_ok: bool, label: str) -> None:
    """Relative paths must stay inside the shot folder; absolute ones only where allowed."""
    if not value:
        raise ConfigError(label, "must not be empty")
    if _is_absolute(value):
        if not absolute_ok:
            raise ConfigError(label, f"must be relative to the shot folder, got the absolute path {value!r}")
        return
    if ntpath.splitdrive(value)[0]:  # "C:x" is relative to drive C's current folder on Windows
        raise ConfigError(label, f"must be relative to the shot folder without a drive, got {value!r}")
    if any(norm(value).split(sep)[0] == ".." for norm, sep in ((posixpath.normpath, "/"), (ntpath.normpath, "\\"))):
        raise ConfigError(label, f"must stay inside the shot folder, got {value!r}")


def _is_absolute(value: str) -> bool:
    """Absolute under POSIX or Windows rules; a leading ``\\`` (the current drive's root) and ``~`` count too."""
    return (PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute()
            or value.startswith(("\\", "~")))


def _choices(args: tuple[Any, ...]) -> str:
    return ", ".join(repr(a) for a in args)


def _noun(tp: Any) -> str:
    return {float: "numbers", int: "integers", str: "strings"}.get(tp, "items")


def _describe(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)
    return f"{value!r} ({kind})"


# --- saving ---------------------------------------------------------------------------------------

def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass (the whole config or one table) as plain TOML data; None values are left out."""
    return _to_plain(config)


def _to_plain(value: Any) -> Any:
    if isinstance(value, FrameRange):
        return value.to_toml()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) is not None}
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    return value


def dumps_config(config: ShotConfig) -> str:
    """shot.toml text for ``config``: every key written (defaults included), an unset
    optional key as a comment, and short arrays on one line (``center = [0.0, 0.0, 5.0]``)."""
    lines: list[str] = []
    _emit_table(config, (), lines)
    return _HEADER + "\n".join(lines).rstrip("\n") + "\n"


def _emit_table(section: Any, where: tuple[str, ...], lines: list[str]) -> None:
    """Append ``[where]`` with its keys, then its sub-tables, as TOML lines."""
    fields = dataclasses.fields(section)
    tables = [f for f in fields if f.metadata.get("table")]
    if where:
        lines.append(f"[{'.'.join(where)}]")
    for f in fields:
        if f in tables:
            continue
        value = getattr(section, f.name)
        if value is None:
            lines.append(f"# {f.name} (optional, unset): {f.metadata['doc']}")
        else:
            lines.append(f"{f.name} = {toml_value(_to_plain(value))}")
    if where:
        lines.append("")
    for f in tables:
        _emit_table(getattr(section, f.name), (*where, f.name), lines)


def toml_value(value: Any) -> str:
    """A plain value as TOML text (tomli_w's), an array folded onto one line when that
    still reads back as the same value; an array of tables as inline tables."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return "[" + ", ".join("{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in item.items()) + "}"
                               for item in value) + "]"
    text = tomli_w.dumps({"k": value}).strip().split(" = ", 1)[1]
    if isinstance(value, list) and "\n" in text:
        folded = re.sub(r"\s*\n\s*", " ", text).replace("[ ", "[").replace(", ]", "]")
        if tomllib.loads(f"k = {folded}") == {"k": value}:
            return folded
    return text


def save_config(config: ShotConfig, path: PathLike) -> None:
    """Write ``config`` to ``path`` atomically (a reader sees the old file or the new one)."""
    write_text_atomic(path, dumps_config(config))


# --- introspection (docs, help) -------------------------------------------------------------------

@dataclass(frozen=True)
class SettingInfo:
    """One documented key: its table, name, type, default and meaning."""

    table: str
    key: str
    type: str
    default: Any
    doc: str


def iter_settings(cls: type = ShotConfig, where: tuple[str, ...] = ()) -> Iterator[SettingInfo]:
    """Every key of the schema, table by table, in declaration order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("table"):
            yield from iter_settings(hints[f.name], (*where, f.name))
        else:
            yield SettingInfo(".".join(where), f.name, _type_name(hints[f.name]), f.default, f.metadata["doc"])


def table_name(cls: type, within: type = ShotConfig, where: tuple[str, ...] = ()) -> str:
    """The shot.toml name of table ``cls``, e.g. ``"fx.collapse"`` for CollapseSection."""
    hints = typing.get_type_hints(within)
    for f in dataclasses.fields(within):
        if f.metadata.get("table"):
            if hints[f.name] is cls:
                return ".".join((*where, f.name))
            with contextlib.suppress(LookupError):
                return table_name(cls, hints[f.name], (*where, f.name))
    raise LookupError(f"{cls.__name__} is no table of shot.toml")


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        name = " or ".join(_type_name(a) for a in args if a is not type(None))
        return f"{name} (optional)" if type(None) in args else name
    if origin is Literal:
        return "/".join(f'"{a}"' for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"array of {_type_name(args[0])}"
        return f"array of {len(args)} {_type_name(args[0])}"
    if tp is FrameRange:
        return '"START-END"'
    if dataclasses.is_dataclass(tp):
        return "table {" + ", ".join(f.name for f in dataclasses.fields(tp)) + "}"
    return {bool: "bool", int: "int", float: "float", str: "string"}.get(tp, str(tp))
