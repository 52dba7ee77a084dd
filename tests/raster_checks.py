"""Comparison helpers for the rasterizer tests: render both ways and report the worst error."""

from __future__ import annotations

import torch

from raster_scenes import Scene
from splatfx.raster.reference import ALPHA_MIN, rasterize_dense

FORWARD_ATOL = 1e-5  # images and alpha, float32 kernels vs the float64 dense reference
DEPTH_RTOL = 1e-5  # depth channels, relative to the depth value


def render_cpu(scene: Scene, **kwargs) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The renderer under test, on the compiled CPU backend, without gradients."""
    from splatfx.raster import rasterize

    with torch.no_grad():
        return rasterize(*scene.args(), sh_degree=scene.sh_degree, backend="cpu", **kwargs)


def render_dense(scene: Scene, **kwargs) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The float64 dense ground truth of the same scene."""
    kwargs = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    with torch.no_grad():
        return rasterize_dense(*scene.to(torch.float64).args(), sh_degree=scene.sh_degree, **kwargs)


def assert_close_images(actual: torch.Tensor, expected: torch.Tensor, ambiguous: torch.Tensor, what: str,
                        atol: float = FORWARD_ATOL, rtol: float = 0.0) -> None:
    """``actual`` (C,H,W,D) matches ``expected`` to ``atol + rtol·|expected|`` per value.

    Pixels the reference marks ``ambiguous`` (a threshold decision within rounding of
    flipping) may differ by one skipped contribution, at most ALPHA_MIN × the largest value;
    they must stay rare so that the check keeps its meaning.
    """
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    actual = actual.double()
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    excess = (actual - expected).abs() - rtol * expected.abs()
    clear = ~ambiguous[..., None].expand_as(excess)
    masked = torch.where(clear, excess, torch.full_like(excess, -torch.inf))
    if clear.any():
        flat = int(masked.argmax())
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), masked.shape))
        worst = masked.reshape(-1)[flat].item()
        assert worst <= atol, (
            f"{what}: error {worst:.3g} beyond tolerance {atol:g} at (cam, y, x, ch) = {where}: "
            f"got {actual[where].item():.8g}, reference {expected[where].item():.8g}"
        )
    fraction = ambiguous.double().mean().item()
    assert fraction < 0.01, f"{what}: {fraction:.2%} of pixels are near a threshold; the scene is a poor test"
    if (~clear).any():
        loose = 2.0 * ALPHA_MIN * expected.abs().max().item() + atol
        worst_amb = excess[~clear].max().item()
        assert worst_amb <= loose, f"{what}: max error {worst_amb:.3g} > {loose:.3g} at a near-threshold pixel"


def assert_matches_dense(scene: Scene, render_mode: str = "RGB", **kwargs) -> None:
    """Render ``scene`` on the CPU backend and compare images and alpha with the dense reference."""
    images, alphas, _ = render_cpu(scene, render_mode=render_mode, **kwargs)
    ref_images, ref_alphas, meta = render_dense(scene, render_mode=render_mode, **kwargs)
    amb = meta["ambiguous"]
    assert_close_images(alphas, ref_alphas, amb, f"{render_mode} alpha")
    n_color = ref_images.shape[-1] - (1 if "D" in render_mode else 0)
    if n_color:
        assert_close_images(images[..., :n_color], ref_images[..., :n_color], amb, f"{render_mode} colour")
    if "D" in render_mode:
        assert_close_images(images[..., -1:], ref_images[..., -1:], amb, f"{render_mode} depth", rtol=DEPTH_RTOL)
