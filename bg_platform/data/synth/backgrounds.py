"""Category background families of BG-Synth: one painter per category.

Each painter draws a whole family of backgrounds (colour, scale, orientation and placement are
drawn from the sample's RNG), so no two samples are alike but every sample is recognisably of its
category. Feature sizes are given in image fractions, so the families hold at any `image_size`;
at the default 64 px the finest structures (veins, grout, weave) are 1.5-3 px wide.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bg_platform.data.synth.noise import blur, fill, fractal_noise, grid, hsv_to_rgb, mix, smooth_noise

Painter = Callable[[np.random.Generator, int], np.ndarray]


def marble(rng: np.random.Generator, s: int) -> np.ndarray:
    """Pale stone with dark, turbulent veins."""
    y, x = grid(s)
    base = hsv_to_rgb(rng.choice([0.08, 0.55, 0.95, 0.33]) + rng.uniform(-0.03, 0.03), rng.uniform(0.02, 0.12), rng.uniform(0.82, 0.95))
    vein = hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.05, 0.3), rng.uniform(0.25, 0.5))
    img = fill(s, base) * (0.93 + 0.07 * fractal_noise(rng, s, 2, 3))[..., None]
    angle = rng.uniform(0, np.pi)
    for _ in range(rng.integers(2, 4)):
        turb = fractal_noise(rng, s, 3, 3)
        freq = rng.uniform(2.0, 4.0)
        u = (x * np.cos(angle) + y * np.sin(angle)) * freq + turb * rng.uniform(1.5, 2.8) + rng.uniform(0, 1)
        d = np.abs(np.sin(np.pi * u))  # 0 on the vein centre line
        width = rng.uniform(0.10, 0.16)
        t = np.clip(1.0 - d / width, 0.0, 1.0) ** 1.5 * rng.uniform(0.6, 0.95)
        img = mix(img, fill(s, vein), t)
        angle += rng.uniform(-0.5, 0.5)
    return img


def wood(rng: np.random.Generator, s: int) -> np.ndarray:
    """Planks with dark seams and wavy grain, horizontal or vertical."""
    y, x = grid(s)
    if rng.random() < 0.5:
        x, y = y, x
    hue = rng.uniform(0.04, 0.11)
    plank_w = rng.uniform(0.14, 0.24)
    offset = rng.uniform(0, plank_w)
    idx = np.floor((y + offset) / plank_w)
    within = (y + offset) / plank_w - idx
    tone = np.zeros((s, s), np.float32)
    rng_planks = rng.uniform(-0.08, 0.08, size=64)
    tone += rng_planks[(idx.astype(int)) % 64]
    grain_freq = rng.uniform(10, 18)
    wobble = smooth_noise(rng, s, 4) * rng.uniform(0.6, 1.4)
    grain = 0.5 + 0.5 * np.sin(2 * np.pi * (within * 2.0 + x * 0.4 + wobble) * grain_freq / 6.0)
    light = hsv_to_rgb(hue, rng.uniform(0.45, 0.65), rng.uniform(0.6, 0.8))
    dark = hsv_to_rgb(hue, rng.uniform(0.6, 0.8), rng.uniform(0.3, 0.45))
    img = mix(fill(s, light), fill(s, dark), np.clip(grain * 0.55 - tone, 0, 1))
    seam = np.clip(1.0 - np.minimum(within, 1 - within) * plank_w / 0.018, 0, 1)
    return mix(img, fill(s, dark * 0.5), seam * 0.9)


def studio(rng: np.random.Generator, s: int) -> np.ndarray:
    """Seamless studio sweep: smooth wall-to-floor gradient with a soft key light."""
    y, x = grid(s)
    hue = rng.uniform(0, 1)
    sat = rng.uniform(0.08, 0.35)
    top = hsv_to_rgb(hue, sat, rng.uniform(0.75, 0.95))
    bottom = hsv_to_rgb(hue + rng.uniform(-0.05, 0.05), sat * 1.2, rng.uniform(0.45, 0.65))
    horizon = rng.uniform(0.5, 0.7)
    t = 1.0 / (1.0 + np.exp(-(y - horizon) / rng.uniform(0.06, 0.12)))
    img = mix(fill(s, top), fill(s, bottom), t)
    cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.45)
    spot = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * rng.uniform(0.12, 0.25) ** 2))
    return np.clip(img * (0.85 + 0.3 * spot[..., None]), 0, 1)


def fabric(rng: np.random.Generator, s: int) -> np.ndarray:
    """Woven cloth: saturated gingham/plaid checks with a fine weave."""
    y, x = grid(s)
    angle = rng.choice([0.0, np.pi / 4]) + rng.uniform(-0.1, 0.1)
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    period = rng.uniform(0.12, 0.2)
    bu = (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    bv = (np.sin(2 * np.pi * v / period) > 0).astype(np.float32)
    hue = rng.uniform(0, 1)
    c1 = hsv_to_rgb(hue, rng.uniform(0.55, 0.85), rng.uniform(0.55, 0.85))
    c2 = hsv_to_rgb(hue + rng.uniform(-0.04, 0.04), rng.uniform(0.05, 0.2), rng.uniform(0.85, 0.97))
    t = (bu + bv) / 2.0  # 0, 0.5, 1: the three tones of gingham
    img = mix(fill(s, c2), fill(s, c1), t)
    weave_p = 3.0 / s  # one thread pair every 3 px
    weave = 0.5 + 0.5 * np.sin(2 * np.pi * u / weave_p) * np.sin(2 * np.pi * v / weave_p)
    return np.clip(img * (0.88 + 0.12 * weave[..., None]), 0, 1)


def outdoor(rng: np.random.Generator, s: int) -> np.ndarray:
    """Outdoor horizon: sky gradient, distant hills, ground plane, sometimes a sun."""
    y, x = grid(s)
    horizon = rng.uniform(0.4, 0.62)
    sky_top = hsv_to_rgb(rng.uniform(0.55, 0.62), rng.uniform(0.5, 0.8), rng.uniform(0.75, 0.95))
    sky_low = hsv_to_rgb(rng.uniform(0.52, 0.6), rng.uniform(0.15, 0.35), rng.uniform(0.9, 1.0))
    img = mix(fill(s, sky_top), fill(s, sky_low), np.clip(y / horizon, 0, 1) ** 1.5)
    if rng.random() < 0.6:
        sx, sy = rng.uniform(0.15, 0.85), rng.uniform(0.1, horizon - 0.15)
        sun = np.exp(-((x - sx) ** 2 + (y - sy) ** 2) / (2 * 0.05**2))
        img = mix(img, fill(s, np.array([1.0, 0.97, 0.8], np.float32)), np.clip(sun * 1.5, 0, 1))
    hill_h = horizon - (0.06 + 0.06 * smooth_noise(rng, s, 4)[0])  # silhouette height per column
    hills = (y > hill_h[None, :]).astype(np.float32)
    hill_c = hsv_to_rgb(rng.uniform(0.25, 0.45), rng.uniform(0.25, 0.5), rng.uniform(0.35, 0.55))
    img = mix(img, fill(s, hill_c), hills)
    ground_c = hsv_to_rgb(rng.choice([0.1, 0.28, 0.3]) + rng.uniform(-0.03, 0.03), rng.uniform(0.4, 0.7), rng.uniform(0.45, 0.7))
    ground = (y > horizon).astype(np.float32)
    shade = 0.8 + 0.25 * (y - horizon) / max(1 - horizon, 1e-3)
    img = mix(img, fill(s, ground_c) * shade[..., None], ground)
    return np.clip(img, 0, 1)


def tiles(rng: np.random.Generator, s: int) -> np.ndarray:
    """Ceramic tiles in a square or diamond grid with light grout and per-tile tone."""
    y, x = grid(s)
    if rng.random() < 0.35:
        x, y = (x + y) / np.sqrt(2), (x - y) / np.sqrt(2)
    size = rng.uniform(0.16, 0.26)
    ox, oy = rng.uniform(0, size, 2)
    ix, iy = np.floor((x + ox) / size), np.floor((y + oy) / size)
    fx, fy = (x + ox) / size - ix, (y + oy) / size - iy
    hue = rng.uniform(0, 1)
    c1 = hsv_to_rgb(hue, rng.uniform(0.3, 0.7), rng.uniform(0.55, 0.85))
    c2 = hsv_to_rgb(hue + rng.uniform(0.0, 0.15), rng.uniform(0.1, 0.5), rng.uniform(0.7, 0.95))
    checker = ((ix + iy) % 2).astype(np.float32) if rng.random() < 0.5 else np.zeros((s, s), np.float32)
    img = mix(fill(s, c1), fill(s, c2), checker)
    jitter = (np.sin(ix * 12.9898 + iy * 78.233) * 43758.5453) % 1.0
    img = img * (0.92 + 0.12 * jitter[..., None])
    edge = np.minimum(np.minimum(fx, 1 - fx), np.minimum(fy, 1 - fy)) * size
    grout = np.clip(1.0 - edge / 0.022, 0, 1)
    grout_c = hsv_to_rgb(hue, 0.05, rng.uniform(0.85, 0.98))
    return np.clip(mix(img, fill(s, grout_c), grout), 0, 1)


def bokeh(rng: np.random.Generator, s: int) -> np.ndarray:
    """Dark, defocused background with soft glowing discs of light."""
    y, x = grid(s)
    hue = rng.uniform(0, 1)
    dark = hsv_to_rgb(hue, rng.uniform(0.4, 0.8), rng.uniform(0.08, 0.2))
    img = fill(s, dark) * (0.8 + 0.4 * smooth_noise(rng, s, 3))[..., None]
    for _ in range(rng.integers(7, 13)):
        cx, cy = rng.uniform(-0.05, 1.05, 2)
        r = rng.uniform(0.05, 0.11)
        col = hsv_to_rgb(hue + rng.uniform(-0.12, 0.12), rng.uniform(0.3, 0.8), rng.uniform(0.7, 1.0))
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        disc = np.clip((r - d) / 0.02, 0, 1) * rng.uniform(0.45, 0.85)
        img = img + disc[..., None] * col
    return np.clip(blur(img, s / 128.0), 0, 1)


def paper(rng: np.random.Generator, s: int) -> np.ndarray:
    """Kraft / craft paper: warm flat tone, crumple shading and crisp fold creases."""
    y, x = grid(s)
    base = hsv_to_rgb(rng.uniform(0.06, 0.12), rng.uniform(0.3, 0.55), rng.uniform(0.6, 0.8))
    crumple = fractal_noise(rng, s, 4, 2)
    img = fill(s, base) * (0.85 + 0.25 * crumple)[..., None]
    fibres = smooth_noise(rng, s, max(s // 3, 4))
    img = img * (0.95 + 0.08 * fibres)[..., None]
    for _ in range(rng.integers(2, 4)):
        a = rng.uniform(0, np.pi)
        c = rng.uniform(0.25, 0.75)
        d = (x - 0.5) * np.cos(a) + (y - 0.5) * np.sin(a) - (c - 0.5)
        crease = np.exp(-(d**2) / (2 * 0.012**2))
        side = np.where(d > 0, 1.0, -1.0) * np.exp(-np.abs(d) / 0.08) * 0.06
        img = img * (1.0 + side[..., None]) - 0.25 * crease[..., None] * base
    return np.clip(img, 0, 1)


PAINTERS: dict[str, Painter] = {
    "marble": marble,
    "wood": wood,
    "studio": studio,
    "fabric": fabric,
    "outdoor": outdoor,
    "tiles": tiles,
    "bokeh": bokeh,
    "paper": paper,
}
