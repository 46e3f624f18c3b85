"""Augmentations for diffusion training. Each returns (images, product, valid), where `valid`
marks pixels whose training target is known (1) — moving a product uncovers background nobody
has seen, which must not be learned as "background"."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _flip(x: torch.Tensor, product: torch.Tensor, valid: torch.Tensor):
    flip = (torch.rand(x.shape[0]) < 0.5)[:, None, None, None].to(x.device)
    return (torch.where(flip, t.flip(3), t) for t in (x, product, valid))


def flip_augment(x: torch.Tensor, product: torch.Tensor):
    return tuple(_flip(x, product, torch.ones_like(product)))


def replace_augment(x: torch.Tensor, product: torch.Tensor, scale=(0.75, 1.15), max_shift: float = 0.3):
    """Self-supervised brand training: move and rescale the product inside its own reference (the
    background stays where it is), then flip. The background the product used to cover is unknown,
    so it is marked invalid; the product's new footprint is product (kept, not generated)."""
    b, _, h, w = x.shape
    dev = x.device
    s = torch.empty(b, device=dev).uniform_(*scale)
    # product bounding boxes (normalised to [-1, 1]) bound the shift so the product stays in frame
    ys = product[:, 0].amax(2) > 0.5  # (B, H) rows with product
    xs = product[:, 0].amax(1) > 0.5  # (B, W)
    coords_y = torch.linspace(-1, 1, h, device=dev)
    coords_x = torch.linspace(-1, 1, w, device=dev)
    big = torch.tensor(9.0, device=dev)
    y0 = torch.where(ys, coords_y, big).amin(1)
    y1 = torch.where(ys, coords_y, -big).amax(1)
    x0 = torch.where(xs, coords_x, big).amin(1)
    x1 = torch.where(xs, coords_x, -big).amax(1)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    hy, hx = (y1 - y0) / 2 * s, (x1 - x0) / 2 * s
    # new centre: random within the frame, at most max_shift (in [-1, 1] units) from the old one
    ny = (cy + torch.empty(b, device=dev).uniform_(-max_shift, max_shift)).clamp(-1 + hy, 1 - hy)
    nx = (cx + torch.empty(b, device=dev).uniform_(-max_shift, max_shift)).clamp(-1 + hx, 1 - hx)
    # inverse map (output -> source): src = (out - new_centre) / s + old_centre
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = 1 / s
    theta[:, 1, 1] = 1 / s
    theta[:, 0, 2] = cx - nx / s
    theta[:, 1, 2] = cy - ny / s
    grid = F.affine_grid(theta, (b, 3, h, w), align_corners=False)
    moved_x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    moved_p = (F.grid_sample(product, grid, mode="nearest", padding_mode="zeros", align_corners=False) > 0.5).float()
    new_x = torch.where(moved_p > 0.5, moved_x, x)
    valid = 1.0 - ((product > 0.5) & (moved_p < 0.5)).float()
    return tuple(_flip(new_x, moved_p, valid))
