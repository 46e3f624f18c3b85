"""Benchmark 2: process RSS over 1000 adapter swaps, and output drift after them.

    .venv/bin/python benchmarks/serving_memory.py [--swaps 1000] [--brands 24] [--peer-swaps 300]

This service: the real Engine (registry -> verified local copy -> host-RAM LRU cache -> LoRA slot)
with more brands than cache entries and slots, requests cycling through the brands, so EVERY
request is a swap and (LRU over a cycle) a cache miss + reload + prepare: the worst case for
memory creep. Each swap runs a real generate (1 step, no guidance, to keep 1000 of them short).
Peers, on a plain UNet with one forward per swap: diffusers/peft load + set_adapters +
delete_adapters per swap, and peft hotswap per swap.
Drift: the same request (or UNet input) before and after all the swaps must be bit-identical.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path

import numpy as np
import serving_common as common
import torch


def rss_series(step: int, every: int, samples: list, base: float | None = None) -> None:
    if step % every == 0:
        gc.collect()
        samples.append(common.rss_mb())


def growth(samples: list[float]) -> tuple[float, float, float, str]:
    start, end, peak = samples[0], samples[-1], max(samples)
    return start, end, peak, f"{(end - start) / start * 100:+.2f}%"


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--swaps", type=int, default=1000)
    ap.add_argument("--brands", type=int, default=24)
    ap.add_argument("--cache-size", type=int, default=8)
    ap.add_argument("--peer-swaps", type=int, default=300, help="swaps for each peer (load/delete is slow)")
    ap.add_argument("--warmup", type=int, default=100)
    args = ap.parse_args()
    env = common.environment()
    from diffusers import UNet2DConditionModel

    from bg_platform.serving import Engine, ServingConfig, parse_generate

    root = Path(tempfile.mkdtemp(prefix="bgp-bench-memory-"))
    base, fp = common.build_base(root)
    brands = [f"brand{i:03d}" for i in range(args.brands)]
    registry = str(root / "registry")
    folders = common.write_adapters(root, base, fp, brands, registry=registry)
    engine = Engine(ServingConfig(base_dir=str(base), registry_root=registry, slots=2, max_rank=8,
                                  cache_size=args.cache_size, poll_interval_s=0, work_dir=str(root / "work")))
    _, _, png = common.product(0)

    def req(brand: str, seed: int, steps: int = 1, guidance: float = 1.0):
        return parse_generate(engine.config, engine.categories, image=png, category="wood", brand=brand, seed=seed,
                              steps=steps, guidance=guidance)

    probe = req(brands[0], 0, steps=4, guidance=3.0)
    before = engine.generate(probe).images[0]
    for i in range(args.warmup):
        engine.generate(req(brands[i % len(brands)], i))
    acts0, stats0 = engine.activations, engine.cache.stats()
    samples: list[float] = []
    for i in range(args.swaps + 1):
        rss_series(i, 100, samples)
        if i < args.swaps:
            engine.generate(req(brands[(i + 1) % len(brands)], i))
    after = engine.generate(probe).images[0]
    stats = engine.cache.stats()
    ours = growth(samples)
    rows = [["slots + LRU cache (Engine.generate)", engine.activations - acts0, stats.misses - stats0.misses,
             stats.evictions - stats0.evictions, *[f"{v:.0f}" for v in ours[:3]], ours[3],
             "identical" if np.array_equal(before, after) else f"DRIFT (max {np.abs(before.astype(int) - after.astype(int)).max()})"]]
    engine.close()

    shapes = common.lora_shapes(base, 4)
    adapters = [common.random_adapter(shapes, 1000 + i) for i in range(args.brands)]
    g = torch.Generator().manual_seed(0)

    def plain_unet():
        return UNet2DConditionModel.from_pretrained(base, subfolder="unet").eval()

    unet = plain_unet()
    c = unet.config
    x = torch.randn(1, c.in_channels, c.sample_size, c.sample_size, generator=g)
    t, ehs = torch.tensor([500]), torch.randn(1, 77, c.cross_attention_dim, generator=g)

    def load_delete(i: int) -> torch.Tensor:
        unet.load_lora_adapter(dict(adapters[i % len(adapters)]), prefix=None, adapter_name="brand")
        unet.set_adapters(["brand"])
        y = unet(x, t, encoder_hidden_states=ehs).sample
        unet.delete_adapters("brand")
        return y

    hot = plain_unet()
    hot.enable_lora_hotswap(target_rank=8)
    hot.load_lora_adapter(dict(adapters[0]), prefix=None, adapter_name="brand")

    def hotswap(i: int) -> torch.Tensor:
        hot.load_lora_adapter(dict(adapters[i % len(adapters)]), prefix=None, adapter_name="brand", hotswap=True)
        return hot(x, t, encoder_hidden_states=ehs).sample

    for name, swap in (("diffusers load + set_adapters + delete_adapters", load_delete), ("peft hotswap", hotswap)):
        first = swap(0).clone()
        for i in range(1, args.warmup // 4):
            swap(i)
        samples = []
        for i in range(args.peer_swaps + 1):
            rss_series(i, max(args.peer_swaps // 10, 1), samples)
            if i < args.peer_swaps:
                swap(i + 1)
        last = swap(0)
        diff = (first - last).abs().max().item()
        res = growth(samples)
        rows.append([name, args.peer_swaps, "-", "-", *[f"{v:.0f}" for v in res[:3]], res[3],
                     "identical" if diff == 0 else f"DRIFT (max {diff:.2e})"])
    common.table(
        f"RSS over adapter swaps ({args.brands} brands cycled; this service: cache {args.cache_size}, 2 slots)",
        ["method", "swaps", "cache misses", "evictions", "RSS start MB", "RSS end MB", "RSS peak MB", "growth",
         "same request before/after"], rows)
    print(f"adapter folders: {len(folders)}; {env}")


if __name__ == "__main__":
    main()
