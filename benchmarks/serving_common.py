"""Shared set-up of the serving benchmarks: a smoke-profile-sized base and random brand adapters,
built in seconds inside the benchmark (nothing downloaded), plus timing and table helpers.

The base is the smoke profile's tiny UNet (64 px, blocks 16/32/32), random-initialised: its
weights do not change any timing measured here. Adapters have a non-identity random init (LoRA B
non-zero, as `init_lora_weights=False`), so swapping them changes outputs and drift would show.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

transformers_logging.disable_progress_bar()  # one bar per weight load would bury the tables
diffusers_logging.disable_progress_bar()

ROOT = Path(__file__).resolve().parents[1]
PASSED = {"gate": {"passed": True, "reasons": []}}


def smoke_params():
    from bg_platform import config

    return config.load(ROOT / "params.yaml", [ROOT / "profiles" / "smoke.yaml"])


def build_base(root: Path) -> tuple[Path, str]:
    """Smoke-profile tiny base (random init, codec fitted on BG-Synth), saved; (folder, fingerprint)."""
    from bg_platform.data.synth import generate
    from bg_platform.model.components import save
    from bg_platform.training.base import build_components
    from bg_platform.training.data import load_set

    params = smoke_params()
    dataset = generate(params.synth, root / "dataset", progress=False)
    data = load_set(dataset, params.model.resolution, splits=("train",), brand="", progress=False)
    fingerprint = save(build_components(params, data), root / "base")
    return root / "base", fingerprint


def lora_shapes(base_dir: Path, rank: int) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a rank-`rank` LoRA on this base's UNet (peft naming, as adapters store it)."""
    from bg_platform.model.components import load
    from bg_platform.model.lora import add_training_lora, lora_tensors

    comps = load(base_dir)
    add_training_lora(comps.unet, rank, float(rank), name="brand", init=False)
    return {k: tuple(v.shape) for k, v in lora_tensors(comps.unet, "brand").items()}


def random_adapter(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """nn.Linear's default init for A and B (B non-zero): a visible, stable effect on outputs."""
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.rand(s, generator=g) * 2 - 1) / s[1] ** 0.5 for k, s in shapes.items()}


def write_adapters(root: Path, base_dir: Path, fingerprint: str, brands: Sequence[str], rank: int = 4,
                   registry: str | None = None) -> dict[str, Path]:
    """One adapter folder per brand; published and promoted when `registry` is given."""
    from bg_platform.model.lora import AdapterMeta, save_adapter
    from bg_platform.orchestration.adapters import publish_adapter

    shapes = lora_shapes(base_dir, rank)
    out = {}
    for i, brand in enumerate(brands):
        meta = AdapterMeta(brand=brand, rank=rank, alpha=float(rank), base_fingerprint=fingerprint)
        out[brand] = save_adapter(root / "adapters" / brand, meta, random_adapter(shapes, 1000 + i))
        if registry:
            publish_adapter(registry, brand, out[brand], PASSED)
    return out


def product(seed: int = 0, size: int = 64) -> tuple[np.ndarray, np.ndarray, bytes]:
    """(rgb, mask, RGBA PNG bytes) of a random product on a square canvas."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4: 3 * size // 4, size // 3: 2 * size // 3] = 255
    buf = io.BytesIO()
    Image.fromarray(np.dstack([rgb, mask])).save(buf, "PNG")
    return rgb, mask, buf.getvalue()


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def timed(fn: Callable[[], object], repeat: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def pct(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in header]] + [[c if isinstance(c, str) else f"{c:.3g}" if isinstance(c, float) else str(c)
                                           for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [f"### {title}", "", "| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells[1:]]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    return text


def environment() -> str:
    load = os.getloadavg()
    line = (f"machine: {platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} "
            f"(other jobs share these cores); command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(line, flush=True)
    return line
