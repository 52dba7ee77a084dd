"""The shot folder: where each stage's files live, and the shot's settings.

::

    myshot/
      shot.toml  plates/  solve/  scene/  fx/  render/  refine/  comp/  manifest.json
      proxy/0.5/render/  proxy/0.5/refine/  proxy/0.5/comp/       (with [shot] proxy = 0.5)

A :class:`Shot` is the folder plus its validated :class:`~splatfx.shot.config.ShotConfig`.
Stages ask it for paths (never build them by hand) and open the plates through it,
so the frame numbering in ``[shot] frames`` is applied the same way everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

from splatfx.shot.config import (FrameRange, ShotConfig, ShotSection, config_from_dict, config_to_dict, load_config,
                             override_table, save_config)
from splatfx.core.atomic import write_text_atomic
from splatfx.core.errors import ConfigError, InputError
from splatfx.io.plates import (DEFAULT_START_FRAME, ImagePlates, Plates, VideoPlates, open_plates,
                               undecodable_frames)
from splatfx.core.progress import track

PathLike = str | os.PathLike[str]

SHOT_TOML = "shot.toml"
MANIFEST_JSON = "manifest.json"
#: What ``splatfx init`` did to video plates (rotation, frame mapping); see docs/io.md.
PLATES_JSON = "plates.json"
#: Hidden folder for splatfx's own bookkeeping (the file-hash cache).
STATE_DIR = ".splatfx"
#: The stage folders, in pipeline order.
STAGE_DIRS = ("plates", "solve", "scene", "fx", "render", "refine", "comp")
#: The folder of the proxies' frames (``proxy/0.5/render/`` …) and the mark of their stage names.
PROXY_DIR = "proxy"
PROXY_MARK = "@proxy-"
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
    def plates_report(self) -> Path:
        """``plates.json``: for video plates, how ``splatfx init`` read them (orientation,
        depth, which source frame each frame shows, what was dropped or doubled)."""
        return self.root / PLATES_JSON

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
    def scene_ply(self) -> Path:
        """``scene/scene.ply``: the trained scene every effect starts from."""
        return self.scene_dir / "scene.ply"

    @property
    def fx_dir(self) -> Path:
        return self.root / "fx"

    # --- working size: full, or a proxy ---------------------------------------------------------
    @property
    def proxy(self) -> float:
        """``[shot] proxy``: the fraction of full size render, refine and comp work at (1: full)."""
        return self.config.shot.proxy

    @property
    def is_proxy(self) -> bool:
        return self.proxy != 1.0

    def with_proxy(self, proxy: float | None) -> Shot:
        """The same shot at ``proxy`` (``--proxy``; None: as ``[shot] proxy`` says)."""
        if proxy is None:
            return self
        return self.with_config(override_table(self.config, "shot", "--proxy", proxy=proxy))

    @property
    def proxy_dir(self) -> Path:
        """Where this proxy's frames live: ``proxy/<proxy>/`` (e.g. ``proxy/0.5/``), holding its
        own ``render/``, ``refine/`` and ``comp/``; the shot folder itself at full size. No
        full-size folder contains another size's frames, so hashing ``render/`` or ``refine/``
        (the comp's inputs) never counts a proxy's, and each size keeps its frames."""
        return self.root / PROXY_DIR / proxy_label(self.proxy) if self.is_proxy else self.root

    def stage_name(self, stage: str) -> str:
        """The name a per-frame stage (render, refine, comp) runs and is recorded under at this
        size: ``render`` at full size, ``render@proxy-0.5`` at proxy 0.5. Each size has its own
        manifest records, frame ledger and lock, so switching proxy on and off redoes nothing."""
        return f"{stage}{PROXY_MARK}{proxy_label(self.proxy)}" if self.is_proxy else stage

    def plate_size(self) -> tuple[int, int]:
        """The plates' (width, height); without plates, ``[shot] size``."""
        if not self.has_plates:
            width, height = self.config.shot.size  # required by the config check without plates
            return width, height
        with self.open_plates() as plates:
            return plates.width, plates.height

    def scaled(self, full: tuple[int, int]) -> tuple[int, int]:
        """A full-size (width, height) at this proxy (each side rounded, at least 1)."""
        return proxy_size(full, self.proxy)

    def render_size(self, *, full: bool = False) -> tuple[int, int]:
        """The render's (width, height): the plates' size × ``[render] resolution_scale`` ×
        ``[shot] proxy`` (``full``: without the proxy). The proxy multiplies the scale."""
        width, height = self.plate_size()
        scale = self.config.render.resolution_scale
        size = max(1, round(width * scale)), max(1, round(height * scale))
        return size if full else self.scaled(size)

    def size_figures(self, full: tuple[int, int]) -> dict[str, object]:
        """A stage's size for its manifest figures: ``size`` (what it worked at), ``proxy`` and
        ``full_size`` (the size at proxy 1)."""
        return {"size": list(self.scaled(full)), "proxy": self.proxy, "full_size": list(full)}

    @property
    def render_dir(self) -> Path:
        """``render/`` (a proxy's: ``proxy/<proxy>/render/``)."""
        return self.proxy_dir / "render"

    @property
    def refine_dir(self) -> Path:
        """``refine/`` (a proxy's: ``proxy/<proxy>/refine/``)."""
        return self.proxy_dir / "refine"

    @property
    def comp_dir(self) -> Path:
        """``comp/`` (a proxy's: ``proxy/<proxy>/comp/``)."""
        return self.proxy_dir / "comp"

    @property
    def refine_model_dir(self) -> Path:
        """``refine/``, whatever the proxy: the refiner's model and training, which do not
        depend on the frames' size."""
        return self.root / "refine"

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
        """``render/frame.####.exr``: the render's multi-layer EXR of ``frame`` (at a proxy, in
        ``proxy/<proxy>/render/``, as are the refined and comp frames)."""
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
    def has_plates(self) -> bool:
        """False for a shot without footage (``[shot] plates = ""``, started from a capture
        with ``splatfx init --scene``): its size and frames are ``[shot] size`` and ``frames``."""
        return bool(self.config.shot.plates)

    @property
    def plates_path(self) -> Path:
        """Where the footage is: folder, sequence pattern or video file."""
        self._require_plates()
        return self.path(self.config.shot.plates, confined=False)

    def _require_plates(self) -> None:
        """ConfigError, in one line, when the shot has no plates to read."""
        if not self.has_plates:
            raise ConfigError(f"{self.toml_path} [shot] plates",
                              "is empty: this shot has no plates (it was started from a capture with "
                              "`splatfx init --scene`), so there is no footage to read; it renders through "
                              "its virtual camera ([render] virtual_camera)")

    def open_plates(self) -> Plates:
        """The plates numbered as the shot's frames, ``[shot] skip_frames`` left out as gaps;
        ConfigError if ``[shot] frames`` disagrees, or when the shot has no plates."""
        self._require_plates()
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

    def plate_gaps(self) -> list[int]:
        """Frames of the shot's range that have no plate: files missing from a numbered
        sequence, or ``[shot] skip_frames``. Render, refine and comp skip them; the comp's
        movies hold the frame before each gap over it (docs/render_comp.md). None without plates."""
        if not self.has_plates:
            return []
        with self.open_plates() as plates:
            return [f for f in self.frames if f not in plates]


def proxy_label(proxy: float) -> str:
    """A proxy as it appears in folder and stage names: ``0.5``, ``0.25``."""
    return f"{proxy:g}"


def proxy_size(full: tuple[int, int], proxy: float) -> tuple[int, int]:
    """``full`` (width, height) scaled by ``proxy``, each side rounded and at least 1."""
    return max(1, round(full[0] * proxy)), max(1, round(full[1] * proxy))


def describe_size(figures: dict) -> str | None:
    """``1536x1152 (proxy 0.5 of 3072x2304)``, ``3072x2304``, from a stage's figures (None
    when they state no size)."""
    size = figures.get("size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2):
        return None
    text = f"{size[0]}x{size[1]}"
    proxy, full = figures.get("proxy"), figures.get("full_size")
    if isinstance(proxy, (int, float)) and proxy != 1 and isinstance(full, (list, tuple)) and len(full) == 2:
        text += f" (proxy {proxy:g} of {full[0]}x{full[1]})"
    return text


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

def create_shot(root: PathLike, plates: PathLike, *, fps: float | None = None, frames: FrameRange | None = None,
                copy: bool = False, force: bool = False, name: str | None = None,
                skip_bad_frames: bool = False) -> Shot:
    """Make the shot folder ``root`` and its shot.toml for the footage ``plates``.

    The plates are opened (every header checked) and numbered from ``frames.start``
    (default 1001); ``frames`` must then span them exactly. Every frame is decoded once: a
    truncated or corrupt one is refused by name, or with ``skip_bad_frames`` left out as a
    gap in the frame numbers (``[shot] skip_frames``, reported as a SkippedFrameWarning).
    They are referenced by their absolute path, or with ``copy`` copied (never moved) into
    ``root/plates/`` and made read-only. An existing shot.toml or plates/ is only replaced with ``force``.
    ``fps`` (default: a video's own nominal rate, else 24) numbers a video's frames: each frame
    shows the source frame nearest its time, and ``plates.json`` reports what was dropped or doubled.
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
        rate = float(opened.fps) if fps is None and opened.fps is not None else float(fps or 24.0)
        report = opened.report() if isinstance(opened, VideoPlates) else None
    root.mkdir(parents=True, exist_ok=True)
    setting = _relative_within(source, root / "plates" if copy else root, root)
    if setting is None:
        setting = _copy_plates(files, root, force, single) if copy else os.path.abspath(source)
    if report is not None:
        write_text_atomic(root / PLATES_JSON, json.dumps({**report, "source": os.path.abspath(source),
                                                               "skipped_frames": list(skipped)}, indent=1) + "\n")
    elif force:
        (root / PLATES_JSON).unlink(missing_ok=True)  # a report of earlier video plates
    section = ShotSection(name=name or Path(os.path.abspath(root)).name, fps=rate, frames=frames,
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
