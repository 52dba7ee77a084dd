"""The local web viewer behind ``splatfx view``: a viser server showing a shot in the browser.

What it shows (all in the world frame, z-up metres, when ``solve/scene.json`` exists):

* the reconstruction as real-time Gaussian splats (decimated by opacity × volume when it
  holds more than ``max_splats``, and saying so);
* the plates' cameras as frustums with thumbnails; clicking one (or choosing it in the
  *Plates* panel) looks through it with the plate overlaid at an adjustable opacity;
* the ``[fx.select]`` box as a transform gizmo plus size sliders; every change is written
  back to ``shot.toml`` atomically through the config API;
* a timeline that scrubs and plays the simulated effects frame by frame (from the fx
  caches, through :func:`splatfx.fx.animation.load_animation`);
* buttons that run a stage in a background thread, and the comp frame of the current
  time beside its plate once ``comp/`` holds one.

:class:`ShotViewer` is the whole viewer; its methods (``set_frame``, ``selection_box.move``,
``run_stage``, ``look_through`` …) are what the GUI callbacks call, so scripts and tests
drive it exactly as an artist does.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import ipaddress
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import viser
from PIL import Image as PILImage

from splatfx.shot.config import config_from_dict, config_to_dict, load_config, save_config
from splatfx.core.errors import InputError, SplatfxError
from splatfx.io.formats import FORMATS, read_gaussians
from splatfx.fx.animation import ShotAnimation
from splatfx.core.gaussians import Gaussians
from splatfx.io.images import read_image
from splatfx.core.rotation import quat_to_rotmat
from splatfx.shot.folder import SHOT_TOML, Shot
from splatfx.viewer.content import (STAGES, PlateCamera, comp_frames, display_rgb, fit_image, plate_cameras,
                                    scene_frame, stage_function, thumbnail)
from splatfx.viewer.selection import SelectionBox
from splatfx.viewer.splats import SplatArrays, decimate, display_rows, to_splats

PathLike = str | os.PathLike[str]

#: Splats sent to the browser at most; more are decimated by opacity × volume.
DEFAULT_MAX_SPLATS = 1_000_000
#: Plate cameras drawn at most (evenly spaced through the plates beyond that).
DEFAULT_MAX_CAMERAS = 300
THUMBNAIL_PX = 160  # longest side of a frustum's thumbnail
OVERLAY_PX = 960  # longest side of the plate shown when looking through a camera
PANEL_PX = 480  # longest side of each half of the plate | comp panel
FRUSTUM_RGB = (60, 60, 200)
CURRENT_FRUSTUM_RGB = (255, 120, 0)  # the plate camera of the frame on the timeline


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the viewer ---------------------------------------------------------------------------------------
class ShotViewer:
    """A shot (or a lone ``.ply``/``.splat``/``.spz``) served to the browser with viser.

    ``source``: a :class:`Shot`, a shot folder, its ``shot.toml``, or a Gaussian file.
    ``port`` 0 picks a free port (see :attr:`url`). Stop it with :meth:`stop` (or use it
    as a context manager).
    """

    def __init__(self, source: Shot | PathLike, host: str = "127.0.0.1", port: int = 8080, *,
                 max_splats: int = DEFAULT_MAX_SPLATS, max_cameras: int = DEFAULT_MAX_CAMERAS) -> None:
        if max_splats < 2 or max_cameras < 1:
            raise ValueError(f"need max_splats ≥ 2 and max_cameras ≥ 1, got {max_splats} and {max_cameras}")
        self.shot, self.ply_path = _open_source(source)
        self.max_splats = max_splats
        self.max_cameras = max_cameras
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._play = threading.Event()
        self._jobs = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="splatfx-stage")
        self._running: str | None = None
        self.world_frame = scene_frame(self.shot) if self.shot else None  # solve → world, or None
        self.frame_index = 0
        self.status = "idle"
        self.comp_panel_image: np.ndarray | None = None
        self._plates = None
        self._comp: dict[int, Path] = {}
        self._shot_frames = self.shot.frames if self.shot else None
        self._static_handle: viser.GaussianSplatHandle | None = None
        self._fx_handle: viser.GaussianSplatHandle | None = None
        self.splat_fade = 1.0  # splat opacity factor (below 1 while a plate shows through)

        self.server = viser.ViserServer(host=host, port=port, label="splatfx", verbose=False)
        try:
            self._build()
        except BaseException:
            self.stop()
            raise
        self._player = threading.Thread(target=self._play_loop, name="splatfx-player", daemon=True)
        self._player.start()

    # --- lifecycle ------------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.server.get_host()

    @property
    def port(self) -> int:
        return self.server.get_port()

    @property
    def url(self) -> str:
        """The page's address (``localhost`` when serving on every interface)."""
        host = "localhost" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}/"

    def stop(self) -> None:
        """Stop playing, wait for a running stage, close the plates and the server."""
        self._stop.set()
        self._play.set()
        self._jobs.shutdown(wait=True)
        if self._plates is not None:
            self._plates.close()
        self.server.stop()

    def __enter__(self) -> ShotViewer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- building the page ----------------------------------------------------------------------------
    def _build(self) -> None:
        gui = self.server.gui
        gui.configure_theme(show_share_button=False)  # sharing would tunnel through viser's servers
        # world frame: z-up; solve coordinates (COLMAP/OpenCV, as most 3DGS files): y-down
        self.server.scene.set_up_direction("+z" if self.world_frame is not None else "-y")
        with gui.add_folder("Scene"):
            self.scene_text = gui.add_markdown("")
            if self.world_frame is None:  # no world frame: let the artist say which way is up
                up = gui.add_dropdown("up axis", ("-y", "+y", "+z", "-z", "+x", "-x"), initial_value="-y")
                up.on_update(lambda _: self.server.scene.set_up_direction(up.value))
        self._load_scene()
        with gui.add_folder("Timeline"):
            self._build_timeline()
        self.selection_box: SelectionBox | None = None
        with gui.add_folder("Selection"):
            self._build_selection()
        with gui.add_folder("Plates"):
            self._build_plates()
        with gui.add_folder("Stages"):
            self._build_stages()
        with gui.add_folder("Comp"):
            self.comp_text = gui.add_markdown("")
            self.comp_image = gui.add_image(np.zeros((4, 8, 3), np.uint8), label="plate | comp", visible=False)
        self._comp = comp_frames(self.shot) if self.shot else {}
        self.set_frame(0)
        self._frame_initial_camera()

    def _load_scene(self) -> None:
        """Read the scene and the animation, and send the static splats once."""
        notes = []
        self.animation: ShotAnimation | None = None
        self._dynamic: ShotAnimation | None = None
        scene: Gaussians | None = None
        if self.ply_path is not None:
            scene = read_gaussians(self.ply_path)
            notes.append(f"`{self.ply_path.name}` in its own coordinates")
        else:
            scene, note = self._load_shot_scene()
            notes.append(note)
        self.scene = scene
        means = None if scene is None else scene.means.double().numpy()
        self.world_means = means if self.world_frame is None or means is None else self.world_frame.to_world(means)
        static = scene
        dynamic_peak = 0
        if self.animation is not None and scene is not None:
            keep = np.ones(len(scene), dtype=bool)
            for rows in (self.animation.removed, self.animation.hidden):  # the structure, and the haze it sheds
                if rows is not None:
                    keep[rows] = False
            static = scene[torch.from_numpy(keep)]
            if self.animation.backdrop is not None:  # static: sent once with the scene, not every frame
                static = Gaussians.cat([static, self.animation.backdrop])
            self._dynamic = dataclasses.replace(self.animation, scene=scene[0:0], removed=None, backdrop=None,
                                                hidden=None, floaters=None)  # no scene rows to index
            dynamic_peak = _peak_dynamic(self.animation)
        self.dynamic_budget = min(dynamic_peak, self.max_splats // 2)
        static_budget = self.max_splats - self.dynamic_budget
        self.static_total = 0 if static is None else len(static)
        self.static_shown = 0
        if static is not None and len(static):
            shown = decimate(static, static_budget)
            self.static_shown = len(shown)
            splats = to_splats(shown, self.world_frame)
            self._extent = _extent(splats.centers)
            self._static_opacities = splats.opacities
            self._static_handle = self._add_splats("/scene/static", splats)
        else:
            self._static_handle = None
            self._extent = (np.zeros(3), 1.0)
        self.dynamic_shown = 0
        self.dynamic_total = 0
        self.dynamic_splats: SplatArrays | None = None
        self.dynamic_element: np.ndarray | None = None
        self._scene_notes = notes
        self._update_scene_text()

    def _load_shot_scene(self) -> tuple[Gaussians | None, str]:
        from splatfx.fx.animation import load_animation, scene_path

        path = scene_path(self.shot)
        if not path.is_file():
            return None, f"no `{self.shot.relative(path)}` yet (run `splatfx train`)"
        scene = read_gaussians(path)
        where = "world frame (z-up, metres)" if self.world_frame is not None else "solve coordinates (no scene.json)"
        if self.world_frame is None or not self.shot.config.fx.effects:
            return scene, f"static scene in {where}"
        try:
            self.animation = load_animation(self.shot, scene)
        except Exception as exc:  # noqa: BLE001 - stale or missing caches must not stop the viewer
            return scene, f"static scene in {where}; effects not loaded ({type(exc).__name__}: {exc})"
        return scene, f"{' + '.join(self.shot.config.fx.effects)} in {where}"

    def _reload_animation(self) -> None:
        """After an fx stage: drop the old splats and load the scene and animation again."""
        with self._lock:
            for handle in (self._static_handle, self._fx_handle):
                if handle is not None:
                    handle.remove()
            self._fx_handle = None
            self._load_scene()
            self.set_frame(min(self.frame_index, self.frame_count - 1))
            if self.selection_box is not None:
                self.selection_box.refresh_count()

    def _add_splats(self, name: str, splats: SplatArrays) -> viser.GaussianSplatHandle:
        return self.server.scene.add_gaussian_splats(name, centers=splats.centers, covariances=splats.covariances,
                                                     rgbs=splats.rgbs, opacities=splats.opacities * self.splat_fade)

    def _update_scene_text(self) -> None:
        shown = self.static_shown + self.dynamic_shown
        total = self.static_total + self.dynamic_total
        lines = [f"showing **{shown:,}** splats"]
        if shown < total:
            lines = [f"showing **{shown:,} of {total:,}** splats: decimated for display (budget "
                     f"{self.max_splats:,}, the least opaque × smallest left out)"]
        self.scene_text.content = "  \n".join(lines + self._scene_notes)

    def _frame_initial_camera(self) -> None:
        """Start new browsers looking at the scene from the first plate camera (or from above)."""
        centre, radius = self._extent
        initial = self.server.initial_camera
        if self.cameras:  # behind and above the first plate camera, so its frustum is in view
            position = self.cameras[0].position
            up = -quat_to_rotmat(self.cameras[0].wxyz)[:, 1] if self.world_frame is None else np.array([0.0, 0, 1])
            initial.position = centre + 1.4 * (position - centre) + 0.3 * radius * up
        elif self.world_frame is not None:
            initial.position = centre + radius * np.array([0.0, -1.6, 0.9])
        else:  # y-down solve coordinates: from behind (−z) and above (−y)
            initial.position = centre + radius * np.array([0.0, -0.9, -1.6])
        initial.look_at = centre

    # --- timeline -------------------------------------------------------------------------------------
    @property
    def frame_count(self) -> int:
        return self.animation.frames if self.animation is not None else (len(self._shot_frames) if self.shot else 1)

    @property
    def first_frame(self) -> int:
        return self._shot_frames.start if self.shot else 0

    @property
    def fps(self) -> float:
        return self.shot.config.shot.fps if self.shot else 24.0

    def _build_timeline(self) -> None:
        gui = self.server.gui
        last = self.first_frame + self.frame_count - 1
        self.frame_slider = gui.add_slider("frame", min=self.first_frame, max=max(last, self.first_frame + 1), step=1,
                                           initial_value=self.first_frame, disabled=self.frame_count < 2)
        self.time_text = gui.add_markdown("")
        self.play_box = gui.add_checkbox("play", False, disabled=self.frame_count < 2)
        buttons = gui.add_button_group("step", ("◀ frame", "frame ▶"))
        self.frame_slider.on_update(lambda _: self._from_slider())
        self.play_box.on_update(lambda _: self.play(self.play_box.value))
        buttons.on_click(lambda e: self.set_frame((self.frame_index + (1 if e.target.value.startswith("frame") else -1))
                                                  % self.frame_count))

    def set_frame(self, index: int) -> None:
        """Show frame ``index`` (0-based within the shot's frames): the effects' Gaussians
        of that frame, the slider, the frame number and time, and the plate | comp panel."""
        if not 0 <= index < self.frame_count:
            raise IndexError(f"frame index {index} outside 0..{self.frame_count - 1}")
        with self._lock:
            self.frame_index = index
            if self._dynamic is not None:
                moving = self._dynamic.at(index)
                rows = display_rows(moving.gaussians, self.dynamic_budget)
                shown = moving.gaussians if rows is None else moving.gaussians[torch.from_numpy(rows)]
                self.dynamic_total, self.dynamic_shown = len(moving.gaussians), len(shown)
                self.dynamic_element = moving.element if rows is None else moving.element[rows]
                self.dynamic_splats = to_splats(shown, self.world_frame)
                if len(shown):
                    self._fx_handle = self._add_splats("/scene/fx", self.dynamic_splats)
                elif self._fx_handle is not None:
                    self._fx_handle.remove()
                    self._fx_handle = None
                self._update_scene_text()
            self.frame_slider.value = self.first_frame + index  # frame_index already set: no echo
            self.time_text.content = (f"frame **{self.frame_number}** · {index / self.fps:.3f} s "
                                      f"({index + 1}/{self.frame_count})")
            self._light_frame_camera()
            self._show_comp()

    def _from_slider(self) -> None:
        index = self.frame_slider.value - self.first_frame
        if index != self.frame_index and 0 <= index < self.frame_count:
            self.set_frame(index)

    @property
    def frame_number(self) -> int:
        return self.first_frame + self.frame_index

    def play(self, on: bool = True) -> None:
        """Play the timeline at the shot's rate (looping), or pause it."""
        self.play_box.value = on  # an unchanged value calls nothing back
        if on:
            self._play.set()
        else:
            self._play.clear()

    def _play_loop(self) -> None:
        while not self._stop.is_set():
            self._play.wait()
            if self._stop.is_set():
                return
            started = time.perf_counter()
            try:
                self.set_frame((self.frame_index + 1) % self.frame_count)
            except Exception as exc:  # noqa: BLE001 - keep the server alive, say what broke
                self._play.clear()
                self._set_status(f"playback stopped: {exc}")
            time.sleep(max(0.0, 1.0 / self.fps - (time.perf_counter() - started)))

    # --- selection ------------------------------------------------------------------------------------
    def _build_selection(self) -> None:
        gui = self.server.gui
        if self.shot is None:
            gui.add_markdown("open a shot folder to edit its `[fx.select]` box")
            return
        select = self.shot.config.fx.select
        if self.world_frame is None:
            gui.add_markdown("no `solve/scene.json`: the selection lives in the world frame, run `splatfx solve`")
            return
        if select.shape != "box":
            gui.add_markdown(f"`[fx.select] shape` is `{select.shape}`: edit it in shot.toml "
                             "(this gizmo edits box selections)")
            return
        self.selection_box = SelectionBox(self.server, select.center, select.size, select.rotation,
                                          on_change=self.save_selection, points=lambda: self.world_means)

    def save_selection(self, center: tuple, size: tuple, rotation: tuple) -> None:
        """Write the box into ``[fx.select]`` of ``shot.toml`` (re-read first, so edits made
        in the file meanwhile are kept), atomically, through the config schema."""
        if self.shot is None:
            raise InputError("selection", "a lone Gaussian file has no shot.toml to save the selection in")
        with self._lock:
            toml = self.shot.toml_path
            data = config_to_dict(load_config(toml))
            select = data.setdefault("fx", {}).setdefault("select", {})
            select.update(shape="box", center=list(center), size=list(size), rotation=list(rotation))
            config = config_from_dict(data, toml)
            save_config(config, toml)
            self.shot = self.shot.with_config(config)

    # --- plates -----------------------------------------------------------------------------------------
    def _build_plates(self) -> None:
        gui = self.server.gui
        self.cameras: list[PlateCamera] = []
        note = ""
        if self.shot is None:
            note = "open a shot folder to see its plates' cameras"
        elif not (self.shot.solve_dir / "sparse").is_dir():
            note = "no solved cameras yet (run `splatfx solve`)"
        else:
            try:
                self.cameras = plate_cameras(self.shot, self.world_frame)
            except SplatfxError as exc:
                note = f"no cameras: {exc}"
        step = max(1, -(-len(self.cameras) // self.max_cameras))
        if step > 1:
            note = f"{len(self.cameras):,} plate cameras, every {step}th drawn: click one to look through it"
        self.plates_text = gui.add_markdown(note or f"{len(self.cameras)} plate cameras: click one to look through it")
        radius = self._extent[1]
        self._frustums: dict[int, viser.CameraFrustumHandle] = {}
        for i in range(0, len(self.cameras), step):
            self._add_frustum(i, 0.06 * radius)
        self._frustum_of_frame = {self.cameras[i].frame: i for i in self._frustums if self.cameras[i].frame is not None}
        self.current_camera: int | None = None  # the frustum drawn as the timeline's plate camera
        names = tuple(c.name for c in self.cameras) or ("(none)",)
        self.camera_choice = gui.add_dropdown("camera", names, disabled=not self.cameras)
        look, leave = gui.add_button("look through", disabled=not self.cameras), gui.add_button("leave plate view")
        self.overlay_opacity = gui.add_slider("plate opacity", min=0.0, max=1.0, step=0.05, initial_value=0.5,
                                              disabled=not self.cameras,
                                              hint="1: only the plate; 0: only the reconstruction")
        self.show_cameras = gui.add_checkbox("show cameras", True, disabled=not self.cameras)
        self._plate_node: viser.ImageHandle | None = None
        self.looking_through: int | None = None
        look.on_click(lambda _: self.look_through(names.index(self.camera_choice.value)))
        leave.on_click(lambda _: self.leave_plate())
        self.overlay_opacity.on_update(lambda _: self.looking_through is not None and self._fade_splats())
        self.show_cameras.on_update(lambda _: self._set_cameras_visible(self.show_cameras.value))

    def _add_frustum(self, index: int, scale: float) -> None:
        cam = self.cameras[index]
        handle = self.server.scene.add_camera_frustum(
            f"/cameras/{index:05d}", fov=cam.fov_y, aspect=cam.aspect, scale=scale, thickness=1.5,
            thickness_units="screen", color=FRUSTUM_RGB, image=thumbnail(cam.image_path, THUMBNAIL_PX),
            format="jpeg", jpeg_quality=80, wxyz=cam.wxyz, position=cam.position)
        handle.on_click(lambda event: self.look_through(index, event.client))
        self._frustums[index] = handle

    def _set_cameras_visible(self, visible: bool) -> None:
        for handle in self._frustums.values():
            handle.visible = visible

    def _light_frame_camera(self) -> None:
        """Draw the current frame's plate camera in orange, the others in blue."""
        index = self._frustum_of_frame.get(self.frame_number)
        if index == self.current_camera:
            return
        if self.current_camera is not None:
            self._frustums[self.current_camera].color = FRUSTUM_RGB
        if index is not None:
            self._frustums[index].color = CURRENT_FRUSTUM_RGB
        self.current_camera = index

    def look_through(self, index: int, client: viser.ClientHandle | None = None) -> None:
        """Put the browser's camera (``client``, or every connected one) at plate camera
        ``index`` and show its plate under the splats at the *plate opacity*."""
        cam = self.cameras[index]
        rotation = quat_to_rotmat(cam.wxyz)
        clients = [client] if client is not None else list(self.server.get_clients().values())
        for c in clients:
            with c.atomic():
                c.camera.fov = cam.fov_y
                c.camera.position = cam.position
                c.camera.look_at = cam.position + rotation[:, 2] * self._extent[1]
                c.camera.up_direction = -rotation[:, 1]
        self.camera_choice.value = cam.name
        self._show_plate(index)
        self._fade_splats()

    def _show_plate(self, index: int) -> None:
        """Plate ``index`` filling its camera's view on a plane behind the scene.

        viser draws splats over whatever lies behind them but never blends them with a
        plane in front (it would hide them), so the plate goes behind the scene and the
        splats are faded by the plate opacity instead: the same mix, seen from the plate.
        """
        cam = self.cameras[index]
        self.looking_through = index
        centre, radius = self._extent
        forward = quat_to_rotmat(cam.wxyz)[:, 2]
        distance = max(float((centre - cam.position) @ forward), 0.0) + 2.0 * radius
        height = 2.0 * distance * np.tan(cam.fov_y / 2.0)
        # viser lays images out like its cameras (OpenCV axes: rows down +y, seen along +z),
        # so the camera's own orientation shows the plate upright
        self._plate_node = self.server.scene.add_image(
            "/plate", thumbnail(cam.image_path, OVERLAY_PX), render_width=height * cam.aspect, render_height=height,
            format="jpeg", jpeg_quality=90, wxyz=cam.wxyz, position=cam.position + forward * distance,
            cast_shadow=False, receive_shadow=False)

    def _fade_splats(self) -> None:
        """Scale every splat's opacity by 1 − *plate opacity* while looking through a plate."""
        with self._lock:
            self.splat_fade = 1.0 if self.looking_through is None else 1.0 - float(self.overlay_opacity.value)
            if self._static_handle is not None:
                self._static_handle.opacities = self._static_opacities * self.splat_fade
            if self._fx_handle is not None and self.dynamic_splats is not None:
                self._fx_handle.opacities = self.dynamic_splats.opacities * self.splat_fade

    def leave_plate(self) -> None:
        """Remove the plate and show the splats at full opacity (the camera stays where it is)."""
        self.looking_through = None
        if self._plate_node is not None:
            self._plate_node.remove()
            self._plate_node = None
        self._fade_splats()

    # --- stages ----------------------------------------------------------------------------------------
    def _build_stages(self) -> None:
        gui = self.server.gui
        self.stage_buttons: dict[str, viser.GuiButtonHandle] = {}
        self.stage_notes: dict[str, str] = {}
        for name in STAGES:
            fn = stage_function(name)
            available = self.shot is not None and not isinstance(fn, str)
            if not available:
                self.stage_notes[name] = fn if isinstance(fn, str) else "needs a shot folder"
            button = gui.add_button(name, disabled=not available, hint=self.stage_notes.get(name))
            button.on_click(lambda _, n=name: self.run_stage(n))
            self.stage_buttons[name] = button
        unavailable = [f"{n}: {why}" for n, why in self.stage_notes.items()]
        if unavailable:
            gui.add_markdown("  \n".join(unavailable))
        self.stage_progress = gui.add_progress_bar(100.0, visible=False, animated=True)  # busy, not a fraction
        self.status_text = gui.add_markdown("")
        self._set_status("idle")

    def run_stage(self, name: str, *, force: bool = False) -> concurrent.futures.Future:
        """Run stage ``name`` (see :data:`STAGES`) on the saved shot in a background thread.

        Returns the future of its :class:`~splatfx.shot.runner.StageResult`; the *Stages* panel
        shows its progress and outcome, and the view is refreshed when it is done. One
        stage runs at a time (RuntimeError if one is running).
        """
        if self.shot is None:
            raise InputError(self.ply_path or "viewer", "stages run on a shot folder, not a lone Gaussian file")
        fn = stage_function(name)
        if isinstance(fn, str):
            raise InputError(name, fn)
        with self._lock:
            if self._running is not None:
                raise RuntimeError(f"{self._running} is still running")
            self._running = name
            for button in self.stage_buttons.values():
                button.disabled = True
        self.stage_progress.visible = True
        return self._jobs.submit(self._stage_job, name, fn, force)

    def _stage_job(self, name: str, fn: Callable[..., Any], force: bool) -> Any:
        """Run one stage (in the worker thread), ticking its elapsed time into the status."""
        started = time.perf_counter()
        done = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(name, started, done), daemon=True)
        self._set_status(f"**{name}** running …")
        ticker.start()
        try:
            result = fn(Shot.open(self.shot.root), force=force)
        except BaseException as exc:
            self._stage_finished(done, ticker)
            self._set_status(f"**{name}** failed after {time.perf_counter() - started:.1f} s: {exc}")
            raise
        self._stage_finished(done, ticker)
        self._after_stage(name)
        self._set_status(_stage_summary(name, result, time.perf_counter() - started))
        return result

    def _tick(self, name: str, started: float, done: threading.Event) -> None:
        while not done.wait(0.5):
            self._set_status(f"**{name}** running … {time.perf_counter() - started:.0f} s")

    def _stage_finished(self, done: threading.Event, ticker: threading.Thread) -> None:
        done.set()
        ticker.join()
        with self._lock:
            self._running = None
            for stage, button in self.stage_buttons.items():
                button.disabled = stage in self.stage_notes
        self.stage_progress.visible = False

    @property
    def running_stage(self) -> str | None:
        """The stage running now, if any."""
        return self._running

    def _after_stage(self, name: str) -> None:
        if name.startswith("fx."):
            self.shot = Shot.open(self.shot.root)
            self._reload_animation()
        if name == "comp":
            self._comp = comp_frames(self.shot)
            with self._lock:
                self._show_comp()

    def _set_status(self, text: str) -> None:
        self.status = text.replace("**", "")
        self.status_text.content = text

    # --- plate | comp --------------------------------------------------------------------------------
    def _show_comp(self) -> None:
        """The plate and the comp frame of the current frame side by side (when comp has it)."""
        if self.shot is None:
            self.comp_text.content = "open a shot folder to see its comp"
            return
        path = self._comp.get(self.frame_number)
        if path is None:
            self.comp_panel_image = None
            self.comp_image.visible = False
            self.comp_text.content = f"no comp frame {self.frame_number} yet (run `comp`)"
            return
        comp = read_image(path)
        right = fit_image(display_rgb(comp.pixels, comp.encoding), PANEL_PX)
        left = self._plate_rgb(self.frame_number, right.shape[0])
        self.comp_panel_image = right if left is None else np.concatenate([left, right], axis=1)
        self.comp_image.image = self.comp_panel_image
        self.comp_image.visible = True
        self.comp_text.content = f"frame {self.frame_number}: plate | `{self.shot.relative(path)}`"

    def _plate_rgb(self, frame: int, height: int) -> np.ndarray | None:
        """The plate of ``frame`` as sRGB uint8 resized to ``height`` rows (None if absent)."""
        if self._plates is None:
            self._plates = self.shot.open_plates()
        if frame not in self._plates:
            return None
        rgb = display_rgb(self._plates.read(frame), self._plates.encoding)
        width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
        return np.asarray(PILImage.fromarray(rgb).resize((width, height), PILImage.BILINEAR))


# --- helpers -----------------------------------------------------------------------------------------
def _open_source(source: Shot | PathLike) -> tuple[Shot | None, Path | None]:
    """A shot, or the path of a lone Gaussian file; InputError for anything else."""
    if isinstance(source, Shot):
        return source, None
    path = Path(source)
    if path.is_dir() or path.name == SHOT_TOML:
        return Shot.open(path), None
    if not path.exists():
        raise InputError(path, "does not exist (give a shot folder or a .ply/.splat/.spz file)")
    if path.suffix.lower() not in FORMATS:
        raise InputError(path, f"is neither a shot folder nor a Gaussian file ({', '.join(FORMATS)})")
    return None, path


def _peak_dynamic(animation: ShotAnimation) -> int:
    """The most Gaussians the effects add in any frame (fragments plus living particles)."""
    count = 0 if animation.fragments is None else len(animation.fragments.gaussians)
    for cache in animation.particles.values():
        alive = np.asarray(cache.alive)
        count += int(alive.sum(axis=1).max()) if alive.size else 0
    return count


def _extent(centers: np.ndarray) -> tuple[np.ndarray, float]:
    """A robust centre and radius of the splats (median, 90th-percentile distance)."""
    centre = np.median(centers, axis=0).astype(np.float64)
    distances = np.linalg.norm(centers - centre, axis=1)
    return centre, max(float(np.percentile(distances, 90)), 1e-3)


def _stage_summary(name: str, result: Any, seconds: float) -> str:
    """One line for the status: up to date, or done with the stage's figures."""
    record = getattr(result, "record", None)
    if getattr(result, "ran", True) is False:
        return f"**{name}**: up to date"
    figures = getattr(record, "figures", None) or {}
    shown = ", ".join(f"{k} {v}" for k, v in list(figures.items())[:6] if not isinstance(v, (list, dict)))
    return f"**{name}** done in {seconds:.1f} s" + (f": {shown}" if shown else "")
