"""Validation of a generate request at the edge: uploads, sizes, formats, mask, fields.

Every problem is a 4xx `BadRequest` (413 for oversized uploads) whose message names the field,
the value and the fix; nothing a client sends can cause a 500. Uploads are decoded only by
`bg_platform.data.imageio.read_image` (byte and pixel limits checked before decoding).
The brand is checked later, against the mapping snapshot the request is served with.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bg_platform.data.imageio import read_image
from bg_platform.errors import ImageError
from bg_platform.serving.config import SCHEDULERS, ServingConfig
from bg_platform.serving.errors import BadRequest, PayloadTooLarge

MAX_SEED = 2**32 - 1


@dataclass(frozen=True, eq=False)
class GenerateRequest:
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8, product >= 128
    category: str
    brand: str | None
    seeds: tuple[int, ...]
    steps: int
    guidance: float
    scheduler: str
    confine: bool = True

    @property
    def rows(self) -> int:
        return len(self.seeds)

    @property
    def batch_key(self) -> tuple:
        """Requests can share a batch only if they sample the same way."""
        return (self.steps, self.guidance, self.scheduler, self.confine)


Upload = bytes | bytearray | Path | str


def _read(field: str, upload: Upload, cfg: ServingConfig):
    if isinstance(upload, str):
        upload = Path(upload)
    size = upload.stat().st_size if isinstance(upload, Path) else len(upload)
    if size > cfg.max_upload_bytes:
        raise PayloadTooLarge(
            f"{field}: {size} bytes exceeds the {cfg.max_upload_bytes}-byte limit (BGP_MAX_UPLOAD_BYTES); "
            "send a smaller PNG or JPEG"
        )
    data = upload.read_bytes() if isinstance(upload, Path) else bytes(upload)
    try:
        return read_image(data, max_pixels=cfg.max_pixels, max_bytes=cfg.max_upload_bytes, what=field)
    except ImageError as exc:
        raise BadRequest(str(exc)) from None


def _mask(image, mask_upload: Upload | None, cfg: ServingConfig) -> np.ndarray:
    if mask_upload is None:
        if image.alpha is None:
            raise BadRequest(
                "mask: not given and the image has no transparency; send a mask file (white = product) or an "
                "RGBA PNG whose opaque pixels are the product"
            )
        return image.alpha
    loaded = _read("mask", mask_upload, cfg)
    if loaded.alpha is not None:
        return loaded.alpha
    rgb = loaded.rgb.astype(np.uint32)  # ITU-R 601 luma, as imageio.read_mask
    return ((rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114 + 500) // 1000).astype(np.uint8)


def _int(field: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise BadRequest(f"{field}: {value!r} is not an integer; send a whole number in [{low}, {high}]")
    if not low <= int(value) <= high:
        raise BadRequest(f"{field}: {value} is out of range; allowed values: {low}..{high}")
    return int(value)


def parse_generate(
    cfg: ServingConfig,
    categories: Sequence[str],
    *,
    image: Upload | None,
    mask: Upload | None = None,
    category: str | None = None,
    brand: str | None = None,
    seed: int | None = None,
    num_images: int | None = 1,
    steps: int | None = None,
    guidance: float | None = None,
    scheduler: str | None = None,
) -> GenerateRequest:
    if image is None:
        raise BadRequest("image: missing; send the product image as a multipart file field named 'image'")
    if not category:
        raise BadRequest(f"category: missing; allowed values: {sorted(categories)}")
    if category not in categories:
        raise BadRequest(f"category: unknown value {category!r}; allowed values: {sorted(categories)}")
    n = _int("num_images", 1 if num_images is None else num_images, 1, cfg.max_num_images)
    if seed is None:
        seed = secrets.randbelow(MAX_SEED - n + 2)
    seed = _int("seed", seed, 0, MAX_SEED - n + 1)
    n_steps = _int("steps", cfg.steps if steps is None else steps, 1, cfg.max_steps)
    scale = cfg.guidance if guidance is None else guidance
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 1.0 <= float(scale) <= 30.0:
        raise BadRequest(f"guidance: {scale!r} is out of range; allowed values: a number in [1, 30] (1 = no guidance)")
    sampler = scheduler or cfg.scheduler
    if sampler not in SCHEDULERS:
        raise BadRequest(f"scheduler: unknown value {sampler!r}; allowed values: {list(SCHEDULERS)}")
    loaded = _read("image", image, cfg)
    mask_arr = _mask(loaded, mask, cfg)
    _check_mask(loaded.rgb, mask_arr)
    return GenerateRequest(
        image=loaded.rgb, mask=mask_arr, category=category, brand=brand or None,
        seeds=tuple(range(seed, seed + n)), steps=n_steps, guidance=float(scale), scheduler=sampler,
    )


def _check_mask(image: np.ndarray, mask: np.ndarray) -> None:
    """The pipeline's own checks (size, empty, full), raised as BadRequest at the edge."""
    from bg_platform.model.pipeline import RequestError, check_request

    try:
        check_request(image, mask, "_", ["_"])
    except RequestError as exc:
        raise BadRequest(str(exc)) from None


def check_brand(brand: str | None, served: Sequence[str]) -> None:
    if brand is not None and brand not in served:
        raise BadRequest(
            f"brand: unknown value {brand!r}; allowed values: {sorted(served)} (or no brand for the base model); "
            "a brand is served once its adapter is promoted to production in the registry"
        )
