"""The inpainting conditioning shared by training and generation (one definition, so they match).

UNet input = [noisy latent, background mask, latent of the product-only image] (the SD-inpainting
channel order). The background mask at latent resolution is the share of background pixels in
each latent cell (1 = repaint); the product-only image has its background set to 0 (mid grey).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bg_platform.model.tokens import PromptSpec, category_token_mask, encode_prompts


def to_tensor_images(images: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) list -> (B, 3, H, W) float in [-1, 1]."""
    arr = np.stack(images).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def to_tensor_masks(masks: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W) list, product >= 128 -> (B, 1, H, W) float, 1 = product."""
    arr = (np.stack(masks) >= 128).astype(np.float32)
    return torch.from_numpy(arr)[:, None]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def conditioning(codec, images: torch.Tensor, product: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked-image latents, latent background mask) for images [-1, 1] and product masks {0, 1}."""
    masked = images * product
    z_masked = codec.encode(masked)
    h, w = z_masked.shape[-2:]
    bg_latent = F.adaptive_avg_pool2d(1.0 - product, (h, w))
    return z_masked, bg_latent.to(z_masked.dtype)


def unet_input(noisy: torch.Tensor, bg_latent: torch.Tensor, z_masked: torch.Tensor) -> torch.Tensor:
    return torch.cat([noisy, bg_latent, z_masked], dim=1)


def encode_text(tokenizer, text_encoder, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = encode_prompts(tokenizer, prompts).to(text_encoder.device)
    return text_encoder(ids)[0], ids


def prompts_and_token_mask(
    tokenizer, spec: PromptSpec, categories: Sequence[str | None], brand_texts: Sequence[str | None] | None = None
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Prompts for (category, brand token) rows ("" for unconditional rows: category None), their
    ids, and the [B, T] mask of each row's category tokens."""
    brand_texts = brand_texts or [None] * len(categories)
    prompts = [spec.prompt(c, b) if c else "" for c, b in zip(categories, brand_texts, strict=True)]
    ids = encode_prompts(tokenizer, prompts)
    return prompts, ids, category_token_mask(tokenizer, spec, ids, categories)
