"""The serving engine: one base pipeline per process, brand adapters hot-swapped through LoRA slots.

    engine = Engine(ServingConfig.from_env())       # loads the base ONCE, follows the registry
    req = parse_generate(engine.config, engine.categories, image=png_bytes, category="wood", brand="aurora")
    result = engine.generate(req)                   # images + the exact adapter version used

How an adapter reaches a request:
    registry --(follower: verify, prepare)--> host-RAM LRU cache --(model thread: copy)--> LoRA slot
Activation copies one prepared adapter into a pre-allocated slot (`LoraSlots.activate`): its cost
is the size of one adapter, however many adapters are resident, and no module is ever added or
removed, so memory stays flat and outputs cannot drift with the number of swaps. Only the model
thread (batching.Batcher) touches the slots, so swaps never race with a forward pass.
"""

from __future__ import annotations

import itertools
import logging
import time
import warnings
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np

from bg_platform.serving import metrics
from bg_platform.serving.adapters import AdapterSource, PreparedAdapter
from bg_platform.serving.batching import Batcher, Job
from bg_platform.serving.cache import LruCache
from bg_platform.serving.config import ServingConfig
from bg_platform.serving.errors import Unavailable
from bg_platform.serving.follower import RegistryFollower, ReloadReport
from bg_platform.serving.requests import GenerateRequest, check_brand

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateResult:
    images: list[np.ndarray]  # uint8 (H, W, 3), one per seed, at the input's size
    seeds: tuple[int, ...]
    brand: str | None
    adapter_version: str | None
    base_fingerprint: str


class Engine:
    def __init__(self, config: ServingConfig, *, start: bool = True):
        import torch
        from transformers.utils import logging as hf_logging

        from bg_platform.model.components import fingerprint, load
        from bg_platform.model.pipeline import BgPipeline
        from bg_platform.registry import Registry

        t0 = time.perf_counter()
        self.config = config
        self._ready = False
        hf_logging.disable_progress_bar()  # per-shard bars are noise in a service log
        components = load(config.base_dir)
        self.base_fingerprint = components.meta.fingerprint or fingerprint(config.base_dir)
        with torch.no_grad(), warnings.catch_warnings():
            # peft warns once per extra slot ("Already found a `peft_config`"): K slots are K adapters by design
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            self.pipe = BgPipeline(components, config.device, lora_slots=config.slots, max_rank=config.max_rank)
        self._slot_clock = itertools.count(1)
        self._slot_used = dict.fromkeys(self.pipe.slots.names, 0)
        self.activations = 0
        self.registry = Registry(config.registry_root)
        self.source = AdapterSource(self.registry, self.base_fingerprint, self.pipe.slots.prepare, config.work_dir)
        self.cache: LruCache[tuple[str, str], PreparedAdapter] = LruCache(config.cache_size, self.source.load)
        self.follower = RegistryFollower(self.registry, lambda b, v: self.cache.get((b, v)), config.poll_interval_s)
        self.batcher = Batcher(
            self._run_batch, max_rows=config.max_batch_rows, max_adapters=config.slots,
            mixed=config.cross_brand_batching, max_queue_rows=config.max_queue_rows,
        )
        report = self.follower.reload()
        metrics.BASE.labels(self.base_fingerprint).set(1)
        if start:
            self.follower.start()
        self._ready = True
        log.info("serving base %s (%d categories) with %d brand(s), %d refused, in %.1f s", self.base_fingerprint[:12],
                 len(self.categories), len(report.brands), len(report.refused), time.perf_counter() - t0)

    # -- queries ---------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def categories(self) -> tuple[str, ...]:
        return self.pipe.categories

    def brands(self) -> dict[str, str]:
        return dict(self.follower.snapshot())

    def reload(self) -> ReloadReport:
        return self.follower.reload(retry_refused=True)

    # -- generation ------------------------------------------------------------------------------
    def adapter(self, brand: str, version: str) -> PreparedAdapter:
        return self.cache.get((brand, version))

    def generate(self, request: GenerateRequest) -> GenerateResult:
        mapping = self.follower.snapshot()  # ONE snapshot: this request is served by one adapter version
        version = adapter = None
        if request.brand is not None:
            check_brand(request.brand, list(mapping))
            version = mapping[request.brand]
            adapter = self.adapter(request.brand, version)
        future = self.batcher.submit(request, adapter)
        try:
            images = future.result(timeout=self.config.request_timeout_s)
        except FutureTimeout:
            future.cancel()
            raise Unavailable(
                f"timed out after {self.config.request_timeout_s:.0f} s waiting for the model (BGP_REQUEST_TIMEOUT_S); "
                "retry later or ask for fewer images/steps"
            ) from None
        return GenerateResult(images, request.seeds, request.brand, version, self.base_fingerprint)

    def _assign_slots(self, adapters: list[PreparedAdapter]) -> dict[str, str]:
        """adapter key -> slot: reuse a slot already holding it, else refill the least recently used."""
        slots = self.pipe.slots
        held = {key: slot for slot, key in slots.loaded.items() if key is not None}
        out: dict[str, str] = {}
        for a in adapters:
            if a.key in held:
                out[a.key] = held[a.key]
        for a in adapters:
            if a.key in out:
                continue
            free = [s for s in slots.names if s not in out.values()]
            slot = min(free, key=self._slot_used.__getitem__)
            t0 = time.perf_counter()
            slots.activate(slot, a.key, a.tensors)
            metrics.ACTIVATION_SECONDS.observe(time.perf_counter() - t0)
            metrics.ACTIVATIONS.inc()
            self.activations += 1
            out[a.key] = slot
        now = next(self._slot_clock)
        for slot in out.values():
            self._slot_used[slot] = now
        return out

    def _run_batch(self, jobs: list[Job]) -> list[list[np.ndarray]]:
        distinct = list({j.adapter.key: j.adapter for j in jobs if j.adapter is not None}.values())
        if len(distinct) > len(self.pipe.slots.names):
            raise RuntimeError(f"batch needs {len(distinct)} adapters but there are {len(self.pipe.slots.names)} slots")
        slot_of = self._assign_slots(distinct)
        images, masks, cats, seeds, slots = [], [], [], [], []
        for job in jobs:
            r = job.request
            for seed in r.seeds:
                images.append(r.image)
                masks.append(r.mask)
                cats.append(r.category)
                seeds.append(seed)
                slots.append(slot_of[job.adapter_key] if job.adapter is not None else None)
        r0 = jobs[0].request
        out = self.pipe.generate(
            images, masks, cats, seeds, slots=slots, steps=r0.steps, guidance=r0.guidance, scheduler=r0.scheduler,
            confine=r0.confine, batch_size=max(len(images), 1),
        ).images
        results, start = [], 0
        for job in jobs:
            results.append(out[start:start + job.rows])
            start += job.rows
            metrics.IMAGES.labels(job.request.brand or "").inc(job.rows)
        return results

    def close(self) -> None:
        self._ready = False
        self.follower.stop()
        self.batcher.close()
        self.source.close()
