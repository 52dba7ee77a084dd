"""The shot's camera for compositors: a Nuke ``.chan`` file and a ``.nk`` script.

``.chan`` (Nuke's "import chan file"): one line per frame,
``frame tx ty tz rx ry rz vfov``: the camera's position in metres, its rotation in degrees
for Nuke's default rotation order ZXY (``R = Ry·Rx·Rz``, camera looking down −z with y up),
and the vertical angle of view in degrees (Nuke derives the focal length from it and the
Camera's vertical aperture). Nuke's 3D world is **y up**, so the shot's world frame (z up)
is turned into it: ``(x, y, z) -> (x, z, −y)`` (:data:`Z_UP_TO_Y_UP`). In z up, every level
camera would sit at ZXY's gimbal lock (rx = 90°).

The ``.nk`` holds a Camera3 node with the same animation baked in as curves (what "import
chan file" makes), focal length and apertures in mm and the principal point as a window
offset; Read nodes for the plates (through a frame-numbered folder of links beside the
script when the plates are not numbered by frame) and for ``render/frame.####.exr`` with its
layers declared; and the merges that rebuild splatfx's comp (``splatfx.comp.stage``): the
clean pass keyed into the plate through the grown structure footprint, then the effect's
``fx`` layer over it with ``mask.synthetic`` as alpha. Light wrap and grain are left to the
artist (LightWrap, Grain2).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from splatfx.core.atomic import write_text_atomic
from splatfx.core.camera import Camera
from splatfx.core.errors import ConfigError, InputError, OutputError
from splatfx.export import ExportRequest, ExportResult
from splatfx.export.world import ShotCamera, export_cameras, world_similarity
from splatfx.io.plates import ImagePlates
from splatfx.shot.folder import Shot

#: Nuke's default rotation order; scipy's extrinsic "zxy" is R = Ry·Rx·Rz (z applied first).
ROT_ORDER = "ZXY"
_GL = np.diag([1.0, -1.0, -1.0])
#: The shot's world (z up) to Nuke's (y up): a −90° turn about x.
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def chan_rows(cameras: list[Camera], frames: list[int]) -> np.ndarray:
    """(N, 8) rows ``frame tx ty tz rx ry rz vfov`` for world-frame cameras, in Nuke's y-up world."""
    rows = []
    for frame, camera in zip(frames, cameras):
        c2w = Z_UP_TO_Y_UP @ camera.R.T @ _GL  # camera-to-world rotation, Nuke axes and world
        rz, rx, ry = Rotation.from_matrix(c2w).as_euler("zxy", degrees=True)
        vfov = math.degrees(camera.fov_y())
        rows.append([frame, *(Z_UP_TO_Y_UP @ camera.center), rx, ry, rz, vfov])
    return np.array(rows, np.float64)


def chan_rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """The camera-to-world rotation (Nuke axes) of ``.chan`` angles in degrees, order ZXY."""
    return Rotation.from_euler("zxy", [rz, rx, ry], degrees=True).as_matrix()


def write_chan(path: Path, rows: np.ndarray) -> None:
    lines = [f"{int(r[0])}\t" + "\t".join(f"{v:.9g}" for v in r[1:]) for r in rows]
    write_text_atomic(path, "\n".join(lines) + "\n")


def read_chan(path: str | os.PathLike[str]) -> np.ndarray:
    """The rows of a ``.chan`` file (N, 7 or 8); InputError naming the file and line when malformed."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            raise InputError(path, f"line {number}: not numbers: {line.strip()[:60]!r}") from None
        if len(values) not in (7, 8):
            raise InputError(path, f"line {number}: {len(values)} columns, expected 7 or 8")
        rows.append(values)
    return np.array(rows, np.float64).reshape(-1, 8 if rows and len(rows[0]) == 8 else 7)


def nuke_paths(out: Path, shot: Shot) -> tuple[Path, Path]:
    """The ``.chan`` and the ``.nk`` beside it: ``out`` (a .chan) or ``out/<shot>.chan``."""
    if out.suffix.lower() == ".chan":
        chan = out
    elif out.suffix and not out.is_dir():
        raise ConfigError("--out", f"{out}: not a .chan file name (or a folder)")
    else:
        chan = out / f"{shot.name}.chan"
    return chan, chan.with_suffix(".nk")


def export_nuke(request: ExportRequest) -> ExportResult:
    """Write the render camera's ``.chan`` and the ``.nk`` script (``--format chan``)."""
    shot, frames = request.shot, list(request.frames)
    chan, script = nuke_paths(request.out, shot)
    world, _ = world_similarity(shot)
    cameras = export_cameras(shot, request.frames, world)
    camera = cameras[0]
    rows = chan_rows(camera.cameras, frames)
    write_chan(chan, rows)
    plates = _plate_sequence(shot, request, script)
    write_text_atomic(script, nuke_script(shot, request, camera, rows, chan, plates))
    files = [chan, script]
    return ExportResult(files, f"wrote {chan} ({len(rows)} frames, {camera.name} camera) and {script}",
                        {"frames": len(rows), "camera": camera.name})


def _plate_sequence(shot: Shot, request: ExportRequest, script: Path) -> str | None:
    """A path Nuke's Read can take for the plates: the shot's own when numbered by frame or a
    movie, else frame-numbered links in ``<script stem>_plates/``; None without plates."""
    try:
        plates_cm = shot.open_plates()
    except InputError:
        return None
    with plates_cm as plates:
        if not isinstance(plates, ImagePlates):
            return str(Path(plates.source).resolve())
        files = {f: plates.path(f).resolve() for f in request.frames}
    folder = script.parent / f"{script.stem}_plates"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for frame, source in files.items():
            link = folder / f"plate.{frame:04d}{source.suffix.lower()}"
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source)
    except OSError as exc:
        raise OutputError(folder, f"cannot write the plate links: {exc.strerror or exc}") from None
    suffix = next(iter(files.values())).suffix.lower()
    return str((folder / f"plate.####{suffix}").resolve())


def _curve(values: np.ndarray, first: int) -> str:
    return "{curve x%d %s}" % (first, " ".join(f"{v:.9g}" for v in values))


def nuke_script(shot: Shot, request: ExportRequest, camera: ShotCamera, rows: np.ndarray, chan: Path,
                plates: str | None) -> str:
    """The ``.nk`` text (Nuke's TCL syntax; one node per block, inputs from the stack)."""
    first, last = request.frames.start, request.frames.end
    cam0 = camera.cameras[0]
    width, height = cam0.width, cam0.height
    sw = request.sensor_width_mm
    focal = np.array([c.fx * sw / c.width for c in camera.cameras])
    vap = focal[0] * height / cam0.fy
    win = (2.0 * (cam0.cx - width / 2.0) / width, -2.0 * (cam0.cy - height / 2.0) / height)
    render = str((shot.render_dir / "frame.####.exr").resolve())
    lines = [
        f"# splatfx export of shot {shot.name}: frames {first}-{last}; Nuke world y up (the shot's z up turned: x, z, -y), metres",
        "Root {", " inputs 0", f" name {_quote(str(chan.with_suffix('.nk').resolve()))}",
        f" first_frame {first}", f" last_frame {last}", f" fps {shot.config.shot.fps:g}",
        f' format "{width} {height} 0 0 {width} {height} 1 splatfx_{shot.name}"', "}",
        "add_layer {fx fx.red fx.green fx.blue}",
        "add_layer {clean clean.red clean.green clean.blue clean.alpha}",
        "add_layer {mask mask.synthetic mask.structure mask.holes}",
        "add_layer {matte matte.scene matte.fragment matte.fill matte.debris matte.dust matte.snow}",
        "add_layer {motion motion.u motion.v}",
        "Camera3 {", " inputs 0", f" rot_order {ROT_ORDER}",
        " translate {" + " ".join(_curve(rows[:, k], first) for k in (1, 2, 3)) + "}",
        " rotate {" + " ".join(_curve(rows[:, k], first) for k in (4, 5, 6)) + "}",
        f" focal {{{_curve(focal, first)}}}", f" haperture {sw:.9g}", f" vaperture {vap:.9g}",
        f" win_translate {{{win[0]:.9g} {win[1]:.9g}}}",
        f" label {_quote('chan: ' + str(chan.resolve()))}",
        f" name Camera_{camera.name}", "}", "set Ncamera [stack 0]",
        "Read {", " inputs 0", f" file {_quote(render)}", f" format \"{width} {height} 0 0 {width} {height} 1 \"",
        f" first {first}", f" last {last}", f" origfirst {first}", f" origlast {last}", " origset true",
        " colorspace linear", " name Read_render", "}", "set Nrender [stack 0]",
    ]
    if plates is not None:
        lines += ["Read {", " inputs 0", f" file {_quote(plates)}", f" first {first}", f" last {last}",
                  f" origfirst {first}", f" origlast {last}", " origset true", " colorspace sRGB",
                  " name Read_plate", "}"]
    else:  # a virtual camera's shot: no plate, the render is the picture
        lines += ["Constant {", " inputs 0", " channels rgba", " color {0 0 0 0}", " name NoPlate", "}"]
    lines += [
        "set Nplate [stack 0]",
        # clean pass over the plate, keyed in through the structure's footprint (grown 2 px, softened)
        "push $Nrender", "Shuffle {", " in clean", " name Clean", "}", "set Nclean [stack 0]",
        "push $Nplate", "push $Nclean", "Merge2 {", " inputs 2", " operation over", " name CleanOverPlate", "}",
        "set Ncleanplate [stack 0]",
        "push $Nrender", "Shuffle {", " in mask", " red mask.structure", " green mask.structure",
        " blue mask.structure", " alpha mask.structure", " name Footprint", "}",
        "Dilate {", " channels rgba", " size 2", " name FootprintGrow", "}",
        "Blur {", " channels rgba", " size 2", " name FootprintSoften", "}", "set Nfootprint [stack 0]",
        # Keymix: input 0 = B (plate), 1 = A (clean), 2 = mask
        "push $Nfootprint", "push $Ncleanplate", "push $Nplate", "Keymix {", " inputs 3",
        " maskChannel rgba.alpha", " name Background", "}", "set Nbackground [stack 0]",
        # the effect's own colour (premultiplied) with mask.synthetic as alpha, over the background
        "push $Nrender", "Shuffle {", " in fx", " in2 mask", " alpha mask.synthetic", " name FX", "}",
        "set Nfx [stack 0]",
        "push $Nfx", "push $Nbackground", "Merge2 {", " inputs 2", " operation over", " name Comp", "}",
        "Viewer {", f" frame_range {first}-{last}", " name Viewer1", "}",
    ]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "/").replace('"', '\\"') + '"'
