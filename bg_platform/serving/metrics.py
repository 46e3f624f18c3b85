"""Prometheus series of the serving core, as module-level prometheus_client objects.

BentoML runs prometheus_client in multiprocess mode (PROMETHEUS_MULTIPROC_DIR is set before the
worker imports this module), so:
- gauges declare a multiprocess mode ("livemostrecent": the value last set by a live worker);
- there is no Info metric (unsupported in multiprocess mode): the loaded adapter versions are a
  gauge labelled brand+version, 1 while serving, 0 once replaced (label sets cannot be removed
  from the multiprocess files, and a 0 keeps the history readable).
Outside BentoML (tests, benchmarks) the same objects live in the default in-process registry.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)

REQUESTS = Counter("bgp_requests", "Requests handled by the serving core", ["endpoint", "status"])
LATENCY = Histogram("bgp_request_latency_seconds", "Request latency inside the serving core",
                    ["endpoint"], buckets=_LATENCY_BUCKETS)
QUEUE_WAIT = Histogram("bgp_queue_wait_seconds", "Time a request waited for its batch to start",
                       buckets=_LATENCY_BUCKETS)
MODEL_SECONDS = Histogram("bgp_model_seconds", "Model time of one batch (slot activation + denoising + decoding)",
                          buckets=_LATENCY_BUCKETS)
BATCH_ROWS = Histogram("bgp_batch_images", "Images per model batch", buckets=(1, 2, 4, 8, 16, 32, 64))
BATCH_ADAPTERS = Histogram("bgp_batch_adapters", "Distinct adapters per model batch", buckets=(0, 1, 2, 4, 8, 16))
IMAGES = Counter("bgp_images_generated", "Images generated", ["brand"])

ACTIVATIONS = Counter("bgp_adapter_activations", "Adapters copied into a LoRA slot")
ACTIVATION_SECONDS = Histogram("bgp_adapter_activation_seconds", "Time to copy one adapter into a slot",
                               buckets=(1e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5))
CACHE_HITS = Counter("bgp_adapter_cache_hits", "Adapter cache lookups served from host RAM")
CACHE_MISSES = Counter("bgp_adapter_cache_misses", "Adapter cache lookups that loaded the adapter")
CACHE_EVICTIONS = Counter("bgp_adapter_cache_evictions", "Adapters evicted from the host-RAM cache (LRU)")
CACHE_ENTRIES = Gauge("bgp_adapter_cache_entries", "Adapters resident in the host-RAM cache",
                      multiprocess_mode="livemostrecent")
LOAD_SECONDS = Histogram("bgp_adapter_load_seconds", "Time to fetch, verify and prepare one adapter",
                         buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30))

REFUSED = Counter("bgp_adapter_refused", "Adapter versions refused (old version kept serving)",
                  ["brand", "version", "reason"])
REFUSED_NOW = Gauge("bgp_adapter_refused_current", "1 while the brand's production version is refused",
                    ["brand", "version", "reason"], multiprocess_mode="livemostrecent")
LOADED = Gauge("bgp_adapter_loaded", "1 for the adapter version each brand serves, 0 once replaced",
               ["brand", "version"], multiprocess_mode="livemostrecent")
BASE = Gauge("bgp_base_loaded", "1 once the base model is loaded", ["fingerprint"],
             multiprocess_mode="livemostrecent")
POLLS = Counter("bgp_registry_polls", "Registry polls", ["outcome"])
LAST_POLL = Gauge("bgp_registry_last_success_timestamp_seconds", "Unix time of the last successful poll",
                  multiprocess_mode="livemostrecent")
