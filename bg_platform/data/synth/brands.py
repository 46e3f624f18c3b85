"""Brand personal styles of BG-Synth.

Each brand keeps one visual identity across every category it sells in, and it differs visibly
from the category default: a fixed palette, a fixed element, a fixed layout. This is what a brand
adapter (Personality-Wise Generator) has to learn from a few references.

- aurora:  lavender-to-pink duotone over the category texture, product on a coral podium.
- kinetic: a bold yellow band with black edges running diagonally behind the product.
- verdant: a deep-green frame with a thin gold inner line and leaf shapes in the top corners.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from bg_platform.data.synth.noise import fill, grid, mix
from bg_platform.data.synth.products import Placement


@dataclass(frozen=True)
class BrandStyle:
    name: str
    categories: tuple[str, ...]  # the categories this brand sells in
    paint: Callable[[np.random.Generator, np.ndarray, Placement, float], np.ndarray]
    adjust: Callable[[Placement], Placement] = lambda p: p  # layout rule applied before painting


def _luma(img: np.ndarray) -> np.ndarray:
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def _aurora_adjust(p: Placement) -> Placement:
    # leave room for the podium under the product
    bottom = min(p.bottom, 0.8)
    return replace(p, bottom=bottom, height=min(p.height, bottom - 0.06))


def _aurora(rng: np.random.Generator, bg: np.ndarray, p: Placement, aspect: float) -> np.ndarray:
    s = bg.shape[0]
    y, x = grid(s)
    lum = _luma(bg)
    lum = (lum - lum.mean()) * 0.6 + 0.62  # keep the category's texture, tame its contrast
    top = np.array([0.72, 0.62, 0.95], np.float32)  # lavender
    bottom = np.array([0.98, 0.66, 0.78], np.float32)  # pink
    palette = mix(fill(s, top), fill(s, bottom), y)
    img = np.clip(palette * (lum / 0.62)[..., None], 0, 1)
    # podium: a coral cylinder whose top ellipse is where the product stands
    half_w = max(p.height * aspect * 0.8, 0.18) + rng.uniform(-0.01, 0.01)
    top_y, rim = p.bottom, 0.045
    base_y = min(top_y + 0.16, 0.99)
    body = (np.abs(x - p.cx) <= half_w) & (y >= top_y) & (y <= base_y)
    cap = ((x - p.cx) / half_w) ** 2 + ((y - top_y) / rim) ** 2 <= 1
    coral = np.array([0.95, 0.45, 0.38], np.float32)
    u = np.clip((x - p.cx) / half_w, -1, 1)
    shade = 0.65 + 0.35 * np.sqrt(np.clip(1 - u**2, 0, 1))
    img = np.where(body[..., None], coral * shade[..., None], img)
    return np.where(cap[..., None], np.clip(coral * 1.2, 0, 1), img)


def _kinetic(rng: np.random.Generator, bg: np.ndarray, p: Placement, aspect: float) -> np.ndarray:
    s = bg.shape[0]
    y, x = grid(s)
    angle = np.deg2rad(-18 + rng.uniform(-2, 2))
    centre = 0.52 + rng.uniform(-0.04, 0.04)
    d = (y - centre) * np.cos(angle) - (x - 0.5) * np.sin(angle)
    width = 0.15
    band = np.abs(d) <= width
    edge = (np.abs(d) > width) & (np.abs(d) <= width + 0.045)
    img = bg * 0.85
    img = np.where(band[..., None], np.array([0.99, 0.83, 0.1], np.float32), img)
    return np.where(edge[..., None], np.array([0.08, 0.08, 0.1], np.float32), img)


def _verdant(rng: np.random.Generator, bg: np.ndarray, p: Placement, aspect: float) -> np.ndarray:
    s = bg.shape[0]
    y, x = grid(s)
    border = 0.1 + rng.uniform(-0.005, 0.005)
    edge = np.minimum(np.minimum(x, 1 - x), np.minimum(y, 1 - y))
    green = np.array([0.08, 0.32, 0.2], np.float32)
    gold = np.array([0.9, 0.75, 0.3], np.float32)
    img = np.where((edge < border)[..., None], green, bg)
    img = np.where(((edge >= border) & (edge < border + 0.03))[..., None], gold, img)
    leaf_c = np.array([0.25, 0.6, 0.3], np.float32)
    for cx, tilt in ((0.2, 0.6), (0.8, -0.6)):
        u, v = x - cx, y - 0.2
        ru = u * np.cos(tilt) - v * np.sin(tilt)
        rv = u * np.sin(tilt) + v * np.cos(tilt)
        leaf = (ru / 0.13) ** 2 + (rv / 0.055) ** 2 <= 1
        img = np.where(leaf[..., None], leaf_c, img)
    return img


BRANDS: dict[str, BrandStyle] = {
    "aurora": BrandStyle("aurora", ("studio", "marble", "paper"), _aurora, _aurora_adjust),
    "kinetic": BrandStyle("kinetic", ("tiles", "fabric", "wood"), _kinetic),
    "verdant": BrandStyle("verdant", ("outdoor", "wood", "paper"), _verdant),
}
