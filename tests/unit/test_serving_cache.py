"""The adapter cache: LRU order, bounded size, hit/miss/eviction counts, single-flight loads."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import REGISTRY

from bg_platform.serving.cache import LruCache


def counting_loader(log: list):
    def load(key):
        log.append(key)
        return {"value": key}

    return load


def test_lru_is_bounded_and_evicts_least_recently_used():
    loads = []
    cache = LruCache(2, counting_loader(loads))
    a = cache.get("a")
    cache.get("b")
    assert cache.get("a") is a  # a hit returns the very object: no reload
    cache.get("c")  # evicts b (a was used more recently)
    assert cache.keys() == ["a", "c"]
    assert "b" not in cache
    cache.get("b")
    assert loads == ["a", "b", "c", "b"]
    s = cache.stats()
    assert (s.hits, s.misses, s.evictions, s.size, s.capacity) == (1, 4, 2, 2, 2)


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_counters_reach_prometheus():
    names = ("bgp_adapter_cache_hits_total", "bgp_adapter_cache_misses_total", "bgp_adapter_cache_evictions_total")
    before = [sample(n) for n in names]
    cache = LruCache(1, counting_loader([]))
    cache.get(1)
    cache.get(1)
    cache.get(2)
    assert [sample(n) - b for n, b in zip(names, before, strict=True)] == [1, 2, 1]
    assert sample("bgp_adapter_cache_entries") == 1


def test_evicted_value_stays_valid_for_its_holder():
    cache = LruCache(1, counting_loader([]))
    held = cache.get("a")
    cache.get("b")
    assert "a" not in cache and held == {"value": "a"}


def test_put_preloads_without_counting_and_peek_keeps_order():
    cache = LruCache(2, counting_loader([]))
    cache.put("x", 1)
    cache.put("y", 2)
    assert cache.peek("x") == 1  # peek must not make x recent
    cache.put("z", 3)
    assert cache.keys() == ["y", "z"]
    s = cache.stats()
    assert (s.hits, s.misses, s.evictions) == (0, 0, 1)


def test_failed_load_is_not_cached_and_is_retried():
    calls = []

    def flaky(key):
        calls.append(key)
        if len(calls) == 1:
            raise OSError("registry unreachable")
        return key * 2

    cache = LruCache(4, flaky)
    with pytest.raises(OSError, match="unreachable"):
        cache.get(3)
    assert 3 not in cache
    assert cache.get(3) == 6 and calls == [3, 3]


def test_concurrent_misses_load_once():
    started, release = threading.Event(), threading.Event()
    loads = []

    def slow(key):
        loads.append(key)
        started.set()
        release.wait(5)
        return object()

    cache = LruCache(4, slow)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("k"))) for _ in range(8)]
    for t in threads:
        t.start()
    assert started.wait(5)
    time.sleep(0.05)  # let the other threads reach the pending load
    release.set()
    for t in threads:
        t.join(5)
    assert loads == ["k"]
    assert len(results) == 8 and all(r is results[0] for r in results)
    s = cache.stats()
    assert s.misses == 1 and s.hits == 7


def test_concurrent_failed_load_reaches_every_waiter():
    started, release = threading.Event(), threading.Event()

    def failing(key):
        started.set()
        release.wait(5)
        raise ValueError(f"bad adapter {key}")

    cache = LruCache(2, failing)
    errors = []

    def worker():
        try:
            cache.get("k")
        except ValueError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    assert started.wait(5)
    time.sleep(0.05)
    release.set()
    for t in threads:
        t.join(5)
    assert errors == ["bad adapter k"] * 4
    assert cache.stats().size == 0


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity"):
        LruCache(0, counting_loader([]))
