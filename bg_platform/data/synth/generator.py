"""BG-Synth dataset generation: plan samples, render them in parallel, write a manifest dataset.

Deterministic by seed: every sample has its own RNG keyed by (seed, group, index), so the output
does not depend on the number of worker processes. Products are split into train / val / test
instances first, and a sample takes its product from its own split's pool: held-out samples show
products the model never saw in training.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bg_platform.config import SynthConfig, to_dict
from bg_platform.data import manifest
from bg_platform.data.imageio import encode_png, sha256_bytes
from bg_platform.data.synth.backgrounds import PAINTERS
from bg_platform.data.synth.brands import BRANDS
from bg_platform.data.synth.products import (
    FAMILIES,
    Placement,
    Product,
    contact_shadow,
    place,
    render,
    sample_product,
)
from bg_platform.errors import ConfigError

CATEGORIES = tuple(PAINTERS)
INFO_NAME = "synth_info.json"


@dataclass(frozen=True)
class SampleSpec:
    id: str
    category: str
    brand: str
    split: str
    product: Product
    key: tuple[int, ...]  # RNG key


def _group_key(name: str) -> int:
    return zlib.crc32(name.encode())


def check_config(cfg: SynthConfig) -> None:
    problems = [f"synth.categories: unknown {c!r}" for c in cfg.categories if c not in PAINTERS]
    problems += [f"synth.brands: unknown {b!r}" for b in cfg.brands if b not in BRANDS]
    if len(set(cfg.categories)) != len(cfg.categories):
        problems.append("synth.categories: duplicate names")
    if problems:
        raise ConfigError(
            "; ".join(problems) + f". Allowed categories: {list(CATEGORIES)}; allowed brands: {list(BRANDS)}"
        )


def make_products(cfg: SynthConfig) -> dict[str, list[Product]]:
    """Product instances per split; every family is present in every split."""
    rng = np.random.default_rng([cfg.seed, _group_key("products")])
    pools: dict[str, list[Product]] = {"train": [], "val": [], "test": []}
    per_family = max(cfg.products // len(FAMILIES), 3)
    n = 0
    for family in FAMILIES:
        items = [sample_product(rng, f"p{n + i:04d}", family) for i in range(per_family)]
        n += per_family
        n_test = max(1, round(per_family * cfg.test_fraction))
        n_val = max(1, round(per_family * cfg.val_fraction)) if cfg.val_fraction > 0 else 0
        pools["test"] += items[:n_test]
        pools["val"] += items[n_test : n_test + n_val]
        pools["train"] += items[n_test + n_val :]
    return pools


def plan(cfg: SynthConfig) -> list[SampleSpec]:
    check_config(cfg)
    pools = make_products(cfg)
    split_p = np.array([1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction])
    specs: list[SampleSpec] = []
    groups = [(c, "", cfg.samples_per_category, (c,)) for c in cfg.categories]
    groups += [(b, b, cfg.samples_per_brand, BRANDS[b].categories) for b in cfg.brands]
    for name, brand, count, categories in groups:
        rng = np.random.default_rng([cfg.seed, _group_key("plan:" + name)])
        # exact split shares (not a random draw per sample), then shuffled
        counts = np.floor(split_p * count).astype(int)
        counts[0] += count - counts.sum()
        splits = np.repeat(np.array(["train", "val", "test"]), counts)
        rng.shuffle(splits)
        for i in range(count):
            split = str(splits[i])
            pool = pools[split]
            product = pool[int(rng.integers(len(pool)))]
            category = categories[i % len(categories)]
            sample_id = f"{name}-{i:05d}"
            specs.append(SampleSpec(sample_id, category, brand, split, product, (cfg.seed, _group_key(name), i)))
    return specs


def render_layers(spec: SampleSpec, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(background with brand style and contact shadow, product RGB, product mask) as floats/bool."""
    rng = np.random.default_rng(list(spec.key))
    bg = PAINTERS[spec.category](rng, size)
    placement: Placement = place(rng, spec.product)
    if spec.brand:
        style = BRANDS[spec.brand]
        placement = style.adjust(placement)
        bg = style.paint(rng, bg, placement, spec.product.aspect)
    bg = bg * (1.0 - contact_shadow(placement, spec.product.aspect, size))[..., None]
    rgb, mask = render(spec.product, placement, size)
    return bg, rgb, mask


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_sample(spec: SampleSpec, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 (s, s, 3), mask uint8 (s, s) with product = 255)."""
    bg, rgb, mask = render_layers(spec, size)
    img = np.where(mask[..., None], rgb, bg)
    return to_uint8(img), np.where(mask, 255, 0).astype(np.uint8)


def _work(args: tuple[SampleSpec, int]) -> tuple[str, bytes, bytes]:
    spec, size = args
    img, mask = render_sample(spec, size)
    return spec.id, encode_png(img), encode_png(mask)


def _render_all(specs: Sequence[SampleSpec], size: int, workers: int) -> Iterator[tuple[str, bytes, bytes]]:
    jobs = [(s, size) for s in specs]
    if workers <= 1:
        yield from map(_work, jobs)
        return
    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_work, jobs, chunksize=64)


def generate(cfg: SynthConfig, out: str | Path, *, progress: bool = True) -> Path:
    """Write BG-Synth to `out` (replaced atomically: built in a sibling temp folder, then renamed)."""
    out = Path(out)
    specs = plan(cfg)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    workers = cfg.workers or min(os.cpu_count() or 1, 8)
    workers = 1 if len(specs) < 400 else workers
    by_id = {s.id: s for s in specs}
    rows = []
    try:
        bar = tqdm(_render_all(specs, cfg.image_size, workers), total=len(specs), desc="bg-synth", disable=not progress)
        for sample_id, img_png, mask_png in bar:
            spec = by_id[sample_id]
            (tmp / "images" / f"{sample_id}.png").write_bytes(img_png)
            (tmp / "masks" / f"{sample_id}.png").write_bytes(mask_png)
            rows.append(
                manifest.Sample(
                    id=sample_id,
                    image=f"images/{sample_id}.png",
                    mask=f"masks/{sample_id}.png",
                    category=spec.category,
                    brand=spec.brand,
                    caption="",
                    split=spec.split,
                    width=cfg.image_size,
                    height=cfg.image_size,
                    sha256=sha256_bytes(img_png),
                    product=spec.product.id,
                    source="synth",
                )
            )
        manifest.write(manifest.to_frame(rows), tmp)
        info = {
            "generator": "bg-synth",
            "categories": list(cfg.categories),
            "brands": {b: list(BRANDS[b].categories) for b in cfg.brands},
            "product_families": list(FAMILIES),
            "config": to_dict(cfg),
        }
        (tmp / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def read_info(dataset_dir: str | Path) -> dict | None:
    path = Path(dataset_dir) / INFO_NAME
    return json.loads(path.read_text()) if path.exists() else None
