"""Training a brand adapter (Personality-Wise Generator) over the frozen Category-Wise base.

Self-supervised: each reference image is its own target; its product mask says what is kept; the
product is moved, rescaled and flipped inside the reference so the adapter learns the brand's
background (palette, elements, layout), not one product placement. Same loop, same diffusion
task as the base; only the trainable parameters (LoRA A/B, optionally a brand token row) and the
augmentation differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from bg_platform.config import AdapterConfig, Params, to_dict
from bg_platform.errors import DataError
from bg_platform.model.components import add_brand_token, load
from bg_platform.model.lora import AdapterMeta, add_training_lora, lora_tensors, save_adapter
from bg_platform.model.tokens import brand_token
from bg_platform.training.augment import flip_augment, replace_augment
from bg_platform.training.data import ImageSet, load_set
from bg_platform.training.diffusion import DiffusionTask, token_rows_group
from bg_platform.training.loop import train

log = logging.getLogger(__name__)


@dataclass
class AdapterResult:
    brand: str
    out_dir: Path
    references: int
    steps: int
    seconds: float
    final_loss: float
    size_bytes: int
    data_hash: str

    def __str__(self) -> str:
        return (f"adapter {self.brand} -> {self.out_dir} ({self.size_bytes / 1e6:.2f} MB) from {self.references} references, "
                f"{self.steps} steps in {self.seconds:.0f} s, final loss {self.final_loss:.4f}")


def references(dataset_dir: str | Path, brand: str, cfg: AdapterConfig, resolution: int) -> ImageSet:
    """The brand's train-split references in id order, capped at cfg.references."""
    try:
        data = load_set(dataset_dir, resolution, splits=("train",), brand=brand)
    except DataError:
        raise DataError(
            f"brand {brand!r}: no reference images (split 'train') in {dataset_dir}; label references in Label Studio "
            f"or add the brand to synth.brands"
        ) from None
    order = sorted(range(len(data)), key=lambda i: data.ids[i])[: cfg.references]
    data = data.subset(order)
    if len(data) < cfg.min_references:
        raise DataError(
            f"brand {brand!r}: {len(data)} reference image(s), adapter.min_references is {cfg.min_references}; "
            f"add more references"
        )
    return data


def data_hash(data: ImageSet) -> str:
    h = hashlib.sha256()
    for i in range(len(data)):
        h.update(data.images[i].numpy().tobytes())
        h.update(data.masks[i].numpy().tobytes())
    return h.hexdigest()


def train_adapter(
    params: Params, brand: str, dataset_dir: str | Path, base_dir: str | Path, out_dir: str | Path,
    *, resume=True, progress: bool = True,
) -> AdapterResult:
    cfg = params.adapter
    t0 = time.perf_counter()
    comps = load(base_dir)
    data = references(dataset_dir, brand, cfg, comps.meta.resolution)
    from accelerate.utils import set_seed

    set_seed(cfg.loop.seed)  # the LoRA's gaussian init draws from the global RNG: unseeded, two runs differ
    add_training_lora(comps.unet, cfg.rank, float(cfg.rank), name="brand", init="gaussian", targets=cfg.targets)
    groups = [{"params": [p for p in comps.unet.parameters() if p.requires_grad]}]
    token = None
    if cfg.brand_token:
        token = add_brand_token(comps, brand)
        groups.append(token_rows_group(comps, [comps.tokenizer.convert_tokens_to_ids(token)]))
    augment = {"replace": replace_augment, "flip": flip_augment, "none": None}[cfg.augment]
    task = DiffusionTask(comps, data, cfg.loss, groups, augment=augment, brand_token=token)
    dh = data_hash(data)
    key = hashlib.sha256(f"{comps.meta.fingerprint}{dh}{to_dict(cfg)}".encode()).hexdigest()[:16]
    result = train(
        task, cfg.loop, Path(cfg.run_dir) / brand, resume=resume, curve_csv=Path(cfg.plots_dir) / brand / "loss.csv",
        desc=f"adapter:{brand}", progress=progress, run_key=key,
    )
    tensors = lora_tensors(comps.unet, "brand")
    if token:
        emb = comps.text_encoder.get_input_embeddings().weight
        tensors["token_embedding"] = emb[comps.tokenizer.convert_tokens_to_ids(token)].detach().float().clone()
    meta = AdapterMeta(brand=brand, rank=cfg.rank, alpha=float(cfg.rank), targets=tuple(cfg.targets),
                       token=brand_token(brand) if token else "", base_fingerprint=comps.meta.fingerprint)
    out = save_adapter(out_dir, meta, tensors)
    (out / "training.json").write_text(
        json.dumps({"data_hash": dh, "references": data.ids, "steps": result.steps,
                                  "seconds": round(time.perf_counter() - t0, 1), "final_loss": result.final_loss,
                                  "params": to_dict(cfg)}, indent=2) + "\n"
    )
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    return AdapterResult(brand, out, len(data), result.steps, time.perf_counter() - t0, result.final_loss, size, dh)
