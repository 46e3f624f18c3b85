"""Host-RAM LRU cache of prepared adapters, keyed by (brand, version).

Values are immutable once made (versions are immutable in the registry), so a value handed to a
request stays valid after its eviction: eviction only drops the cache's reference, and the memory
goes when the last request using it finishes. Concurrent misses on one key load it once
(single flight); a failed load is not cached, so the next lookup tries again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

from bg_platform.serving import metrics

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    size: int
    capacity: int


class LruCache(Generic[K, V]):
    def __init__(self, capacity: int, loader: Callable[[K], V]):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._loader = loader
        self._items: OrderedDict[K, V] = OrderedDict()
        self._loading: dict[K, Future] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def get(self, key: K) -> V:
        """The cached value (a hit), or the loader's (a miss, then cached)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                metrics.CACHE_HITS.inc()
                return self._items[key]
            pending = self._loading.get(key)
            owner = pending is None
            if owner:
                pending = self._loading[key] = Future()
                self.misses += 1
                metrics.CACHE_MISSES.inc()
            else:
                self.hits += 1  # served by the load already under way: no extra load
                metrics.CACHE_HITS.inc()
        if not owner:
            return pending.result()
        try:
            value = self._loader(key)
        except BaseException as exc:
            with self._lock:
                del self._loading[key]
            pending.set_exception(exc)
            raise
        with self._lock:
            del self._loading[key]
            self._insert(key, value)
        pending.set_result(value)
        return value

    def put(self, key: K, value: V) -> None:
        """Insert without counting a lookup (a preload)."""
        with self._lock:
            self._insert(key, value)

    def _insert(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
            self.evictions += 1
            metrics.CACHE_EVICTIONS.inc()
        metrics.CACHE_ENTRIES.set(len(self._items))

    def peek(self, key: K) -> V | None:
        """The value if resident, without touching the LRU order or the counters."""
        with self._lock:
            return self._items.get(key)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def keys(self) -> list[K]:
        """Resident keys, least recently used first."""
        with self._lock:
            return list(self._items)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self.hits, self.misses, self.evictions, len(self._items), self.capacity)
