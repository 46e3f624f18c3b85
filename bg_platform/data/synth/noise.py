"""Small numpy building blocks shared by the BG-Synth painters (all arrays float32 in [0, 1])."""

from __future__ import annotations

import numpy as np
from PIL import Image


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) in [0, 1)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(c, c, indexing="ij")


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise in [0, 1]: a cells x cells random grid upsampled bicubically."""
    small = rng.random((cells, cells), dtype=np.float32)
    big = Image.fromarray(small).resize((size, size), Image.BICUBIC)
    arr = np.asarray(big, dtype=np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / max(hi - lo, 1e-6)


def fractal_noise(rng: np.random.Generator, size: int, base_cells: int = 3, octaves: int = 3) -> np.ndarray:
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        out += amp * smooth_noise(rng, size, min(base_cells * 2**o, size))
        total += amp
        amp *= 0.5
    return out / total


def blur(arr: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (reflect padding) of an (H, W) or (H, W, C) float array."""
    if sigma <= 0:
        return arr
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-(np.arange(-r, r + 1, dtype=np.float32) ** 2) / (2 * sigma**2))
    k /= k.sum()
    out = arr.astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="reflect")
        n = out.shape[axis]
        out = sum(k[i] * np.take(padded, np.arange(i, i + n), axis=axis) for i in range(2 * r + 1))
    return out


def hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    import colorsys

    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), np.float32)


def mix(a: np.ndarray, b: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Linear blend; `t` (H, W) broadcasts over colour channels."""
    if isinstance(t, np.ndarray) and t.ndim == 2:
        t = t[..., None]
    return a * (1.0 - t) + b * t


def fill(size: int, colour: np.ndarray) -> np.ndarray:
    return np.broadcast_to(colour.astype(np.float32), (size, size, 3)).copy()
