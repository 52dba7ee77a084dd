"""How solid the falling pieces look in the rendered frames (issue 17's measure).

A piece of wall must hide what is behind it. Inside the pieces' silhouettes (``matte.fragment``
+ ``matte.fill`` above :data:`SILHOUETTE`, eroded by :data:`ERODE_PX` pixels so that the soft
rim does not count), the synthetic elements together (piece, fill, debris, dust and snow
mattes) should be at least :data:`OPAQUE` opaque. A shot passes when that holds on at least
:data:`MEAN_SHARE` of those pixels averaged over the frames and :data:`FRAME_SHARE` in every
frame. Pure numpy on the mattes: the caller reads them (``splatfx.render.layers``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_erosion

#: The elements that together make a piece and what covers it.
PIECE_ELEMENTS = ("fragment", "fill")
COVER_ELEMENTS = ("fragment", "fill", "debris", "dust", "snow")
SILHOUETTE = 0.05
ERODE_PX = 2
OPAQUE = 0.95
MEAN_SHARE = 0.90
FRAME_SHARE = 0.75


def frame_solidity(mattes: Mapping[str, np.ndarray]) -> tuple[float, int]:
    """(share of the silhouette pixels that are opaque, number of silhouette pixels) of one
    frame's ``mattes`` (element name -> H×W coverage; absent elements count as 0). A frame
    with no silhouette pixel gives (nan, 0)."""
    shape = next(iter(mattes.values())).shape
    zero = np.zeros(shape, np.float32)
    piece = sum((mattes.get(e, zero) for e in PIECE_ELEMENTS), zero)
    cover = sum((mattes.get(e, zero) for e in COVER_ELEMENTS), zero)
    inside = binary_erosion(piece > SILHOUETTE, structure=np.ones((3, 3), bool), iterations=ERODE_PX)
    count = int(inside.sum())
    if not count:
        return float("nan"), 0
    return float((cover[inside] >= OPAQUE).mean()), count


@dataclass(frozen=True)
class Solidity:
    """Per-frame shares of opaque silhouette pixels (nan: no piece on that frame) and the verdict."""

    frames: tuple[int, ...]
    shares: tuple[float, ...]
    pixels: tuple[int, ...]

    @property
    def measured(self) -> np.ndarray:
        return np.array([s for s in self.shares if not np.isnan(s)])

    @property
    def mean(self) -> float:
        return float(self.measured.mean()) if len(self.measured) else float("nan")

    @property
    def worst(self) -> float:
        return float(self.measured.min()) if len(self.measured) else float("nan")

    @property
    def passes(self) -> bool:
        return bool(len(self.measured)) and self.mean >= MEAN_SHARE and self.worst >= FRAME_SHARE

    def summary(self) -> str:
        worst = self.frames[int(np.nanargmin(self.shares))] if len(self.measured) else None
        return (f"opaque share {100 * self.mean:.1f} % on average over {len(self.measured)} frames with pieces "
                f"(needs {100 * MEAN_SHARE:.0f} %), worst {100 * self.worst:.1f} % at frame {worst} "
                f"(needs {100 * FRAME_SHARE:.0f} %): {'pass' if self.passes else 'FAIL'}")


def solidity(frames: Sequence[int], mattes: Sequence[Mapping[str, np.ndarray]]) -> Solidity:
    """The measure over a shot's frames (numbers) and their mattes."""
    measured = [frame_solidity(m) for m in mattes]
    return Solidity(tuple(frames), tuple(s for s, _ in measured), tuple(n for _, n in measured))
