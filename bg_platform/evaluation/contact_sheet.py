"""The demo's contact sheet: what the platform does, in one PNG.

- one row per category: real samples, then backgrounds the base generated for held-out products;
- one row per brand: real references, then base vs adapter pairs (same product, same seed);
- one row per call made to the running service (category or brand), when given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bg_platform.grids import save_grid
from bg_platform.model.components import load
from bg_platform.model.lora import load_adapter
from bg_platform.model.pipeline import BgPipeline
from bg_platform.training.data import load_set


def demo_contact_sheet(
    base_dir: str | Path,
    dataset_dir: str | Path,
    adapters: Mapping[str, str | Path],
    out: str | Path,
    *,
    service_rows: Sequence[tuple[str, Sequence[np.ndarray]]] = (),
    real: int = 2,
    generated: int = 3,
    steps: int = 25,
    guidance: float = 3.0,
) -> Path:
    comps = load(base_dir)
    metas = [load_adapter(p)[0] for p in adapters.values()]
    targets = sorted({t for m in metas for t in m.targets})
    pipe = BgPipeline(comps, lora_slots=1 if adapters else 0, max_rank=max((m.rank for m in metas), default=1),
                      lora_targets=targets or None)
    res = comps.meta.resolution
    test = load_set(dataset_dir, res, splits=("test",), brand="")
    rows, labels = [], []
    prod = [test.images[j].numpy() for j in range(generated)]
    pmask = [test.masks[j].numpy() for j in range(generated)]
    for cat in comps.meta.categories:
        idx = [i for i, c in enumerate(test.categories) if c == cat][:real]
        reals = [test.images[i].numpy() for i in idx]
        gen = pipe.generate(prod, pmask, [cat] * generated, list(range(generated)), steps=steps, guidance=guidance).images
        rows.append(reals + [None] + gen)
        labels.append(cat)
    pairs = max(1, generated - 1)
    for brand, path in adapters.items():
        meta, tensors = load_adapter(path, comps.meta.fingerprint)
        pipe.slots.activate("slot0", brand, pipe.slots.prepare(meta, tensors))
        refs = load_set(dataset_dir, res, splits=("train",), brand=brand)
        cats = [refs.categories[i % len(refs)] for i in range(pairs)]
        base = pipe.generate(prod[:pairs], pmask[:pairs], cats, list(range(pairs)), steps=steps, guidance=guidance).images
        ad = pipe.generate(prod[:pairs], pmask[:pairs], cats, list(range(pairs)), slots=["slot0"] * pairs, steps=steps,
                           guidance=guidance).images
        rows.append([refs.images[i].numpy() for i in range(min(real, len(refs)))] + [None]
                    + [im for pair in zip(base, ad, strict=True) for im in pair])
        labels.append(f"brand:{brand}")
    for label, images in service_rows:
        rows.append([None] * (real + 1) + list(images))
        labels.append(f"service {label}"[:15])
    cols = ["real"] * real + [""] + ["generated / base, +adapter"] + [""] * (2 * pairs - 1)
    return save_grid(out, rows, row_labels=labels, col_labels=cols, tile=96)
