"""Framework-free inference core of the BentoML service (bentos/bg_service).

    config.py    ServingConfig (env BGP_*), the only input of the serving process
    engine.py    Engine: base pipeline loaded once, LoRA slots, generate()
    adapters.py  fetch + verify + prepare one adapter version (refusals with a reason)
    cache.py     host-RAM LRU cache of prepared adapters, keyed (brand, version)
    follower.py  registry following: atomic brand -> version swaps, refusals keep the old version
    batching.py  one model thread, continuous batches (cross-brand via slot routing, or by brand)
    requests.py  validation of uploads and fields (4xx with the field and the allowed values)
    api.py       the HTTP contract as plain functions returning Reply(status, body, headers)
    metrics.py   Prometheus series

Never imports bg_platform.training, bentoml or params.yaml. Attributes are imported lazily so that
`ServingConfig` is usable without torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ServingConfig": "config",
    "Engine": "engine",
    "GenerateResult": "engine",
    "GenerateRequest": "requests",
    "parse_generate": "requests",
    "Api": "api",
    "Reply": "api",
    "ServingError": "errors",
    "BadRequest": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"bg_platform.serving.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'bg_platform.serving' has no attribute {name!r}")
