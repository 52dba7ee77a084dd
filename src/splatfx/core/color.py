"""Colour transfer functions and integer quantisation for images at the pipeline's edges.

Inside splatfx images are scene-linear float32. PNG, JPEG and MP4 hold sRGB-encoded
(display-referred) integers, so every read or write of those formats passes through
the exact piecewise sRGB curve (IEC 61966-2-1) and one well-defined rounding step.
"""

from __future__ import annotations

import numpy as np

#: Rec. 709 (and sRGB) luminance weights of R, G, B.
REC709_LUMA = np.array([0.2126, 0.7152, 0.0722])

# IEC 61966-2-1 constants: the linear toe and the power segment meet at these points.
_ENCODED_KNEE = 0.04045
_LINEAR_KNEE = 0.0031308
_TOE_SLOPE = 12.92
_GAMMA = 2.4
_OFFSET = 0.055


def srgb_to_linear(encoded: np.ndarray) -> np.ndarray:
    """Decode sRGB-encoded values to scene-linear, as float32.

    Values at or below the knee (including negatives) follow the linear toe; values
    above 1 continue the power segment, so no value is clipped.
    """
    v = np.asarray(encoded, dtype=np.float32)
    power = ((np.maximum(v, _ENCODED_KNEE) + _OFFSET) / (1.0 + _OFFSET)) ** _GAMMA
    return np.where(v <= _ENCODED_KNEE, v / _TOE_SLOPE, power).astype(np.float32)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Encode scene-linear values with the sRGB curve, as float32 (the inverse of
    :func:`srgb_to_linear`; negatives stay on the linear toe, values above 1 are kept)."""
    v = np.asarray(linear, dtype=np.float32)
    power = (1.0 + _OFFSET) * np.maximum(v, _LINEAR_KNEE) ** (1.0 / _GAMMA) - _OFFSET
    return np.where(v <= _LINEAR_KNEE, v * _TOE_SLOPE, power).astype(np.float32)


def _quantise(values: np.ndarray, top: int, dtype: type[np.unsignedinteger]) -> np.ndarray:
    """Map [0, 1] floats to integers 0..top, clipping outside and rounding to nearest."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    # Scale in float64 so that k/top -> k holds exactly for every integer code k.
    return np.rint(np.clip(v.astype(np.float64), 0.0, 1.0) * top).astype(dtype)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Quantise [0, 1] floats to uint8 (clip, then round to nearest; NaN becomes 0)."""
    return _quantise(values, 255, np.uint8)


def to_uint16(values: np.ndarray) -> np.ndarray:
    """Quantise [0, 1] floats to uint16 (clip, then round to nearest; NaN becomes 0)."""
    return _quantise(values, 65535, np.uint16)


def from_uint8(codes: np.ndarray) -> np.ndarray:
    """Normalise uint8 codes to float32 in [0, 1] (code / 255)."""
    return (np.asarray(codes, dtype=np.float32) / np.float32(255.0)).astype(np.float32)


def from_uint16(codes: np.ndarray) -> np.ndarray:
    """Normalise uint16 codes to float32 in [0, 1] (code / 65535)."""
    return (np.asarray(codes, dtype=np.float32) / np.float32(65535.0)).astype(np.float32)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 709 luminance of the last axis' first three channels, in ``rgb``'s float type
    (float32 for integers)."""
    rgb = np.asarray(rgb)
    dtype = rgb.dtype if np.issubdtype(rgb.dtype, np.floating) else np.float32
    return rgb[..., :3].astype(dtype, copy=False) @ REC709_LUMA.astype(dtype)
