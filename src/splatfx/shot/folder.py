"""The shot folder: where each stage's files live, and the shot's settings.

::

    myshot/
      shot.toml  plates/  solve/  scene/  fx/  render/  refine/  comp/  manifest.json

A :class:`Shot` is the folder plus its validated :class:`~splatfx.shot.config.ShotConfig`.
Stages ask it for paths (never build them by hand) and open the plates through it,
so the frame numbering in ``[shot] frames`` is applied the same way everywhere.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

from splatfx.shot.config import (FrameRange, ShotConfig, ShotSection, config_from_dict, config_to_dict, load_config,
                             save_config)
from splatfx.core.errors import ConfigError, InputError
from splatfx.io.plates import DEFAULT_START_FRAME, ImagePlates, Plates, open_plates, undecodable_frames
from splatfx.core.progress import track

PathLike = str | os.PathLike[str]

SHOT_TOML = "shot.toml"
MANIFEST_JSON = "manifest.json"
#: Hidden folder for splatfx's own bookkeeping (the file-hash cache).
STATE_DIR = ".splatfx"
#: The stage folders, in pipeline order.
STAGE_DIRS = ("plates", "solve", "scene", "fx", "render", "refine", "comp")
#: The solve folder's layout (a solve writes it the same way into any folder).
SCENE_JSON = "scene.json"
REPORT_JSON = "report.json"
SPARSE_MODEL = "sparse/0"
DISTORTED_MODEL = "distorted/sparse/0"


class Shot:
    """A shot folder and its settings; paths of every stage's folder and files."""

    def __init__(self, root: PathLike, config: ShotConfig) -> None:
        self.root = Path(root)
        self.config = config

    # --- opening and saving ---------------------------------------------------------------------
    @classmethod
    def open(cls, path: PathLike) -> Shot:
        """Open the shot folder ``path`` (or its ``shot.toml``), validating the settings."""
        p = Path(path)
        root = p.parent if p.name == SHOT_TOML and p.is_file() else p
        if not root.is_dir():
            raise InputError(root, "shot folder does not exist (create it with `splatfx init`)")
        toml = root / SHOT_TOML
        if not toml.is_file():
            raise InputError(root, f"is not a shot folder: it has no {SHOT_TOML} (create it with `splatfx init`)")
        return cls(root, load_config(toml))

    def save(self) -> None:
        """Write the settings to ``shot.toml`` atomically."""
        save_config(self.config, self.toml_path)

    def with_config(self, config: ShotConfig) -> Shot:
        """The same folder with other settings (e.g. command-line overrides for one run)."""
        return Shot(self.root, config)

    # --- paths ----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.shot.name or self.root.resolve().name

    @property
    def toml_path(self) -> Path:
        return self.root / SHOT_TOML

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_JSON

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def plates_dir(self) -> Path:
        """``plates/``: copied footage (empty or absent when the plates are referenced)."""
        return self.root / "plates"

    @property
    def solve_dir(self) -> Path:
        return self.root / "solve"

    @property
    def scene_dir(self) -> Path:
        return self.root / "scene"

    @property
    def fx_dir(self) -> Path:
        return self.root / "fx"

    @property
    def render_dir(self) -> Path:
        return self.root / "render"

    @property
    def refine_dir(self) -> Path:
        return self.root / "refine"

    @property
    def comp_dir(self) -> Path:
        return self.root / "comp"

    # --- files in the stage folders -------------------------------------------------------------
    @property
    def scene_json(self) -> Path:
        """``solve/scene.json``: the solve-to-world frame (:mod:`splatfx.shot.scene_frame`)."""
        return self.solve_dir / SCENE_JSON

    @property
    def solve_report(self) -> Path:
        """``solve/report.json``: what the solve did, and which image is which frame."""
        return self.solve_dir / REPORT_JSON

    @property
    def sparse_model(self) -> Path:
        """``solve/sparse/0``: the COLMAP model of the (undistorted) plates."""
        return self.solve_dir / SPARSE_MODEL

    @property
    def distorted_sparse_model(self) -> Path:
        """``solve/distorted/sparse/0``: the COLMAP model with the plates' own lens distortion."""
        return self.solve_dir / DISTORTED_MODEL

    def render_frame(self, frame: int) -> Path:
        """``render/frame.####.exr``: the render's multi-layer EXR of ``frame``."""
        return self.render_dir / f"frame.{frame:04d}.exr"

    def refined_frame(self, frame: int) -> Path:
        """``refine/frame.####.exr``: the refine stage's version of the render of ``frame``."""
        return self.refine_dir / self.render_frame(frame).name

    def comp_frame(self, frame: int, suffix: str) -> Path:
        """``comp/comp.####.<suffix>``: the comp of ``frame`` as ``exr`` or ``png``."""
        return self.comp_dir / f"comp.{frame:04d}.{suffix}"

    def path(self, setting: str, *, confined: bool = True) -> Path:
        """A path from shot.toml (relative to the shot folder unless absolute) as a Path.

        A relative path must stay inside the shot folder once symbolic links are resolved,
        so a link in the folder cannot lead splatfx to read e.g. /etc/passwd (InputError).
        ``confined=False`` for the plates, which may live anywhere (even by absolute path)."""
        p = Path(setting).expanduser()
        if p.is_absolute():
            return p
        if confined:
            confine(self.root / p, self.root)
        return self.root / p

    def relative(self, path: PathLike) -> str:
        """``path`` relative to the shot folder in ``/`` form, or absolute when outside it."""
        absolute = Path(os.path.abspath(path))
        root = Path(os.path.abspath(self.root))
        try:
            return absolute.relative_to(root).as_posix()
        except ValueError:
            return str(absolute)

    # --- plates and frames ----------------------------------------------------------------------
    @property
    def plates_path(self) -> Path:
        """Where the footage is: folder, sequence pattern or video file."""
        return self.path(self.config.shot.plates, confined=False)

    def open_plates(self) -> Plates:
        """The plates numbered as the shot's frames, ``[shot] skip_frames`` left out as gaps;
        ConfigError if ``[shot] frames`` disagrees."""
        frames = self.config.shot.frames
        start = frames.start if frames is not None else DEFAULT_START_FRAME
        plates = open_plates(self.plates_path, start_frame=start, fps=self.config.shot.fps)
        try:
            if frames is not None:
                check_frames(frames, plates, f"{self.toml_path} [shot] frames")
            if self.config.shot.skip_frames:
                plates.leave_out(self.config.shot.skip_frames)
        except InputError:
            plates.close()
            raise
        return plates

    @property
    def frames(self) -> FrameRange:
        """The shot's frame range: ``[shot] frames``, else counted from the plates."""
        if self.config.shot.frames is not None:
            return self.config.shot.frames
        with self.open_plates() as plates:
            return FrameRange(plates.first, plates.last)

    def plate_files(self) -> list[Path]:
        """Every file holding footage (one per frame, or the one video), e.g. to hash them."""
        with self.open_plates() as plates:
            return plate_files(plates)


def plate_files(plates: Plates) -> list[Path]:
    """The files behind ``plates`` in frame order (a video is one file)."""
    if isinstance(plates, ImagePlates):
        return [plates.path(frame) for frame in plates.frames]
    return [Path(plates.source)]


def check_frames(frames: FrameRange, plates: Plates, label: str) -> None:
    """Raise ConfigError (``label``) unless ``frames`` spans exactly the plates' frames."""
    if (plates.first, plates.last) == (frames.start, frames.end):
        return
    span = plates.last - plates.first + 1
    raise ConfigError(label, f"{frames} is {len(frames)} frames but the plates {plates.source} hold "
                             f"{span} ({plates.first}-{plates.last}); give {frames.start}-{frames.start + span - 1} "
                             "or leave the range out")


# --- creating a shot ------------------------------------------------------------------------------

def create_shot(root: PathLike, plates: PathLike, *, fps: float = 24.0, frames: FrameRange | None = None,
                copy: bool = False, force: bool = False, name: str | None = None,
                skip_bad_frames: bool = False) -> Shot:
    """Make the shot folder ``root`` and its shot.toml for the footage ``plates``.

    The plates are opened (every header checked) and numbered from ``frames.start``
    (default 1001); ``frames`` must then span them exactly. Every frame is decoded once: a
    truncated or corrupt one is refused by name, or with ``skip_bad_frames`` left out as a
    gap in the frame numbers (``[shot] skip_frames``, reported as a SkippedFrameWarning).
    They are referenced by their absolute path, or with ``copy`` copied (never moved) into
    ``root/plates/`` and made read-only. An existing shot.toml or plates/ is only replaced with ``force``.
    shot.toml is written last, so a failed init leaves no shot behind.
    """
    root = Path(root)
    toml = root / SHOT_TOML
    if toml.exists() and not force:
        raise InputError(toml, "already exists; pass --force to overwrite it")
    source = Path(plates).expanduser()
    start = frames.start if frames is not None else DEFAULT_START_FRAME
    with open_plates(source, start_frame=start, fps=fps) as opened:
        if frames is not None:
            check_frames(frames, opened, "--frames")
        frames = FrameRange(opened.first, opened.last)
        files = plate_files(opened)  # the skipped frames' files too, so that the numbering stays
        single = opened.kind in ("video", "image")
        skipped = _bad_frames(opened, skip_bad_frames)
    root.mkdir(parents=True, exist_ok=True)
    setting = _relative_within(source, root / "plates" if copy else root, root)
    if setting is None:
        setting = _copy_plates(files, root, force, single) if copy else os.path.abspath(source)
    section = ShotSection(name=name or Path(os.path.abspath(root)).name, fps=float(fps), frames=frames,
                          plates=setting, plates_mode="copy" if copy else "reference", skip_frames=skipped)
    config = config_from_dict(config_to_dict(ShotConfig(shot=section)), toml)  # exactly what a reload gives
    save_config(config, toml)
    return Shot(root, config)


class SkippedFrameWarning(UserWarning):
    """A plate frame that does not decode was left out as a gap (``splatfx init --skip-bad-frames``)."""


def _bad_frames(plates: Plates, skip: bool) -> tuple[int, ...]:
    """Decode every plate once: the frames that fail, each reported as a SkippedFrameWarning
    when ``skip``; otherwise InputError naming the first (and the others' frame numbers)."""
    bad = undecodable_frames(plates)
    if not bad:
        return ()
    if skip and len(bad) < len(plates):
        for frame, exc in bad.items():
            warnings.warn(SkippedFrameWarning(f"skipped frame {frame} (a gap in the frame numbers): {exc}"),
                          stacklevel=3)
        return tuple(bad)
    (first, exc), others = next(iter(bad.items())), list(bad)[1:]
    where = "" if f"frame {first}" in exc.problem else f" (frame {first})"
    also = f"; frames {_listing(others)} do not decode either" if others else ""
    hint = "no frame of the plates decodes" if skip else "pass --skip-bad-frames to leave them out as gaps"
    raise InputError(exc.source, f"{exc.problem}{where}{also}; {hint}")


def _listing(frames: list[int], most: int = 10) -> str:
    """``1003, 1007`` (the first ``most``, then how many more)."""
    shown = ", ".join(str(f) for f in frames[:most])
    return shown + (f" and {len(frames) - most} more" if len(frames) > most else "")


def confine(path: Path, root: Path) -> None:
    """InputError unless ``path``, with every symbolic link resolved, lies inside ``root``."""
    try:
        real, top = path.resolve(), root.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of links
        raise InputError(path, f"cannot be resolved ({exc})") from None
    if real != top and top not in real.parents:
        raise InputError(path, f"leads outside the shot folder (to {real}) through a symbolic link; "
                               "paths in shot.toml must stay inside the shot folder")


def _relative_within(source: Path, folder: Path, root: Path) -> str | None:
    """``source`` relative to ``root`` (``/`` form) if it lies within ``folder``, else None."""
    absolute = Path(os.path.abspath(source))
    try:
        absolute.relative_to(os.path.abspath(folder))
    except ValueError:
        return None
    return absolute.relative_to(os.path.abspath(root)).as_posix()


def _copy_plates(files: Sequence[Path], root: Path, force: bool, single: bool) -> str:
    """Copy ``files`` into ``root/plates/`` (read-only), swapping the folder in whole.

    Returns the shot.toml setting: ``plates``, or ``plates/NAME`` for a video or one image.
    """
    dest = root / "plates"
    if dest.exists() and any(dest.iterdir()) and not force:
        raise InputError(dest, "already holds plates; pass --force to replace them")
    staging = Path(tempfile.mkdtemp(prefix=".plates.tmp.", dir=root))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; plates/ is a normal folder
    old = root / f".plates.old.{uuid.uuid4().hex[:8]}"
    try:
        for f in track(files, "copying plates"):
            target = staging / f.name
            shutil.copy2(f, target)
            os.chmod(target, stat.S_IMODE(target.stat().st_mode) & ~0o222)
        if dest.exists():
            dest.rename(old)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not dest.exists():
            old.rename(dest)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return f"plates/{files[0].name}" if single else "plates"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
