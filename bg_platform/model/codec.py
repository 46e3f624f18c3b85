"""Latent codecs: images in [-1, 1] <-> diffusion latents, one interface for both model sizes.

- `PatchPCACodec` (the tiny default, nothing pretrained): each non-overlapping p x p RGB patch is
  projected onto its top-K principal components, whitened per component. It is fitted on the
  training images in seconds (one SVD), is the MSE-optimal linear codec for that K, and is stored
  in diffusers format (config.json + safetensors) like any other component. At 64 px, p = 4 gives
  16x16 latents; K = 8 keeps 26.6 dB PSNR on BG-Synth (K = 12: 29.3 dB), both above a small conv
  autoencoder trained for the same wall-clock budget on this CPU (22-23 dB). With the CPU training
  budget, K = 8 also trained to visibly cleaner textures than K = 12 (fewer fine components to get
  wrong): measured category fidelity 1.00 vs 0.88 after 1,200 steps.
- `VaeCodec` wraps a pretrained `AutoencoderKL` (real Stable Diffusion inpainting checkpoints).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config


class PatchPCACodec(ModelMixin, ConfigMixin):
    config_name = "config.json"

    @register_to_config
    def __init__(self, patch_size: int = 4, latent_channels: int = 12, in_channels: int = 3, whiten: bool = True):
        super().__init__()
        d = in_channels * patch_size * patch_size
        if not 1 <= latent_channels <= d:
            raise ValueError(f"latent_channels={latent_channels} must be in 1..{d} for patch_size={patch_size}")
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("basis", torch.eye(d)[:, :latent_channels].contiguous())  # (d, K), orthonormal columns
        self.register_buffer("scale", torch.ones(latent_channels))  # per-component std (whitening)

    @property
    def downsample(self) -> int:
        return self.config.patch_size

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(x, self.config.patch_size).permute(0, 2, 3, 1)  # (B, h, w, d)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, max_patches: int = 200_000, seed: int = 0) -> PatchPCACodec:
        """Principal components of the patches of `images` (B, 3, H, W) in [-1, 1]."""
        p = self._patches(images.float()).reshape(-1, self.basis.shape[0])
        if len(p) > max_patches:
            g = torch.Generator().manual_seed(seed)
            p = p[torch.randperm(len(p), generator=g)[:max_patches]]
        mean = p.mean(0)
        cov = torch.cov((p - mean).T.double())
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        order = torch.argsort(evals, descending=True)[: self.config.latent_channels]
        basis = evecs[:, order].float()
        # a deterministic sign per component, so refits on the same data give the same codec
        basis = basis * torch.sign(basis[basis.abs().argmax(0), torch.arange(basis.shape[1])])
        self.mean.copy_(mean)
        self.basis.copy_(basis)
        std = evals[order].clamp_min(1e-8).sqrt().float()
        self.scale.copy_(std if self.config.whiten else torch.full_like(std, float(std[0])))
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = (self._patches(x) - self.mean) @ self.basis / self.scale
        return z.permute(0, 3, 1, 2).contiguous()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        p = (z.permute(0, 2, 3, 1) * self.scale) @ self.basis.T + self.mean
        return F.pixel_shuffle(p.permute(0, 3, 1, 2), self.config.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class VaeCodec(torch.nn.Module):
    """A pretrained AutoencoderKL behind the codec interface (latents already scaled)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def config(self):
        return self.vae.config

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x.to(self.vae.dtype)).latent_dist.mode() * self.vae.config.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z.to(self.vae.dtype) / self.vae.config.scaling_factor).sample

    def save_pretrained(self, path, **kw):
        self.vae.save_pretrained(path, **kw)
