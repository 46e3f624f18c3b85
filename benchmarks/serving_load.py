"""Benchmark 3: throughput and p50/p95 latency under concurrent load, one brand vs a mix of brands
(including more active brands than LoRA slots and than cache entries), with and without
cross-brand batching.

    .venv/bin/python benchmarks/serving_load.py [--clients 8] [--requests 6] [--rounds 2] [--steps 10]

Clients are threads calling `Engine.generate` on pre-validated requests (the engine: queue,
batching, cache, slots, model; HTTP is benchmark 4). Each client sends its requests back to back;
brands are drawn uniformly from the scenario's set. Modes:
- cross-brand: any brands share a batch, each row routed to its adapter's slot;
- by brand: a batch holds one brand (the oldest waiting request's);
- no batching: one request per model call (max batch 1 image).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import serving_common as common


def run_load(engine, requests_per_client: list[list]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()

    def client(reqs) -> None:
        for r in reqs:
            t0 = time.perf_counter()
            engine.generate(r)
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(reqs,)) for reqs in requests_per_client]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, latencies


def composition(engine, brands, args) -> None:
    """Model time per image of one batch: one adapter for every row vs one adapter per row (the
    peft mixed-batch path), same rows and seeds, interleaved repeats."""
    import torch

    rgb, mask, _ = common.product(0)
    served = engine.brands()
    slots = engine.pipe.slots.names
    for i, name in enumerate(slots):
        engine.pipe.slots.activate(name, brands[i], engine.adapter(brands[i], served[brands[i]]).tensors)
    rows = []
    for b in (len(slots), 2 * len(slots), 4 * len(slots)):
        layouts = {"base only": [None] * b, "1 adapter": [slots[0]] * b,
                   f"{len(slots)} adapters": [slots[i % len(slots)] for i in range(b)]}
        times: dict[str, list[float]] = {k: [] for k in layouts}
        for _ in range(5):
            for name, route in layouts.items():
                with torch.no_grad():
                    times[name] += common.timed(lambda r=route, n=b: engine.pipe.generate(
                        [rgb] * n, [mask] * n, ["wood"] * n, list(range(n)), slots=r, steps=args.steps), 1, warmup=0)
        med = {k: common.median_ms(v) / b for k, v in times.items()}
        rows.append([b, med["base only"], med["1 adapter"], med[f"{len(slots)} adapters"],
                     f"{med[f'{len(slots)} adapters'] / med['1 adapter']:.2f}x"])
    with torch.no_grad():
        single = common.median_ms(common.timed(lambda: engine.pipe.generate(
            [rgb], [mask], ["wood"], [0], slots=[slots[0]], steps=args.steps), 5))
    common.table(f"Model time per image (ms) by batch composition, {args.steps} steps + guidance; batch of 1 with an "
                 f"adapter: {single:.0f} ms/image",
                 ["batch", "base only", "1 adapter", f"{len(slots)} adapters (one per row)", "mixed / 1 adapter"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=6, help="requests per client per cell and round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per cell, modes interleaved")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--brands", type=int, default=24)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--cache-size", type=int, default=8)
    args = ap.parse_args()
    env = common.environment()
    from bg_platform.serving import Engine, ServingConfig, parse_generate

    root = Path(tempfile.mkdtemp(prefix="bgp-bench-load-"))
    base, fp = common.build_base(root)
    brands = [f"brand{i:03d}" for i in range(args.brands)]
    registry = str(root / "registry")
    common.write_adapters(root, base, fp, brands, registry=registry)
    scenarios = [("1 brand", brands[:1]), (f"{args.slots - 1} brands (< slots)", brands[:args.slots - 1]),
                 (f"{args.brands} brands (> {args.slots} slots, > {args.cache_size} cached)", brands)]
    modes = [("cross-brand batching", dict(cross_brand_batching=True, max_batch_rows=16)),
             ("batches by brand", dict(cross_brand_batching=False, max_batch_rows=16)),
             ("no batching", dict(cross_brand_batching=False, max_batch_rows=1))]
    _, _, png = common.product(0)
    engines = {mode: Engine(ServingConfig(base_dir=str(base), registry_root=registry, slots=args.slots, max_rank=8,
                                          cache_size=args.cache_size, poll_interval_s=0, steps=args.steps,
                                          work_dir=str(root / "work"), **settings))
               for mode, settings in modes}
    rows, tput = [], {}
    for scenario, active in scenarios:
        rng = np.random.default_rng(0)  # the same request sequence for every mode and round
        brand_plan = [[str(rng.choice(active)) for _ in range(args.requests)] for _ in range(args.clients)]
        cells = {mode: {"tput": [], "lat": [], "batches": 0, "acts": 0, "hits": 0, "lookups": 0, "n": 0} for mode, _ in modes}
        for rnd in range(args.rounds):
            order = modes[rnd % len(modes):] + modes[:rnd % len(modes)]  # rotate: no mode always runs first
            for mode, _ in order:
                engine, cell = engines[mode], cells[mode]
                plan = [[parse_generate(engine.config, engine.categories, image=png, category="wood", brand=b,
                                        seed=int(rng.integers(1 << 20))) for b in brands_] for brands_ in brand_plan]
                engine.generate(plan[0][0])  # warm this engine after the others ran
                acts, stats, batches = engine.activations, engine.cache.stats(), engine.batcher.batches
                wall, lat = run_load(engine, plan)
                s = engine.cache.stats()
                cell["tput"].append(len(lat) / wall)
                cell["lat"] += lat
                cell["n"] += len(lat)
                cell["batches"] += engine.batcher.batches - batches
                cell["acts"] += engine.activations - acts
                cell["hits"] += s.hits - stats.hits
                cell["lookups"] += (s.hits - stats.hits) + (s.misses - stats.misses)
        for mode, _ in modes:
            c = cells[mode]
            tput[(scenario, mode)] = float(np.median(c["tput"]))
            rows.append([scenario, mode, f"{np.median(c['tput']):.2f} ({min(c['tput']):.2f}-{max(c['tput']):.2f})",
                         common.pct(c["lat"], 50) * 1000, common.pct(c["lat"], 95) * 1000, c["n"] / max(c["batches"], 1),
                         c["acts"] / c["n"], f"{c['hits'] / max(c['lookups'], 1) * 100:.0f}%"])
    common.table(f"Concurrent load: {args.clients} clients x {args.requests} requests x {args.rounds} rounds (modes "
                 f"interleaved), {args.steps} steps + guidance 3, 64 px, {args.slots} slots, cache {args.cache_size}",
                 ["active brands", "mode", "req/s median (min-max)", "p50 ms", "p95 ms", "requests/batch",
                  "activations/request", "cache hits"], rows)
    ratio_rows = []
    for scenario, _ in scenarios:
        mixed = tput[(scenario, "cross-brand batching")]
        ratio_rows.append([scenario, f"{mixed / tput[(scenario, 'batches by brand')]:.2f}x",
                           f"{mixed / tput[(scenario, 'no batching')]:.2f}x",
                           f"{mixed / tput[(scenarios[0][0], 'cross-brand batching')]:.2f}x"])
    common.table("Throughput ratios (medians)", ["active brands", "cross-brand / by brand", "cross-brand / no batching",
                                                 "vs 1-brand load (cross-brand)"], ratio_rows)
    composition(engines["cross-brand batching"], brands, args)
    for engine in engines.values():
        engine.close()
    print(env)


if __name__ == "__main__":
    main()
