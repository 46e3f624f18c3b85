"""Model components, two sizes, one code path.

- `build_tiny(cfg, categories, codec_images)`: random-init UNet + tiny CLIP text encoder + an
  offline-built tokenizer + a patch-PCA codec fitted on the given images (CPU-sized default).
- `load(path)`: a local diffusers-format directory — either one this module saved, or a real
  Stable Diffusion inpainting checkpoint (9-channel UNet, AutoencoderKL, CLIP), to which the
  category identifier tokens are added (embedding matrix resized, new rows initialised).
- `save(components, path)`: the diffusers layout (model_index.json + one folder per component,
  safetensors weights) plus `bg_platform.json` (categories, prompt spec, resolution, fingerprint).

The fingerprint is a sha256 over every weight and config file; adapters record it and are
refused by a base whose fingerprint differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from bg_platform.config import ModelConfig
from bg_platform.errors import BgError
from bg_platform.model.codec import PatchPCACodec, VaeCodec
from bg_platform.model.tokens import PromptSpec, brand_token, build_tiny_tokenizer, category_token

META_NAME = "bg_platform.json"
FORMAT_VERSION = 1


class ModelLoadError(BgError):
    pass


@dataclass(frozen=True)
class ModelMeta:
    categories: tuple[str, ...]
    prompt: PromptSpec = field(default_factory=PromptSpec)
    resolution: int = 64
    kind: str = "tiny"
    brands: tuple[str, ...] = ()  # brands with their own identifier token
    fingerprint: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["format_version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelMeta:
        return cls(
            categories=tuple(d["categories"]),
            prompt=PromptSpec(**d.get("prompt", {})),
            resolution=int(d.get("resolution", 64)),
            kind=d.get("kind", "tiny"),
            brands=tuple(d.get("brands", ())),
            fingerprint=d.get("fingerprint", ""),
        )


@dataclass
class Components:
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    codec: torch.nn.Module
    noise_scheduler: object  # DDPMScheduler with the training schedule
    meta: ModelMeta

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, "text_encoder": self.text_encoder, "codec": self.codec}

    def to(self, device, dtype=None) -> Components:
        for m in self.modules().values():
            m.to(device)
        if dtype is not None:
            self.unet.to(dtype=dtype)
            self.text_encoder.to(dtype=dtype)
        return self


def _noise_scheduler(cfg: ModelConfig):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=cfg.prediction_type,
        clip_sample=False,
        steps_offset=1,
    )


def build_tiny(cfg: ModelConfig, categories: Sequence[str], codec_images: torch.Tensor) -> Components:
    """Random-init components for CPU; the codec is fitted on `codec_images` (B, 3, H, W) in [-1, 1]."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(cfg.seed)
    prompt = PromptSpec(template=cfg.prompt.template, mode=cfg.prompt.mode)
    identifiers = [category_token(c) for c in categories] if prompt.mode == "identifier" else []
    tokenizer = build_tiny_tokenizer(identifiers, cfg.text.max_length)
    t = cfg.text
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=t.hidden_size,
            intermediate_size=t.intermediate_size,
            num_hidden_layers=t.layers,
            num_attention_heads=t.heads,
            max_position_embeddings=t.max_length,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    c = cfg.codec
    codec = PatchPCACodec(patch_size=c.patch_size, latent_channels=c.latent_channels, whiten=c.whiten).fit(codec_images)
    u = cfg.unet
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in u.cross_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(u.cross_attention))
    lat = c.latent_channels
    unet = UNet2DConditionModel(
        sample_size=cfg.resolution // c.patch_size,
        in_channels=2 * lat + 1,  # noisy latent + mask + masked-image latent (SD-inpainting layout)
        out_channels=lat,
        block_out_channels=tuple(u.block_out_channels),
        down_block_types=down,
        up_block_types=up,
        layers_per_block=u.layers_per_block,
        cross_attention_dim=t.hidden_size,
        attention_head_dim=tuple(u.attention_heads),  # diffusers uses this as the number of heads
        only_cross_attention=u.only_cross_attention,
        norm_num_groups=u.norm_num_groups,
    )
    meta = ModelMeta(categories=tuple(categories), prompt=prompt, resolution=cfg.resolution, kind="tiny")
    return Components(unet, text_encoder, tokenizer, codec, _noise_scheduler(cfg), meta)


def add_tokens(components: Components, tokens: Sequence[str]) -> list[str]:
    """Add identifier tokens (if missing), resize the embedding matrix, and initialise each new
    row at the mean of the existing rows plus small noise (a neutral, trainable start)."""
    tok = components.tokenizer
    new = [t for t in tokens if t not in tok.get_vocab()]
    if not new:
        return []
    old_n = len(tok)
    tok.add_tokens(new)
    te = components.text_encoder
    te.resize_token_embeddings(len(tok), mean_resizing=False)
    emb = te.get_input_embeddings().weight
    with torch.no_grad():
        mean, std = emb[:old_n].mean(0), emb[:old_n].std(0)
        g = torch.Generator().manual_seed(len(tok))
        emb[old_n:] = mean + 0.1 * std * torch.randn(len(tok) - old_n, emb.shape[1], generator=g)
    return new


def add_categories(components: Components, categories: Sequence[str]) -> None:
    if components.meta.prompt.mode == "identifier":
        add_tokens(components, [category_token(c) for c in categories])
    merged = tuple(dict.fromkeys([*components.meta.categories, *categories]))
    components.meta = replace(components.meta, categories=merged)


def add_brand_token(components: Components, brand: str) -> str:
    token = brand_token(brand)
    add_tokens(components, [token])
    if brand not in components.meta.brands:
        components.meta = replace(components.meta, brands=(*components.meta.brands, brand))
    return token


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{path} not found: {path.parent} is not a diffusers model directory") from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc}); the model directory is corrupt") from None


def load(
    path: str | Path,
    categories: Sequence[str] | None = None,
    cfg: ModelConfig | None = None,
    dtype: torch.dtype = torch.float32,
) -> Components:
    """Load a diffusers-format directory (ours, or a Stable Diffusion inpainting checkpoint).
    Everything is read from local files; a Hub id or a missing folder is a clear error."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(
            f"model directory {path} does not exist; pass a local diffusers-format folder "
            f"(downloading weights at run time is not supported)"
        )
    index = _read_json(path / "model_index.json")
    for sub in ("unet", "text_encoder", "tokenizer", "vae", "scheduler"):
        if sub not in index or not (path / sub).is_dir():
            raise ModelLoadError(f"{path}: component {sub!r} is missing (model_index.json lists {sorted(index)})")
    meta_path = path / META_NAME
    meta = ModelMeta.from_dict(_read_json(meta_path)) if meta_path.exists() else None
    kw = {"local_files_only": True}
    try:
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", dtype=dtype, **kw)
        text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", dtype=dtype, **kw)
        tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer", **kw)
        vae_cls = index["vae"][1]
        if vae_cls == "PatchPCACodec":
            codec = PatchPCACodec.from_pretrained(path, subfolder="vae", **kw)
        elif vae_cls == "AutoencoderKL":
            from diffusers import AutoencoderKL

            codec = VaeCodec(AutoencoderKL.from_pretrained(path, subfolder="vae", dtype=dtype, **kw))
        else:
            raise ModelLoadError(f"{path}: unsupported vae class {vae_cls!r} (expected AutoencoderKL or PatchPCACodec)")
        sched_cfg = DDPMScheduler.load_config(path, subfolder="scheduler", **kw)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{path}: cannot load the model ({type(exc).__name__}: {exc})") from None
    sched_cfg = {k: v for k, v in sched_cfg.items() if not k.startswith("_")}
    sched_cfg["clip_sample"] = False
    if cfg is not None and meta is None:
        sched_cfg["prediction_type"] = cfg.prediction_type
    noise_scheduler = DDPMScheduler.from_config(sched_cfg)
    if unet.config.in_channels != 2 * codec.latent_channels + 1:
        raise ModelLoadError(
            f"{path}: unet.in_channels={unet.config.in_channels} but an inpainting UNet needs "
            f"2 x {codec.latent_channels} latent channels + 1 mask = {2 * codec.latent_channels + 1}; "
            f"use an *inpainting* checkpoint"
        )
    if meta is None:  # a foreign checkpoint: adopt it and add our identifiers
        if not categories:
            raise ModelLoadError(f"{path} has no {META_NAME}: pass the categories to add identifier tokens for")
        prompt = PromptSpec(cfg.prompt.template, cfg.prompt.mode) if cfg else PromptSpec()
        resolution = cfg.resolution if cfg else unet.config.sample_size * codec.downsample
        meta = ModelMeta(categories=(), prompt=prompt, resolution=resolution, kind="pretrained")
    comps = Components(unet, text_encoder, tokenizer, codec, noise_scheduler, meta)
    if categories:
        add_categories(comps, categories)
    return comps


def save(components: Components, path: str | Path) -> str:
    """Write the diffusers layout atomically (temp folder + rename); returns the fingerprint."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        components.unet.save_pretrained(tmp / "unet", safe_serialization=True)
        components.text_encoder.save_pretrained(tmp / "text_encoder", safe_serialization=True)
        backend = getattr(components.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            # A fast tokenizer keeps the last call's truncation/padding and would write it into
            # tokenizer.json: the same weights would get another fingerprint (and their adapters be
            # refused) depending on whether the tokenizer had been used. transformers re-applies
            # both on every call, so clearing them changes nothing but the file.
            backend.no_truncation()
            backend.no_padding()
        components.tokenizer.save_pretrained(tmp / "tokenizer")
        components.codec.save_pretrained(tmp / "vae", safe_serialization=True)
        components.noise_scheduler.save_pretrained(tmp / "scheduler")
        vae_entry = (
            ["diffusers", "AutoencoderKL"]
            if isinstance(components.codec, VaeCodec)
            else ["bg_platform.model.codec", "PatchPCACodec"]
        )
        import diffusers

        index = {
            "_class_name": "StableDiffusionInpaintPipeline",
            "_diffusers_version": diffusers.__version__,
            "unet": ["diffusers", "UNet2DConditionModel"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "vae": vae_entry,
            "scheduler": ["diffusers", "DDPMScheduler"],
            "safety_checker": [None, None],
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
        }
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        fp = fingerprint(tmp)
        components.meta = replace(components.meta, fingerprint=fp)
        (tmp / META_NAME).write_text(json.dumps(components.meta.to_dict(), indent=2) + "\n")
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return fp


def fingerprint(path: str | Path) -> str:
    """sha256 over (relative path, file sha256) of every file except bg_platform.json."""
    path = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != META_NAME):
        fh = hashlib.sha256(f.read_bytes()).hexdigest()
        h.update(f"{f.relative_to(path).as_posix()}\0{fh}\n".encode())
    return h.hexdigest()


def read_meta(path: str | Path) -> ModelMeta:
    return ModelMeta.from_dict(_read_json(Path(path) / META_NAME))
