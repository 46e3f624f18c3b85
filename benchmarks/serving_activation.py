"""Benchmark 1: adapter activation latency vs the number of resident adapters N.

    .venv/bin/python benchmarks/serving_activation.py [--ns 1,10,100,1000] [--peer-budget-s 240]

Side by side, on the same base UNet (smoke-profile size, 2 CPU cores shared):
- slots (this service): N adapters prepared in host RAM; activation = `LoraSlots.activate`, an
  in-place copy of one padded adapter into a pre-allocated slot;
- set_adapters (diffusers/peft): N adapters loaded into the UNet with `unet.load_lora_adapter`,
  activation = `unet.set_adapters([name])`; the load of the N-th adapter is reported too (what
  a new brand costs there);
- hotswap (diffusers/peft): `enable_lora_hotswap(target_rank)` + one loaded adapter; activation =
  `unet.load_lora_adapter(state_dict, adapter_name=..., hotswap=True)` from N state dicts in RAM;
- reload: load the base from disk + build the pipeline with its slots + activate.
Loading adapters into peft slows down as more are loaded (each load walks the existing ones), so
the set_adapters column stops at the largest N reached within --peer-budget-s; the table says so.
A one-off check first verifies that the three methods compute the same UNet output.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import serving_common as common
import torch


def unet_inputs(unet):
    g = torch.Generator().manual_seed(0)
    c = unet.config
    x = torch.randn(1, c.in_channels, c.sample_size, c.sample_size, generator=g)
    ehs = torch.randn(1, 77, c.cross_attention_dim, generator=g)
    return x, torch.tensor([500]), ehs


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", default="1,10,100,1000", help="resident adapter counts")
    ap.add_argument("--repeat", type=int, default=60, help="activations timed per cell")
    ap.add_argument("--peer-budget-s", type=float, default=240.0, help="time allowed for loading peft adapters")
    ap.add_argument("--rank", type=int, default=4)
    args = ap.parse_args()
    ns = [int(n) for n in args.ns.split(",")]
    env = common.environment()
    torch.manual_seed(0)
    from diffusers import UNet2DConditionModel

    from bg_platform.model.components import load
    from bg_platform.model.lora import AdapterMeta
    from bg_platform.model.pipeline import BgPipeline

    root = Path(tempfile.mkdtemp(prefix="bgp-bench-activation-"))
    base, fp = common.build_base(root)
    shapes = common.lora_shapes(base, args.rank)
    adapters = [common.random_adapter(shapes, i) for i in range(max(ns))]
    meta = AdapterMeta("bench", args.rank, float(args.rank), base_fingerprint=fp)
    rng = np.random.default_rng(0)

    pipe = BgPipeline(load(base), lora_slots=2, max_rank=8)
    slots = pipe.slots
    prepared: list[dict] = []

    def ours(n: int) -> list[float]:
        while len(prepared) < n:
            prepared.append(slots.prepare(meta, adapters[len(prepared)]))
        out = []
        for _ in range(args.repeat):
            i = int(rng.integers(n))
            slots.loaded["slot0"] = None  # force a real copy even when the same adapter comes twice
            t0 = time.perf_counter()
            slots.activate("slot0", f"a{i}", prepared[i])
            out.append(time.perf_counter() - t0)
        return out

    def plain_unet():
        u = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
        return u.eval()

    peft_unet, loaded, load_times = plain_unet(), 0, {}
    budget_end = time.monotonic() + args.peer_budget_s

    def set_adapters(n: int) -> list[float] | None:
        nonlocal loaded
        while loaded < n:
            if time.monotonic() > budget_end:
                return None
            t0 = time.perf_counter()
            peft_unet.load_lora_adapter(dict(adapters[loaded]), prefix=None, adapter_name=f"a{loaded}")
            load_times[loaded + 1] = time.perf_counter() - t0
            loaded += 1
        names = [f"a{int(rng.integers(n))}" for _ in range(min(args.repeat, 20))]
        return [timed_call(lambda nm=nm: peft_unet.set_adapters([nm])) for nm in names]

    hot = plain_unet()
    hot.enable_lora_hotswap(target_rank=8)
    hot.load_lora_adapter(dict(adapters[0]), prefix=None, adapter_name="brand")

    def hotswap(n: int) -> list[float]:
        return [timed_call(lambda j=int(rng.integers(n)): hot.load_lora_adapter(
            dict(adapters[j]), prefix=None, adapter_name="brand", hotswap=True)) for _ in range(min(args.repeat, 30))]

    def reload() -> None:
        p = BgPipeline(load(base), lora_slots=2, max_rank=8)
        p.slots.activate("slot0", "a0", p.slots.prepare(meta, adapters[0]))

    # equivalence: the same adapter through each method gives the same UNet output
    x, t, ehs = unet_inputs(pipe.c.unet)
    j = min(3, max(ns) - 1)
    slots.activate("slot0", f"a{j}", slots.prepare(meta, adapters[j]))
    with slots.route(["slot0"]):
        y_ours = pipe.c.unet(x, t, encoder_hidden_states=ehs).sample
    check = plain_unet()
    check.load_lora_adapter(dict(adapters[j]), prefix=None, adapter_name="x")
    y_peft = check(x, t, encoder_hidden_states=ehs).sample
    hot.load_lora_adapter(dict(adapters[j]), prefix=None, adapter_name="brand", hotswap=True)
    y_hot = hot(x, t, encoder_hidden_states=ehs).sample
    y_base = plain_unet()(x, t, encoder_hidden_states=ehs).sample
    eq = (f"same adapter, same UNet input: max |slots - set_adapters| = {(y_ours - y_peft).abs().max():.2e}, "
          f"max |slots - hotswap| = {(y_ours - y_hot).abs().max():.2e}, while the adapter itself moves the output by "
          f"{(y_ours - y_base).abs().max():.2e}")
    print(eq, flush=True)

    reload_s = common.timed(reload, repeat=3)
    rows, notes = [], []
    for n in ns:
        o = ours(n)
        s = set_adapters(n)
        h = hotswap(n)
        om, hm = common.median_ms(o), common.median_ms(h)
        sm = common.median_ms(s) if s else None
        rm = common.median_ms(reload_s)
        if s is None:
            notes.append(f"set_adapters at N={n}: not reached; loading stopped at N={loaded} after the {args.peer_budget_s:.0f} s "
                         f"budget (the {loaded}-th load took {load_times.get(loaded, float('nan')):.2f} s and grows with N)")
        rows.append([n, om, common.pct(o, 95) * 1000, sm if sm is not None else "n/a", hm, rm,
                     f"{sm / om:.0f}x" if sm else "n/a", f"{hm / om:.0f}x", f"{rm / om:.0f}x",
                     f"{load_times[n]:.3f}" if n in load_times else "n/a"])
    header = ["N resident", "slots ms (p50)", "slots ms (p95)", "set_adapters ms", "hotswap ms", "reload ms",
              "set_adapters/slots", "hotswap/slots", "reload/slots", "peft load of N-th adapter (s)"]
    common.table("Adapter activation latency vs resident adapters (median of repeated activations)", header, rows)
    for line in notes:
        print(line)
    print(f"\n{eq}\n{env}")


def timed_call(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
