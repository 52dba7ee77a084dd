"""``splatfx view``: the shot in the browser with viser (see docs/viewer.md).

:mod:`~splatfx.viewer.app` is the viewer, :mod:`~splatfx.viewer.splats` turns Gaussians into
browser splats, :mod:`~splatfx.viewer.selection` is the ``[fx.select]`` gizmo and
:mod:`~splatfx.viewer.content` reads cameras, comp frames and stages from the shot.
"""

from splatfx.viewer.app import DEFAULT_MAX_SPLATS, ShotViewer
from splatfx.viewer.splats import SplatArrays, decimate, to_splats

__all__ = ["DEFAULT_MAX_SPLATS", "ShotViewer", "SplatArrays", "decimate", "to_splats"]
