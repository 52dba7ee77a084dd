"""What the plate comp (:mod:`splatfx.comp.stage`) and the synthetic comp
(:mod:`splatfx.comp.virtual`) share: the display transform, the output paths and settings,
and the contact sheet.

Display encoding is the sRGB curve, or an OCIO config's default display and view when
``[comp] ocio`` is set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from splatfx.core.color import linear_to_srgb
from splatfx.core.errors import InputError
from splatfx.render.layers import refinement_mismatch
from splatfx.shot.folder import Shot

#: Linear colour spaces with sRGB primaries looked up in an OCIO config (else its scene_linear role).
OCIO_LINEAR_NAMES = ("lin_rec709_srgb", "Linear Rec.709 (sRGB)", "lin_rec709", "lin_srgb", "Utility - Linear - sRGB")
#: Comp EXRs hold plate pixels (grain): PIZ, the wavelet codec made for them, is the
#: smallest and, for float data, faster than ZIP.
COMP_COMPRESSION = "piz"
#: x264 preset of the review movies (speed over size: they are for viewing, not delivery).
MOVIE_PRESET = "veryfast"
CONTACT_SHEET_FRAMES = 12
CONTACT_SHEET_WIDTH = 256


# --- display -----------------------------------------------------------------------------------------
class DisplayTransform:
    """Scene-linear (sRGB primaries) → display values: the sRGB curve, or an OCIO config's
    default display and view."""

    def __init__(self, ocio_config: Path | None = None) -> None:
        self.ocio_config = ocio_config
        self._processor = None
        self.description = "sRGB (IEC 61966-2-1)"
        if ocio_config is not None:
            self._processor, self.description = _ocio_processor(ocio_config)

    @property
    def is_srgb(self) -> bool:
        return self._processor is None

    def __call__(self, linear: np.ndarray) -> np.ndarray:
        if self._processor is None:
            return linear_to_srgb(linear)
        out = np.ascontiguousarray(linear, dtype=np.float32).copy()
        self._processor.applyRGB(out)
        return out


def _ocio_processor(path: Path):
    try:
        import PyOpenColorIO as ocio
    except ImportError:
        raise InputError(path, "an OCIO config is set but PyOpenColorIO is not installed (pip install opencolorio)") \
            from None
    if not path.is_file():
        raise InputError(path, "OCIO config does not exist")
    try:
        config = ocio.Config.CreateFromFile(str(path))
        source = next((n for n in OCIO_LINEAR_NAMES if config.getColorSpace(n) is not None), ocio.ROLE_SCENE_LINEAR)
        display = config.getDefaultDisplay()
        view = config.getDefaultView(display)
        transform = ocio.DisplayViewTransform(src=source, display=display, view=view)
        processor = config.getProcessor(transform).getDefaultCPUProcessor()
    except Exception as exc:  # noqa: BLE001 - OCIO raises its own Exception type
        raise InputError(path, f"unusable OCIO config: {exc}") from None
    return processor, f"OCIO {source} → {display} / {view}"


# --- outputs -----------------------------------------------------------------------------------------
def refined_frame_path(shot: Shot, frame: int) -> Path | None:
    """The refine stage's version of a render frame, when ``[refine] model`` is set and it exists;
    InputError when it was made from another render of the frame than the one there now."""
    if shot.config.refine.model is None:
        return None
    path = shot.refined_frame(frame)
    if not path.is_file():
        return None
    mismatch = refinement_mismatch(path, shot.render_frame(frame))
    if mismatch is not None:  # a stale refinement must never ghost an older render into the comp
        raise InputError(path, f"does not match {shot.relative(shot.render_frame(frame))}: {mismatch}; "
                               f"run `splatfx refine {shot.root}` (or `splatfx run`) first")
    return path


def spread_frames(frames: list[int], count: int) -> list[int]:
    """Up to ``count`` of ``frames``, evenly spread from the first to the last."""
    return sorted({frames[round(i)] for i in np.linspace(0, len(frames) - 1, min(count, len(frames)))})


def thumbnail(pixels: np.ndarray, width: int = CONTACT_SHEET_WIDTH) -> np.ndarray:
    """A uint8 frame at the contact sheet's thumbnail size, made as :func:`contact_sheet` makes
    it, so the sheet's frames are not held at full size until it is drawn."""
    h, w = pixels.shape[:2]
    size = (width, max(1, round(width * h / w)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))


def contact_sheet(frames: list[tuple[int, np.ndarray]], columns: int = 4, width: int = CONTACT_SHEET_WIDTH) -> np.ndarray:
    """A grid of labelled thumbnails (float RGB 0-1) of ``(frame number, uint8 image)`` pairs."""
    h, w = frames[0][1].shape[:2]
    tw, th = width, max(1, round(width * h / w))
    columns = min(columns, len(frames))
    rows = -(-len(frames) // columns)
    gap = 4
    sheet = Image.new("RGB", (columns * (tw + gap) + gap, rows * (th + gap) + gap), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i, (frame, pixels) in enumerate(frames):
        x, y = gap + (i % columns) * (tw + gap), gap + (i // columns) * (th + gap)
        sheet.paste(Image.fromarray(pixels).resize((tw, th), Image.Resampling.BILINEAR), (x, y))
        draw.text((x + 4, y + 4), str(frame), fill=(255, 255, 0))
    return np.asarray(sheet, dtype=np.float32) / 255.0
