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


def blur(arr: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of an (H, W) or (H, W, C) float array."""
    if radius <= 0:
        return arr
    from PIL import ImageFilter

    def one(ch: np.ndarray) -> np.ndarray:
        im = Image.fromarray(np.ascontiguousarray(ch, dtype=np.float32)).filter(ImageFilter.GaussianBlur(radius))
        return np.asarray(im, dtype=np.float32)

    if arr.ndim == 2:
        return one(arr)
    return np.stack([one(arr[..., c]) for c in range(arr.shape[2])], axis=2)


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
