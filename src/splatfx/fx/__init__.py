"""Effects on a reconstruction: selection, fracture, rigid-body collapse, debris, dust, snow.

Effects work in the scene's physics frame (z-up, metres, ground at z = 0; see
:class:`splatfx.shot.scene_frame.SceneFrame`) and produce per-frame animations of Gaussians.
"""
