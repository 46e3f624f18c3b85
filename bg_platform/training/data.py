"""Training / evaluation data from a manifest dataset, held in memory as uint8 tensors.

At the embedded default (a few thousand 64 px samples, ~50 MB) everything fits in RAM and a
step never waits on I/O. Images of other sizes are resized to the model resolution (bicubic;
masks nearest) when loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from bg_platform.data import manifest
from bg_platform.data.imageio import read_image, read_mask
from bg_platform.errors import DataError


@dataclass
class ImageSet:
    ids: list[str]
    images: torch.Tensor  # (N, H, W, 3) uint8
    masks: torch.Tensor  # (N, H, W) uint8, product = 255
    categories: list[str]
    brands: list[str]
    products: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: Sequence[int]) -> ImageSet:
        idx = list(idx)
        return ImageSet(
            [self.ids[i] for i in idx],
            self.images[idx],
            self.masks[idx],
            [self.categories[i] for i in idx],
            [self.brands[i] for i in idx],
            [self.products[i] for i in idx],
        )


def _resize(arr: np.ndarray, size: int, resample) -> np.ndarray:
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    return np.asarray(Image.fromarray(arr).resize((size, size), resample))


def load_set(
    dataset_dir: str | Path,
    resolution: int,
    *,
    splits: Sequence[str] = ("train",),
    brand: str | None = "",
    categories: Sequence[str] | None = None,
    progress: bool = False,
) -> ImageSet:
    """Rows of `splits`; brand "" = category-default samples only, None = all, "x" = brand x only."""
    root = Path(dataset_dir)
    frame = manifest.read(root)
    sel = frame[frame.split.isin(list(splits))]
    if brand is not None:
        sel = sel[sel.brand == brand]
    if categories is not None:
        sel = sel[sel.category.isin(list(categories))]
    if sel.empty:
        raise DataError(
            f"{root}: no samples with split in {list(splits)}"
            + (f", brand {brand!r}" if brand is not None else "")
            + "; check the dataset (bgp validate) and the filters"
        )
    imgs, masks = [], []
    for rec in tqdm(sel.itertuples(), total=len(sel), desc="load", disable=not progress):
        imgs.append(_resize(read_image(root / rec.image).rgb, resolution, Image.BICUBIC))
        masks.append(_resize(read_mask(root / rec.mask), resolution, Image.NEAREST))
    return ImageSet(
        ids=list(sel.id),
        images=torch.from_numpy(np.stack(imgs)),
        masks=torch.from_numpy((np.stack(masks) >= 128).astype(np.uint8) * 255),
        categories=list(sel.category),
        brands=list(sel.brand),
        products=list(sel["product"]),
    )


def concat(sets: Sequence[ImageSet]) -> ImageSet:
    return ImageSet(
        [i for s in sets for i in s.ids],
        torch.cat([s.images for s in sets]),
        torch.cat([s.masks for s in sets]),
        [c for s in sets for c in s.categories],
        [b for s in sets for b in s.brands],
        [p for s in sets for p in s.products],
    )


class ImageSetDataset(torch.utils.data.Dataset):
    def __init__(self, data: ImageSet):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        d = self.data
        return {"image": d.images[i], "mask": d.masks[i], "category": d.categories[i], "brand": d.brands[i]}


def to_model_space(images_u8: torch.Tensor, masks_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, W, 3) uint8, (B, H, W) uint8 -> images (B, 3, H, W) in [-1, 1], product (B, 1, H, W) {0, 1}."""
    x = images_u8.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x, (masks_u8 >= 128).float()[:, None]
