"""Parametric, shaded products of BG-Synth with exact masks.

A `Product` is an instance (family + proportions + colours), identified by an id; held-out splits
never share an instance. `place` draws a random scale and position per sample, and `render` gives
the product's RGB, its exact binary mask (inside test at pixel centres) and a soft contact shadow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bg_platform.data.synth.noise import blur, grid, hsv_to_rgb

FAMILIES = ("bottle", "box", "can", "sphere", "shoe", "mug")


@dataclass(frozen=True)
class Product:
    id: str
    family: str
    colour: tuple[float, float, float]
    accent: tuple[float, float, float]
    aspect: float  # width / height of the bounding box
    shape: tuple[float, ...]  # family-specific proportions in [0, 1]


@dataclass(frozen=True)
class Placement:
    cx: float  # horizontal centre, image fraction
    bottom: float  # where the product stands, image fraction from the top
    height: float  # product height, image fraction

    @property
    def top(self) -> float:
        return self.bottom - self.height


ASPECTS = {"bottle": (0.3, 0.45), "box": (0.7, 1.1), "can": (0.5, 0.7), "sphere": (1.0, 1.0), "shoe": (1.6, 2.2), "mug": (0.85, 1.05)}
HEIGHTS = {"bottle": (0.45, 0.72), "box": (0.32, 0.5), "can": (0.35, 0.55), "sphere": (0.28, 0.42), "shoe": (0.2, 0.3), "mug": (0.3, 0.45)}


def sample_product(rng: np.random.Generator, product_id: str, family: str | None = None) -> Product:
    family = family or str(rng.choice(FAMILIES))
    hue = rng.uniform(0, 1)
    colour = hsv_to_rgb(hue, rng.uniform(0.35, 0.95), rng.uniform(0.35, 0.95))
    accent = hsv_to_rgb(hue + rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.9), rng.uniform(0.5, 1.0))
    lo, hi = ASPECTS[family]
    return Product(
        id=product_id,
        family=family,
        colour=tuple(float(c) for c in colour),
        accent=tuple(float(c) for c in accent),
        aspect=float(rng.uniform(lo, hi)),
        shape=tuple(float(v) for v in rng.uniform(0, 1, 4)),
    )


def place(rng: np.random.Generator, product: Product) -> Placement:
    lo, hi = HEIGHTS[product.family]
    height = rng.uniform(lo, hi)
    half_w = height * product.aspect / 2
    cx = rng.uniform(max(0.22, half_w + 0.04), min(0.78, 1 - half_w - 0.04))
    bottom = rng.uniform(max(0.62, height + 0.06), 0.93)
    return Placement(cx=float(cx), bottom=float(bottom), height=float(height))


def _cylinder_shade(u: np.ndarray) -> np.ndarray:
    """Lambert-ish shading across a vertical cylinder, light from the upper left, plus a highlight."""
    n = np.sqrt(np.clip(1 - u**2, 0, 1))
    shade = 0.45 + 0.55 * np.clip(n * 0.85 - u * 0.35, 0, 1)
    return shade + 0.35 * np.exp(-((u + 0.45) ** 2) / (2 * 0.08**2))


def render(product: Product, placement: Placement, s: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB (s, s, 3) float in [0, 1] valid where mask, and the exact mask (s, s) bool."""
    y, x = grid(s)
    h = placement.height
    w = h * product.aspect
    u = (x - placement.cx) / (w / 2)  # -1..1 across the product
    v = (placement.bottom - y) / h  # 0 at the bottom, 1 at the top
    colour = np.array(product.colour, np.float32)
    accent = np.array(product.accent, np.float32)
    a, b, c, d = product.shape
    fam = product.family
    rgb = np.zeros((s, s, 3), np.float32)

    if fam == "bottle":
        shoulder = 0.55 + 0.15 * a
        neck_w = 0.28 + 0.12 * b
        taper = np.clip((v - shoulder) / (0.18 + 0.1 * c), 0, 1)
        half = np.where(v < shoulder, 1.0, 1.0 - (1.0 - neck_w) * (3 * taper**2 - 2 * taper**3))
        mask = (v >= 0) & (v <= 1) & (np.abs(u) <= half)
        uu = np.clip(u / np.maximum(half, 1e-3), -1, 1)
        rgb[:] = colour * _cylinder_shade(uu)[..., None]
        cap = v > 0.9
        label = (v > 0.18 + 0.1 * d) & (v < 0.42 + 0.1 * d)
        rgb[cap] = (accent * 0.6)[None, :] * _cylinder_shade(uu)[cap][:, None]
        rgb[label] = accent[None, :] * _cylinder_shade(uu)[label][:, None]
    elif fam == "box":
        depth = 0.18 + 0.12 * a  # share of height taken by the top face
        front_w = 0.78 + 0.1 * b  # share of width taken by the front face
        fu = (u + 1) / 2  # 0..1 across the bounding box
        front = (v >= 0) & (v <= 1 - depth) & (fu >= 0) & (fu <= front_w)
        # top face: a parallelogram sheared to the right
        tv = (v - (1 - depth)) / depth
        top = (tv >= 0) & (tv <= 1) & (fu >= tv * (1 - front_w)) & (fu <= front_w + tv * (1 - front_w))
        # side face: a parallelogram sheared upwards
        su = (fu - front_w) / (1 - front_w)
        side = (su >= 0) & (su <= 1) & (v >= su * depth) & (v <= 1 - depth + su * depth)
        mask = front | top | side
        rgb[front] = colour * 0.85
        rgb[top] = np.clip(colour * 1.25 + 0.08, 0, 1)
        rgb[side] = colour * 0.55
        band = front & (v > 0.35 + 0.2 * c) & (v < 0.5 + 0.2 * c)
        rgb[band] = accent * 0.85
    elif fam == "can":
        rim = 0.08 + 0.04 * a
        body = (v >= rim / 2) & (v <= 1 - rim / 2) & (np.abs(u) <= 1)
        top_e = ((v - (1 - rim / 2)) / (rim / 2)) ** 2 + u**2 <= 1
        bot_e = ((v - rim / 2) / (rim / 2)) ** 2 + u**2 <= 1
        mask = body | top_e | bot_e
        rgb[:] = colour * _cylinder_shade(np.clip(u, -1, 1))[..., None]
        label = body & (v > 0.3 + 0.1 * b) & (v < 0.62 + 0.1 * b)
        rgb[label] = accent[None, :] * _cylinder_shade(np.clip(u, -1, 1))[label][:, None]
        rgb[top_e & (v > 1 - rim / 2)] = np.array([0.8, 0.8, 0.82], np.float32)
    elif fam == "sphere":
        r2 = u**2 + ((v - 0.5) * 2) ** 2
        mask = r2 <= 1
        nz = np.sqrt(np.clip(1 - r2, 0, 1))
        lam = np.clip(-0.45 * u + 0.5 * (v - 0.5) * 2 + 0.75 * nz, 0, 1)
        spec = np.exp(-((u + 0.35) ** 2 + ((v - 0.5) * 2 - 0.4) ** 2) / (2 * 0.12**2))
        rgb[:] = colour * (0.3 + 0.7 * lam)[..., None] + 0.5 * spec[..., None]
        if a > 0.5:  # a stripe around the ball
            stripe = mask & (np.abs((v - 0.5) * 2 - 0.3 * u) < 0.12 + 0.08 * b)
            rgb[stripe] = accent * (0.3 + 0.7 * lam[stripe])[:, None]
    elif fam == "shoe":
        fu = (u + 1) / 2  # 0 heel .. 1 toe
        top_line = 0.55 + 0.45 * np.clip(1 - fu / (0.45 + 0.1 * a), 0, 1) ** 0.5  # ankle high at the heel
        toe_round = np.sqrt(np.clip(1 - ((fu - 0.72) / 0.28).clip(0) ** 2, 0, 1))
        upper_h = np.where(fu > 0.72, 0.45 * toe_round, np.where(fu < 0.45, top_line, 0.45 + 0.1 * (0.72 - fu)))
        mask = (fu >= 0) & (fu <= 1) & (v >= 0) & (v <= upper_h)
        sole = mask & (v < 0.16 + 0.06 * b)
        rgb[:] = colour * (0.65 + 0.35 * np.clip(v / 0.9, 0, 1))[..., None]
        rgb[sole] = np.clip(accent * 0.3 + 0.65, 0, 1)
        lace = mask & (fu > 0.42) & (fu < 0.68) & (np.abs(v - (0.42 + 0.1 * (0.68 - fu))) < 0.05)
        rgb[lace] = accent
    elif fam == "mug":
        body_w = 0.72 + 0.08 * a  # body share of the box width; the handle takes the rest
        fu = (u + 1) / 2
        bu = (fu / body_w) * 2 - 1
        body = (v >= 0) & (v <= 1) & (np.abs(bu) <= 1)
        hc_u, hc_v = body_w, 0.5 + 0.1 * (b - 0.5)
        rr = np.sqrt(((fu - hc_u) / (1 - body_w + 0.02)) ** 2 + ((v - hc_v) / (0.3 + 0.05 * c)) ** 2)
        handle = (rr <= 1.0) & (rr >= 0.55) & (fu > body_w)
        mask = body | handle
        rgb[:] = colour * _cylinder_shade(np.clip(bu, -1, 1))[..., None]
        rgb[handle] = colour * 0.7
        if d > 0.4:
            band = body & (v > 0.55) & (v < 0.7)
            rgb[band] = accent[None, :] * _cylinder_shade(np.clip(bu, -1, 1))[band][:, None]
    else:  # pragma: no cover - FAMILIES is closed
        raise ValueError(f"unknown product family {fam!r}; expected one of {FAMILIES}")
    return np.clip(rgb, 0, 1), mask


def contact_shadow(placement: Placement, aspect: float, s: int, strength: float = 0.55) -> np.ndarray:
    """A soft elliptical shadow where the product meets the ground, (s, s) in [0, strength]."""
    y, x = grid(s)
    half_w = placement.height * aspect / 2 * 1.15
    e = ((x - placement.cx) / max(half_w, 1e-3)) ** 2 + ((y - placement.bottom) / 0.035) ** 2
    shadow = np.clip(1.2 - e, 0, 1)
    return blur(shadow, s / 40.0) * strength
