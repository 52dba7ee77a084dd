"""Shared helpers for tests that look at a page in a real browser: headless Chromium
(Debian's ``chromium`` package, never a downloaded one) driven by Playwright.

Headless Chromium draws WebGL in software (SwiftShader), so a page full of splats takes
seconds to settle: :func:`wait_until_still` polls screenshots until two in a row agree.
Set ``SPLATFX_REQUIRE_BROWSER=1`` (CI does) to make a missing browser a failure instead
of a skip.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path(os.environ.get("SPLATFX_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic"]
VIEWPORT = {"width": 960, "height": 640}
#: Console errors that are not ours: viser 1.1's splat mesh makes three.js log this once for
#: any splat node, even 100 valid splats alone on an empty page (the splats draw correctly).
KNOWN_UPSTREAM_ERRORS = ("THREE.BufferGeometry.computeBoundingSphere(): Computed radius is NaN",)


def require_browser() -> None:
    """Skip the calling test (fail under ``SPLATFX_REQUIRE_BROWSER=1``) without Playwright or Chromium."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        reason = "browser tests need " + " and ".join(missing)
        if os.environ.get("SPLATFX_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@dataclass
class Page:
    """A Playwright page plus what its console said: ``errors`` are console errors and
    uncaught exceptions, less :data:`KNOWN_UPSTREAM_ERRORS`; ``messages`` is everything."""

    page: object
    errors: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def _console(self, message) -> None:
        self.messages.append(f"{message.type}: {message.text}")
        if message.type == "error" and not message.text.startswith(KNOWN_UPSTREAM_ERRORS):
            self.errors.append(message.text)


@contextmanager
def open_page(url: str, viewport: dict | None = None) -> Iterator[Page]:
    """Open ``url`` in a fresh headless Chromium, recording console errors and page errors."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=viewport or VIEWPORT)
            result = Page(page)
            page.on("console", result._console)
            page.on("pageerror", lambda exc: result.errors.append(f"page error: {exc}"))
            page.goto(url, wait_until="load")
            yield result
        finally:
            browser.close()


def screenshot(page: Page, clip: dict | None = None) -> np.ndarray:
    """The page (or ``clip``: x, y, width, height in CSS pixels) as an RGB uint8 array."""
    png = page.page.screenshot(clip=clip) if clip else page.page.screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def difference(a: np.ndarray, b: np.ndarray, threshold: int = 24) -> float:
    """Fraction of pixels whose largest channel difference exceeds ``threshold``."""
    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > threshold).mean())


def wait_until_still(page: Page, clip: dict | None = None, timeout: float = 45.0, interval: float = 1.0,
                     tolerance: float = 0.002, settle: float = 2.0) -> np.ndarray:
    """Wait until the picture stops changing (two screenshots ``interval`` apart differ in
    under ``tolerance`` of their pixels), after at least ``settle`` seconds; return the last.
    Fails after ``timeout`` seconds."""
    time.sleep(settle)
    deadline = time.monotonic() + timeout
    last = screenshot(page, clip)
    while time.monotonic() < deadline:
        time.sleep(interval)
        current = screenshot(page, clip)
        if difference(last, current) < tolerance:
            return current
        last = current
    pytest.fail(f"the page kept changing for {timeout:.0f} s")


def colour_fraction(image: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 40) -> float:
    """Fraction of pixels within ``tolerance`` (every channel) of colour ``rgb``."""
    return float((np.abs(image.astype(np.int16) - np.array(rgb, np.int16)).max(axis=2) <= tolerance).mean())


def background_fraction(image: np.ndarray, tolerance: int = 12) -> float:
    """Fraction of pixels close to the image's most common colour (the background)."""
    flat = image.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    return colour_fraction(image, tuple(int(c) for c in colours[np.argmax(counts)]), tolerance)
