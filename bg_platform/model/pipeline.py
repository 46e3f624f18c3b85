"""Generation: product image + product mask + category [+ brand] -> images with a new background.

`check_request` validates at the edge (clear messages naming the argument, value and fix);
`BgPipeline.generate` runs classifier-free-guided denoising with the mask-guided processor, then
composites the product's own pixels back at the input's resolution, so product preservation is
exact by construction. Every image's noise comes from its own seed, so an image does not depend
on which other requests share its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from bg_platform.errors import BgError
from bg_platform.model import attention
from bg_platform.model.components import Components
from bg_platform.model.inpaint import (
    conditioning,
    prompts_and_token_mask,
    to_tensor_images,
    to_tensor_masks,
    to_uint8,
    unet_input,
)
from bg_platform.model.lora import BASE

SCHEDULERS = ("ddim", "dpm", "euler", "ddpm")


class RequestError(BgError):
    """A generation request that cannot be served as given."""


@dataclass
class Generated:
    images: list[np.ndarray]  # uint8 (H, W, 3) at each input's resolution, product pixels exact
    raw: list[np.ndarray]  # decoded model output before compositing, at model resolution


def check_request(image: np.ndarray, mask: np.ndarray, category: str, categories: Sequence[str], *, min_coverage=0.001, max_coverage=0.98) -> None:
    if category not in categories:
        raise RequestError(f"category: unknown value {category!r}; allowed values: {sorted(categories)}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise RequestError(f"image: expected an RGB image, got array shape {image.shape}")
    if mask.shape != image.shape[:2]:
        raise RequestError(
            f"mask: size {mask.shape[1]}x{mask.shape[0]} differs from the image's {image.shape[1]}x{image.shape[0]}; "
            f"send a mask of the same size"
        )
    cover = float((mask >= 128).mean())
    if cover < min_coverage:
        raise RequestError("mask: empty (no product pixel >= 128); the mask must mark the product in white/opaque")
    if cover > max_coverage:
        raise RequestError(
            f"mask: covers {cover:.1%} of the image, leaving no background to generate; mark only the product"
        )


def make_scheduler(name: str, noise_scheduler):
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    cfg = dict(noise_scheduler.config)
    if name == "ddim":  # clip_sample=False: clipping latents to +-1 greys everything out
        return DDIMScheduler.from_config(cfg, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing")
    if name == "dpm":
        return DPMSolverMultistepScheduler.from_config(cfg, timestep_spacing="trailing")
    if name == "euler":
        return EulerDiscreteScheduler.from_config(cfg, timestep_spacing="trailing")
    if name == "ddpm":
        return DDPMScheduler.from_config(cfg, timestep_spacing="trailing")
    raise RequestError(f"scheduler: unknown value {name!r}; allowed values: {list(SCHEDULERS)}")


def _resize(img: np.ndarray, size: int, resample=Image.BICUBIC) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), resample))


class BgPipeline:
    """The base pipeline, loaded once. With `lora_slots` > 0 it carries that many pre-allocated
    LoRA slots (see model.lora.LoraSlots) and every row of a batch can use a different one."""

    def __init__(self, components: Components, device: str | torch.device = "cpu", lora_slots: int = 0, max_rank: int = 16,
                 lora_targets: Sequence[str] | None = None):
        self.c = components.to(device)
        self.device = torch.device(device)
        self.store = attention.AttnStore()
        attention.install(self.c.unet, self.store)
        self.slots = None
        if lora_slots:
            from bg_platform.model.lora import TARGETS, LoraSlots

            self.slots = LoraSlots(self.c.unet, self.c.text_encoder, self.c.tokenizer, slots=lora_slots, max_rank=max_rank,
                                   targets=tuple(lora_targets or TARGETS))
        for m in self.c.modules().values():
            m.eval()

    @property
    def categories(self) -> tuple[str, ...]:
        return self.c.meta.categories

    def _routed(self, route: Sequence[str]):
        return self.slots.route(route) if self.slots is not None else nullcontext()

    @torch.no_grad()
    def generate(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        categories: Sequence[str],
        seeds: Sequence[int],
        *,
        slots: Sequence[str | None] | None = None,
        steps: int = 25,
        guidance: float = 3.0,
        scheduler: str = "ddim",
        confine: bool = True,
        batch_size: int = 64,
        progress: bool = False,
    ) -> Generated:
        n = len(images)
        if not (len(masks) == len(categories) == len(seeds) == n):
            raise RequestError("images, masks, categories and seeds must have the same length")
        for img, m, cat in zip(images, masks, categories, strict=True):
            check_request(img, m, cat, self.categories)
        out, raw = [], []
        chunks = range(0, n, batch_size)
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc="generate", unit="batch")
        for s in chunks:
            sl = slice(s, s + batch_size)
            b_out, b_raw = self._generate_batch(
                images[sl], masks[sl], categories[sl], seeds[sl], (slots or [None] * n)[sl],
                steps, guidance, scheduler, confine,
            )
            out += b_out
            raw += b_raw
        return Generated(out, raw)

    def _generate_batch(self, images, masks, categories, seeds, slots, steps, guidance, scheduler, confine):
        c, dev, res = self.c, self.device, self.c.meta.resolution
        b = len(images)
        x = to_tensor_images([_resize(i, res) for i in images]).to(dev)
        product = to_tensor_masks([_resize(m, res, Image.NEAREST) for m in masks]).to(dev)
        z_masked, bg_latent = conditioning(c.codec, x, product)
        use_cfg = guidance > 1.0
        rows_cat = list(categories) + ([None] * b if use_cfg else [])
        if any(slots) and self.slots is None:
            raise RequestError("this pipeline has no LoRA slots; build it with lora_slots > 0 to use adapters")
        brand_texts = [self.slots.token_of(sl) if (self.slots and sl) else None for sl in slots]
        rows_brand = brand_texts + ([None] * b if use_cfg else [])
        _, ids, token_mask = prompts_and_token_mask(c.tokenizer, c.meta.prompt, rows_cat, rows_brand)
        route = [sl or BASE for sl in slots] * (2 if use_cfg else 1)
        text = c.text_encoder(ids.to(dev))[0]
        sched = make_scheduler(scheduler, c.noise_scheduler)
        sched.set_timesteps(steps, device=dev)
        shape = (c.codec.latent_channels, *z_masked.shape[-2:])
        latents = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(sd))) for sd in seeds]).to(dev)
        latents = latents * sched.init_noise_sigma
        reps = 2 if use_cfg else 1
        self.store.token_mask = token_mask.to(dev)
        self.store.product_mask = product.repeat(reps, 1, 1, 1)
        self.store.confine = confine
        self.store.record = False
        try:
            for t in sched.timesteps:
                self.store.reset()
                inp = sched.scale_model_input(latents, t)
                model_in = unet_input(inp, bg_latent, z_masked).repeat(reps, 1, 1, 1)
                with self._routed(route):
                    pred = c.unet(model_in, t, encoder_hidden_states=text).sample
                if use_cfg:
                    cond, uncond = pred[:b], pred[b:]
                    pred = uncond + guidance * (cond - uncond)
                latents = sched.step(pred, t, latents).prev_sample
        finally:
            self.store.record = self.store.confine = False
            self.store.token_mask = self.store.product_mask = None
            self.store.reset()
        decoded = c.codec.decode(latents.to(torch.float32) if latents.dtype != torch.float32 else latents)
        raw_u8 = to_uint8(decoded)
        out = []
        for i in range(b):
            h, w = images[i].shape[:2]
            bg = raw_u8[i] if (h, w) == (res, res) else np.asarray(Image.fromarray(raw_u8[i]).resize((w, h), Image.BICUBIC))
            keep = (np.asarray(masks[i]) >= 128)[..., None]
            out.append(np.where(keep, images[i], bg))
        return out, list(raw_u8)


@torch.no_grad()
def probe_attention(
    pipe: BgPipeline,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    categories: Sequence[str],
    timesteps: Sequence[int] = (200, 500, 800),
    seed: int = 0,
    confine: bool = False,
) -> list[float]:
    """Share of each category token's cross-attention mass on the background, measured on real
    images noised to a few timesteps (conditional pass only). Without confinement this is what the
    model learned; with confinement it is what generation actually uses."""
    c, dev, res = pipe.c, pipe.device, pipe.c.meta.resolution
    x = to_tensor_images([_resize(i, res) for i in images]).to(dev)
    product = to_tensor_masks([_resize(m, res, Image.NEAREST) for m in masks]).to(dev)
    z0 = c.codec.encode(x)
    z_masked, bg_latent = conditioning(c.codec, x, product)
    _, ids, token_mask = prompts_and_token_mask(c.tokenizer, c.meta.prompt, list(categories))
    text = c.text_encoder(ids.to(dev))[0]
    g = torch.Generator().manual_seed(seed)
    store = pipe.store
    store.token_mask, store.product_mask, store.record, store.confine = token_mask.to(dev), product, True, confine
    shares = []
    try:
        for t in timesteps:
            store.reset()
            tt = torch.full((len(images),), int(t), device=dev, dtype=torch.long)
            noisy = c.noise_scheduler.add_noise(z0, torch.randn(z0.shape, generator=g).to(dev), tt)
            c.unet(unet_input(noisy, bg_latent, z_masked), tt, encoder_hidden_states=text)
            shares.append(attention.background_mass(store, 1 - product))
    finally:
        store.record = store.confine = False
        store.token_mask = store.product_mask = None
        store.reset()
    return torch.stack(shares).mean(0).tolist()


def generate_one(pipe: BgPipeline, image: np.ndarray, mask: np.ndarray, category: str, seeds: Sequence[int], **kw) -> list[np.ndarray]:
    n = len(seeds)
    return pipe.generate([image] * n, [mask] * n, [category] * n, list(seeds), **kw).images

