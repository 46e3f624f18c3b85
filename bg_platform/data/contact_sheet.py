"""Contact sheet of a dataset: per category and per brand, a few samples with their masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bg_platform.data import manifest
from bg_platform.data.imageio import read_image, read_mask


def dataset_rows(dataset_dir: str | Path, per_group: int = 4, seed: int = 0) -> tuple[list[list[np.ndarray]], list[str]]:
    """Rows of [image, mask, image, mask, ...]: one row per category (no brand), then per brand."""
    root = Path(dataset_dir)
    frame = manifest.read(root)
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    groups = [("category", c, frame[(frame.category == c) & (frame.brand == "")]) for c in sorted(frame.category.unique())]
    groups += [("brand", b, frame[frame.brand == b]) for b in sorted(frame.brand.unique()) if b]
    for kind, name, part in groups:
        if part.empty:
            continue
        pick = part.iloc[rng.permutation(len(part))[:per_group]]
        row = []
        for rec in pick.itertuples():
            row.append(read_image(root / rec.image).rgb)
            row.append(read_mask(root / rec.mask))
        rows.append(row)
        labels.append(name if kind == "category" else f"brand:{name}")
    return rows, labels


def dataset_contact_sheet(dataset_dir: str | Path, out: str | Path, per_group: int = 4) -> Path:
    from bg_platform.grids import save_grid

    rows, labels = dataset_rows(dataset_dir, per_group)
    cols = ["image", "mask"] * per_group
    return save_grid(out, rows, row_labels=labels, col_labels=cols, tile=96)
