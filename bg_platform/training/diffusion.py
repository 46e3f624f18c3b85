"""The diffusion training task, shared by the Category-Wise base and brand adapters.

Loss = background-weighted MSE on the v / epsilon target (min-SNR weighted) + lambda x the
mask-guided attention loss. What differs between the base and an adapter is configuration:
which parameters train (`param_groups` is given by the caller) and the augmentation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from bg_platform.config import DiffusionLossConfig
from bg_platform.model import attention
from bg_platform.model.components import Components
from bg_platform.model.inpaint import conditioning, prompts_and_token_mask, unet_input
from bg_platform.training.data import ImageSet, ImageSetDataset, to_model_space

# (images, product) -> (images, product, valid): `valid` marks pixels whose target is known
Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class DiffusionTask:
    def __init__(
        self,
        components: Components,
        data: ImageSet,
        loss_cfg: DiffusionLossConfig,
        param_groups: list[dict],
        *,
        augment: Augment | None = None,
        brand_token: str | None = None,
    ):
        self.c = components
        self.data = data
        self.cfg = loss_cfg
        self._groups = param_groups
        self.augment = augment
        self.brand_token = brand_token  # prompt token for rows with a brand (adapters with a token)
        self.store = attention.AttnStore()
        attention.install(components.unet, self.store)
        self.unet = components.unet
        self.text_encoder = components.text_encoder
        sched = components.noise_scheduler
        self.alphas_cumprod = sched.alphas_cumprod.clone()

    def models(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.c.unet, "text_encoder": self.c.text_encoder}

    def bind(self, models: dict[str, torch.nn.Module]) -> None:
        self.unet, self.text_encoder = models["unet"], models["text_encoder"]

    def param_groups(self) -> list[dict]:
        return self._groups

    def dataset(self) -> torch.utils.data.Dataset:
        return ImageSetDataset(self.data)

    def _snr_weight(self, t: torch.Tensor) -> torch.Tensor:
        gamma = self.cfg.min_snr_gamma
        if gamma <= 0:
            return torch.ones_like(t, dtype=torch.float32)
        ac = self.alphas_cumprod.to(t.device)[t]
        snr = ac / (1 - ac)
        w = torch.clamp(snr, max=gamma)
        return w / (snr + 1) if self.c.noise_scheduler.config.prediction_type == "v_prediction" else w / snr

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.c
        dev = next(self.unet.parameters()).device
        x, product = to_model_space(batch["image"], batch["mask"])
        x, product = x.to(dev), product.to(dev)
        valid = torch.ones_like(product)
        if self.augment is not None:
            x, product, valid = self.augment(x, product)
        with torch.no_grad():
            z0 = c.codec.encode(x)
            z_masked, bg_latent = conditioning(c.codec, x, product)
        b = x.shape[0]
        drop = torch.rand(b) < self.cfg.cfg_dropout
        cats = [None if d else cat for d, cat in zip(drop.tolist(), batch["category"], strict=True)]
        brands = [None if (d or not br) else self.brand_token for d, br in zip(drop.tolist(), batch["brand"], strict=True)]
        _, ids, token_mask = prompts_and_token_mask(c.tokenizer, c.meta.prompt, cats, brands)
        text = self.text_encoder(ids.to(dev))[0]
        noise = torch.randn_like(z0)
        t = torch.randint(0, c.noise_scheduler.config.num_train_timesteps, (b,), device=dev)
        noisy = c.noise_scheduler.add_noise(z0, noise, t)
        target = noise if c.noise_scheduler.config.prediction_type == "epsilon" else c.noise_scheduler.get_velocity(z0, noise, t)
        use_attn = self.cfg.attention_loss and self.cfg.attention_loss_weight > 0 and bool((token_mask.sum(1) > 0).any())
        self.store.reset()
        self.store.token_mask = token_mask.to(dev)
        self.store.record = use_attn
        try:
            pred = self.unet(unet_input(noisy, bg_latent, z_masked), t, encoder_hidden_states=text).sample
            # background cells count fully, all-product cells a little (they are given, not generated)
            w = bg_latent + self.cfg.product_loss_weight * (1 - bg_latent)
            w = w * F.adaptive_avg_pool2d(valid, bg_latent.shape[-2:])  # unknown target pixels do not count
            per = (F.mse_loss(pred.float(), target.float(), reduction="none") * w).sum((1, 2, 3)) / (
                w.sum((1, 2, 3)) * pred.shape[1]
            )
            diff = (per * self._snr_weight(t)).mean()
            logs = {"diffusion_loss": float(diff.detach())}
            loss = diff
            if use_attn:
                a = attention.attention_loss(self.store, 1 - product)
                loss = loss + self.cfg.attention_loss_weight * a
                logs["attention_loss"] = float(a.detach())
        finally:
            self.store.record = False
            self.store.token_mask = None
            self.store.reset()
        return loss, logs


def identifier_ids(components: Components) -> list[int]:
    """Token ids of the added identifiers (category tokens in identifier mode, brand tokens)."""
    from bg_platform.model.tokens import brand_token, category_token

    names = [brand_token(b) for b in components.meta.brands]
    if components.meta.prompt.mode == "identifier":
        names += [category_token(c) for c in components.meta.categories]
    vocab = components.tokenizer.get_vocab()
    return sorted(vocab[n] for n in names if n in vocab)


def token_rows_group(components: Components, ids: list[int]) -> dict:
    """A param group training only the embedding rows `ids` (a gradient hook zeroes the rest;
    no weight decay, so untouched rows stay exactly as they were)."""
    emb = components.text_encoder.get_input_embeddings().weight
    emb.requires_grad_(True)
    rows = torch.zeros(emb.shape[0], 1)
    rows[ids] = 1.0
    emb.register_hook(lambda g: g * rows.to(g.device, g.dtype))
    return {"params": [emb], "weight_decay": 0.0}


def base_param_groups(components: Components, train_text: str) -> list[dict]:
    """UNet fully; the text encoder per `train_text`: 'tokens' = only the added identifier rows."""
    unet, te = components.unet, components.text_encoder
    unet.requires_grad_(True)
    te.requires_grad_(False)
    groups = [{"params": list(unet.parameters())}]
    if train_text == "all":
        te.requires_grad_(True)
        groups.append({"params": list(te.parameters()), "weight_decay": 0.0})
    elif train_text == "tokens" and (ids := identifier_ids(components)):
        groups.append(token_rows_group(components, ids))
    return groups
