"""Metric functions (pure: arrays in, numbers out)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from scipy import linalg


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, D) and b (M, D)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as in the FID reference code
        eps = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def product_preservation(outputs: Sequence[np.ndarray], inputs: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """Share of product pixels (mask >= 128) whose RGB is bit-identical to the input."""
    same = total = 0
    for out, inp, m in zip(outputs, inputs, masks, strict=True):
        keep = m >= 128
        same += int((out[keep] == inp[keep]).all(axis=-1).sum())
        total += int(keep.sum())
    return same / max(total, 1)


def _edge_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Product pixels within `width` px of the background (inside the product's edge)."""
    keep = mask >= 128
    grown_bg = ~keep
    for _ in range(width):
        g = grown_bg.copy()
        g[1:, :] |= grown_bg[:-1, :]
        g[:-1, :] |= grown_bg[1:, :]
        g[:, 1:] |= grown_bg[:, :-1]
        g[:, :-1] |= grown_bg[:, 1:]
        grown_bg = g
    return keep & grown_bg


def edge_bleed(raw: Sequence[np.ndarray], inputs: Sequence[np.ndarray], masks: Sequence[np.ndarray], width: int = 2) -> float:
    """How far the model's own output (before compositing) departs from the product along the
    product's edge: mean |raw - input| / 255 over the `width`-px band inside the product boundary.
    0 = the generated background stops exactly at the product; large = background colour bleeds
    into the product's silhouette (a halo once composited)."""
    diffs = []
    for r, inp, m in zip(raw, inputs, masks, strict=True):
        if r.shape[:2] != inp.shape[:2]:
            r = np.asarray(Image.fromarray(r).resize((inp.shape[1], inp.shape[0]), Image.BICUBIC))
        band = _edge_band(m, width)
        if band.any():
            diffs.append(np.abs(r[band].astype(np.float64) - inp[band].astype(np.float64)).mean() / 255.0)
    return float(np.mean(diffs)) if diffs else 0.0
