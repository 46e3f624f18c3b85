"""Training the Category-Wise base: data -> components (tiny or pretrained) -> THE loop -> model dir."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bg_platform.config import Params, to_dict
from bg_platform.data import manifest
from bg_platform.model.components import build_tiny, load, save
from bg_platform.training.augment import flip_augment
from bg_platform.training.data import ImageSet, load_set, to_model_space
from bg_platform.training.diffusion import DiffusionTask, base_param_groups
from bg_platform.training.loop import train

log = logging.getLogger(__name__)


@dataclass
class BaseResult:
    out_dir: Path
    fingerprint: str
    steps: int
    seconds: float
    final_loss: float
    resumed_from: int

    def __str__(self) -> str:
        head = f"base model -> {self.out_dir} (fingerprint {self.fingerprint[:12]}), "
        if self.resumed_from >= self.steps:
            return head + f"already trained ({self.steps} steps in its checkpoint); saved again"
        return (
            head + f"{self.steps} steps in {self.seconds / 60:.1f} min, final loss {self.final_loss:.4f}"
            + (f", resumed from step {self.resumed_from}" if self.resumed_from else "")
        )


def run_key(params: Params, dataset_dir: str | Path) -> str:
    """Identifies a run: checkpoints are only resumed by a run with the same model, training
    config and data (a changed param never silently continues a stale run)."""
    frame = manifest.read(dataset_dir)
    blob = json.dumps({"model": to_dict(params.model), "train": to_dict(params.train_base),
                       "data": sorted(frame.sha256.tolist())}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_components(params: Params, data: ImageSet):
    categories = sorted(set(data.categories))
    m = params.model
    if m.kind == "tiny":
        rng = np.random.default_rng(params.train_base.loop.seed)
        pick = rng.choice(len(data), size=min(m.codec.fit_images, len(data)), replace=False)
        x, _ = to_model_space(data.images[pick], data.masks[pick])
        return build_tiny(m, categories, x)
    return load(m.pretrained_path, categories=categories, cfg=m)


def sample_grid(components, data: ImageSet, path: Path, columns: int = 4, steps: int = 20) -> Path:
    """Quick look after training: a few train products (rows = categories)."""
    from bg_platform.grids import save_grid
    from bg_platform.model.pipeline import BgPipeline

    pipe = BgPipeline(components)
    cats = list(components.meta.categories)
    prod = [data.images[i].numpy() for i in range(min(columns, len(data)))]
    masks = [data.masks[i].numpy() for i in range(len(prod))]
    rows = [pipe.generate(prod, masks, [c] * len(prod), list(range(len(prod))), steps=steps).images for c in cats]
    return save_grid(path, [prod, *rows], row_labels=["input", *cats], tile=96)


def train_base(params: Params, dataset_dir: str | Path, out_dir: str | Path, resume=True, progress: bool = True) -> BaseResult:
    cfg = params.train_base
    t0 = time.perf_counter()
    data = load_set(dataset_dir, params.model.resolution, splits=("train",), brand="", progress=progress)
    components = build_components(params, data)
    groups = base_param_groups(components, cfg.loss.train_text)
    task = DiffusionTask(components, data, cfg.loss, groups, augment=flip_augment if cfg.loss.flip else None)
    result = train(
        task, cfg.loop, cfg.run_dir, resume=resume, curve_csv=Path(cfg.plots_dir) / "loss.csv", desc="train_base",
        progress=progress, run_key=run_key(params, dataset_dir),
    )
    fp = save(components, out_dir)
    sample_grid(components, data, Path(cfg.plots_dir) / "samples.png", steps=cfg.sample_steps)
    return BaseResult(Path(out_dir), fp, result.steps, time.perf_counter() - t0, result.final_loss, result.resumed_from)
