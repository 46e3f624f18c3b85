"""Labelled PNG image grids: dataset contact sheets, sample grids, base-vs-adapter comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bg_platform.data.imageio import write_png

LABEL_W = 96
HEADER_H = 14


def mask_to_rgb(mask: np.ndarray) -> np.ndarray:
    return np.repeat(mask[..., None], 3, axis=2)


def _fit(tile: np.ndarray, size: int) -> np.ndarray:
    if tile.ndim == 2:
        tile = mask_to_rgb(tile)
    if tile.shape[0] == size and tile.shape[1] == size:
        return tile
    return np.asarray(Image.fromarray(tile).resize((size, size), Image.NEAREST))


def image_grid(
    rows: Sequence[Sequence[np.ndarray | None]],
    row_labels: Sequence[str] = (),
    col_labels: Sequence[str] = (),
    tile: int = 128,
    gap: int = 2,
) -> np.ndarray:
    """Compose uint8 tiles (H, W, 3) or masks (H, W) into one labelled RGB image; None = blank."""
    n_cols = max((len(r) for r in rows), default=0)
    left = LABEL_W if row_labels else 0
    top = HEADER_H if col_labels else 0
    width = left + n_cols * (tile + gap) + gap
    height = top + len(rows) * (tile + gap) + gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for j, label in enumerate(col_labels):
        draw.text((left + gap + j * (tile + gap) + 2, 1), str(label)[:24], fill=(0, 0, 0), font=font)
    for i, row in enumerate(rows):
        y = top + gap + i * (tile + gap)
        if i < len(row_labels):
            draw.text((4, y + tile // 2 - 6), str(row_labels[i])[:15], fill=(0, 0, 0), font=font)
        for j, img in enumerate(row):
            if img is None:
                continue
            canvas.paste(Image.fromarray(_fit(img, tile)), (left + gap + j * (tile + gap), y))
    return np.asarray(canvas)


def save_grid(path: str | Path, *args, **kwargs) -> Path:
    path = Path(path)
    write_png(path, image_grid(*args, **kwargs))
    return path
