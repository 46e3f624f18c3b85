"""Mask-guided cross-attention: the Category-Wise Generator's attention layer.

One processor is installed on every cross-attention layer of the UNet. It reads per-step state
from a shared `AttnStore` (cross_attention_kwargs would be dropped with a log line per layer):
- training (`store.record`): it keeps, per layer, the category token's attention map (summed over
  the category's tokens, averaged over heads) so `attention_loss` can pull it onto the background;
- inference (`store.confine`): an additive bias removes the category token from the keys that
  product pixels attend to, so the category's style can only be written into the background.
With neither switch on it is numerically the stock SDPA processor. Self-attention layers keep
diffusers' `AttnProcessor2_0`. PEFT LoRA wraps `to_q/to_k/to_v/to_out.0` in place, so LoRA
adapters pass through this processor unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0

NEG = -1e4  # large but finite, so half precision stays NaN-free


@dataclass
class AttnStore:
    token_mask: torch.Tensor | None = None  # [B, T]: weight of each token in "the category"
    product_mask: torch.Tensor | None = None  # [B, 1, H, W]: 1 = product, at any resolution
    record: bool = False
    confine: bool = False
    maps: list[torch.Tensor] = field(default_factory=list)  # per layer call: [B, Q] category attention

    def reset(self) -> None:
        self.maps.clear()


def _resize_mask(mask: torch.Tensor, q: int) -> torch.Tensor:
    """[B, 1, H, W] -> [B, Q] at the layer's resolution (Q = h * w, same aspect ratio)."""
    _, _, h, w = mask.shape
    scale = (h * w / q) ** 0.5
    hh, ww = round(h / scale), round(w / scale)
    if hh * ww != q:
        raise ValueError(f"cannot map a {h}x{w} mask onto {q} attention queries")
    return F.adaptive_avg_pool2d(mask.float(), (hh, ww)).flatten(1)


class MaskGuidedCrossAttnProcessor:
    def __init__(self, store: AttnStore):
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        if encoder_hidden_states is None:  # used as self-attention (only_cross_attention=False attn1)
            return AttnProcessor2_0()(attn, hidden_states, None, attention_mask, temb)
        store = self.store
        residual = hidden_states
        x = hidden_states
        if x.ndim == 4:
            b, c, h, w = x.shape
            x = x.view(b, c, h * w).transpose(1, 2)
        batch, q_len, _ = x.shape
        ctx = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
        t_len = ctx.shape[1]
        q = attn.to_q(x)
        k = attn.to_k(ctx)
        v = attn.to_v(ctx)
        heads = attn.heads
        head_dim = q.shape[-1] // heads
        q, k, v = (z.view(batch, -1, heads, head_dim).transpose(1, 2) for z in (q, k, v))  # [B, h, L, d]

        bias = None
        tokens = store.token_mask
        if attention_mask is not None:
            bias = attn.prepare_attention_mask(attention_mask, t_len, batch).view(batch, heads, -1, t_len)
        if store.confine and tokens is not None and store.product_mask is not None:
            product = _resize_mask(store.product_mask, q_len)  # [B, Q], share of product in the cell
            # a query cell that is mostly product may not read the category token
            block = (product > 0.5).float()[:, :, None] * (tokens > 0).float()[:, None, :]  # [B, Q, T]
            extra = (block * NEG)[:, None].to(q.dtype)
            bias = extra if bias is None else bias + extra

        if store.record and tokens is not None:
            scores = torch.matmul(q, k.transpose(-1, -2)) * attn.scale
            if bias is not None:
                scores = scores + bias
            probs = scores.softmax(-1)
            out = torch.matmul(probs, v)
            store.maps.append((probs * tokens[:, None, None, :].to(probs.dtype)).sum(-1).mean(1))  # [B, Q]
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)

        out = out.transpose(1, 2).reshape(batch, -1, heads * head_dim).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if residual.ndim == 4:
            out = out.transpose(-1, -2).reshape(residual.shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def install(unet, store: AttnStore) -> int:
    """Put the mask-guided processor on every cross-attention layer; returns how many."""
    procs, n = {}, 0
    for name in unet.attn_processors:
        module = unet.get_submodule(name.removesuffix(".processor"))
        if getattr(module, "is_cross_attention", False) or name.endswith("attn2.processor"):
            procs[name] = MaskGuidedCrossAttnProcessor(store)
            n += 1
        else:
            procs[name] = AttnProcessor2_0()
    unet.set_attn_processor(procs)
    return n


def _conditional_rows(store: AttnStore) -> torch.Tensor:
    return store.token_mask.sum(1) > 0


def attention_loss(store: AttnStore, background: torch.Tensor) -> torch.Tensor:
    """MSE between each recorded map (normalised to max 1) and the background mask at the map's
    resolution (Break-A-Scene style); averaged over layers. `background` [B, 1, H, W], 1 = background."""
    if not store.maps:
        raise RuntimeError("no attention maps recorded: set store.record and store.token_mask before the UNet call")
    rows = _conditional_rows(store)
    losses = []
    for a in store.maps:
        a = a[rows]
        a = a / a.amax(1, keepdim=True).clamp_min(1e-8)
        target = _resize_mask(background[rows], a.shape[1])
        losses.append(F.mse_loss(a, target))
    return torch.stack(losses).mean()


def background_mass(store: AttnStore, background: torch.Tensor) -> torch.Tensor:
    """Per conditional row: share of the category token's attention mass that lies on background,
    averaged over the recorded layers. [B_cond]."""
    rows = _conditional_rows(store)
    shares = []
    for a in store.maps:
        a = a[rows]
        bg = _resize_mask(background[rows], a.shape[1])
        shares.append((a * bg).sum(1) / a.sum(1).clamp_min(1e-12))
    return torch.stack(shares).mean(0)
