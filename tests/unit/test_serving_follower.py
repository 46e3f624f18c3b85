"""Registry following: atomic brand -> version swaps, refusals that keep the old version serving.

A real registry on a temp folder, real safetensors adapters, the real AdapterSource (download with
sha256 + base fingerprint checks); only the UNet-specific `prepare` step is the identity here
(tests/unit/test_serving_engine.py covers it with a real UNet).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from prometheus_client import REGISTRY

from bg_platform.model.lora import AdapterMeta, save_adapter
from bg_platform.orchestration.adapters import publish_adapter
from bg_platform.registry import Registry
from bg_platform.serving.adapters import AdapterRefused, AdapterSource
from bg_platform.serving.follower import RegistryFollower

FP = "f" * 64
PASSED = {"gate": {"passed": True, "reasons": []}}


def make_adapter(folder: Path, brand: str, seed: int, fingerprint: str = FP) -> Path:
    g = torch.Generator().manual_seed(seed)
    tensors = {"blk.to_q.lora_A.weight": torch.randn(2, 8, generator=g), "blk.to_q.lora_B.weight": torch.randn(8, 2, generator=g)}
    return save_adapter(folder, AdapterMeta(brand=brand, rank=2, alpha=2.0, base_fingerprint=fingerprint), tensors)


class World:
    """A registry + a follower over it, and helpers to publish versions."""

    def __init__(self, tmp: Path, interval_s: float = 0.0):
        self.tmp = tmp
        self.root = str(tmp / "registry")
        self.registry = Registry(self.root)
        self.loads: list[tuple[str, str]] = []
        self.load_delay = 0.0
        self.source = AdapterSource(self.registry, FP, prepare=lambda meta, t: dict(t), work_dir=tmp / "work")
        self.follower = RegistryFollower(self.registry, self._load, interval_s)
        self._n = 0

    def _load(self, brand: str, version: str):
        self.loads.append((brand, version))
        time.sleep(self.load_delay)
        return self.source.load((brand, version))

    def publish(self, brand: str, promote: bool = True, fingerprint: str = FP) -> str:
        self._n += 1
        folder = make_adapter(self.tmp / "src" / f"{brand}-{self._n}", brand, self._n, fingerprint)
        return publish_adapter(self.root, brand, folder, PASSED, promote=promote).version

    def stored_file(self, brand: str, version: str) -> Path:
        return Path(self.root) / brand / "versions" / version / "adapter.safetensors"


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.follower.stop()
    w.source.close()


def test_initial_reload_serves_production_versions(world):
    a1, b1 = world.publish("acme"), world.publish("globex")
    world.publish("initech", promote=False)  # a candidate only: not served
    report = world.follower.reload()
    assert dict(world.follower.snapshot()) == {"acme": a1, "globex": b1}
    assert report.changed == {"acme": (None, a1), "globex": (None, b1)} and not report.refused
    assert sample("bgp_adapter_loaded", brand="acme", version=a1) == 1


def test_promotion_swaps_the_mapping_and_leaves_old_snapshots_untouched(world):
    a1 = world.publish("acme")
    world.follower.reload()
    before = world.follower.snapshot()
    a2 = world.publish("acme")
    report = world.follower.reload()
    assert report.changed == {"acme": (a1, a2)}
    assert before["acme"] == a1  # a request holding the old snapshot finishes on the old version
    assert world.follower.snapshot()["acme"] == a2
    with pytest.raises(TypeError):
        world.follower.snapshot()["acme"] = a1  # read-only: nobody can half-update it
    assert sample("bgp_adapter_loaded", brand="acme", version=a1) == 0
    assert sample("bgp_adapter_loaded", brand="acme", version=a2) == 1


def test_readers_never_see_a_half_applied_reload(world):
    a1, b1 = world.publish("acme"), world.publish("globex")
    world.follower.reload()
    a2, b2 = world.publish("acme"), world.publish("globex")
    world.load_delay = 0.05  # a slow download: readers run while the reload is in progress
    seen, stop = set(), threading.Event()

    def reader():
        while not stop.is_set():
            m = world.follower.snapshot()
            seen.add((m["acme"], m["globex"]))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    world.follower.reload()
    time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join(5)
    assert seen <= {(a1, b1), (a2, b2)} and (a2, b2) in seen


def test_corrupt_version_is_refused_and_the_old_one_keeps_serving(world):
    a1 = world.publish("acme")
    world.follower.reload()
    a2 = world.publish("acme", promote=False)
    path = world.stored_file("acme", a2)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the registry's stored weights
    path.write_bytes(bytes(data))
    world.registry.promote("acme", a2)
    refused_before = sample("bgp_adapter_refused_total", brand="acme", version=a2, reason="checksum")
    report = world.follower.reload()
    assert world.follower.snapshot()["acme"] == a1
    assert report.refused["acme"].version == a2 and report.refused["acme"].reason == "checksum"
    assert "sha256" in report.refused["acme"].message
    assert report.to_dict()["refused"]["acme"]["version"] == a2
    assert sample("bgp_adapter_refused_total", brand="acme", version=a2, reason="checksum") == refused_before + 1
    assert sample("bgp_adapter_refused_current", brand="acme", version=a2, reason="checksum") == 1
    assert sample("bgp_adapter_loaded", brand="acme", version=a1) == 1
    # a fixed promotion clears the refusal
    a3 = world.publish("acme")
    report = world.follower.reload()
    assert world.follower.snapshot()["acme"] == a3 and "acme" not in report.refused
    assert sample("bgp_adapter_refused_current", brand="acme", version=a2, reason="checksum") == 0


def test_adapter_of_another_base_is_refused(world):
    a1 = world.publish("acme")
    world.follower.reload()
    world.publish("acme", fingerprint="0" * 64)
    report = world.follower.reload()
    assert report.refused["acme"].reason == "fingerprint"
    assert world.follower.snapshot()["acme"] == a1


def test_missing_file_is_refused(world):
    a1 = world.publish("acme")
    world.follower.reload()
    a2 = world.publish("acme", promote=False)
    world.stored_file("acme", a2).unlink()
    world.registry.promote("acme", a2)
    report = world.follower.reload()
    assert report.refused["acme"].reason == "missing" and world.follower.snapshot()["acme"] == a1


def test_a_new_brand_whose_first_version_is_corrupt_is_not_served(world):
    world.publish("acme")
    b1 = world.publish("globex", promote=False)
    world.stored_file("globex", b1).write_bytes(b"not safetensors")
    world.registry.promote("globex", b1)
    report = world.follower.reload()
    assert "globex" not in world.follower.snapshot() and report.refused["globex"].version == b1


def test_rollback_is_picked_up(world):
    a1 = world.publish("acme")
    a2 = world.publish("acme")
    world.follower.reload()
    assert world.follower.snapshot()["acme"] == a2
    world.registry.rollback("acme")
    report = world.follower.reload()
    assert world.follower.snapshot()["acme"] == a1 and report.changed == {"acme": (a2, a1)}


def test_poller_refuses_once_then_admin_reload_retries(world):
    a1 = world.publish("acme")
    world.follower.reload()
    a2 = world.publish("acme", promote=False)
    world.stored_file("acme", a2).write_bytes(b"garbage")
    world.registry.promote("acme", a2)
    world.follower.reload(retry_refused=False)
    world.follower.reload(retry_refused=False)
    assert world.loads.count(("acme", a2)) == 1  # a refused immutable version is not re-downloaded every poll
    world.follower.reload(retry_refused=True)
    assert world.loads.count(("acme", a2)) == 2
    assert world.follower.snapshot()["acme"] == a1


def test_poller_thread_follows_promotions(tmp_path):
    w = World(tmp_path, interval_s=0.05)
    try:
        w.publish("acme")
        w.follower.reload()
        w.follower.start()
        a2 = w.publish("acme")
        deadline = time.monotonic() + 10
        while w.follower.snapshot()["acme"] != a2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert w.follower.snapshot()["acme"] == a2
    finally:
        w.follower.stop()
        w.source.close()


def test_unreadable_or_emptied_registry_keeps_every_brand(world):
    a1 = world.publish("acme")
    world.follower.reload()
    shutil.move(world.root, str(world.tmp / "moved"))  # e.g. an unmounted volume: the root lists as empty
    report = world.follower.reload()
    assert dict(world.follower.snapshot()) == {"acme": a1}
    assert "lists no production brand" in report.error


def test_brand_removed_from_the_registry_is_no_longer_served(world):
    world.publish("acme")
    world.publish("globex")
    world.follower.reload()
    shutil.rmtree(Path(world.root) / "globex")
    report = world.follower.reload()
    assert "globex" not in world.follower.snapshot() and report.changed["globex"][1] is None


def test_local_copy_is_rechecked_on_every_load(world):
    a1 = world.publish("acme")
    assert world.source.load(("acme", a1)).version == a1
    local = world.source.work_dir / "acme" / a1 / "adapter.safetensors"
    local.write_bytes(local.read_bytes()[:-1] + b"\x00")
    with pytest.raises(AdapterRefused, match="local copy") as info:
        world.source.load(("acme", a1))
    assert info.value.reason == "checksum"


def test_unknown_version_is_refused_as_missing(world):
    world.publish("acme")
    with pytest.raises(AdapterRefused) as info:
        world.source.load(("acme", "v20990101T000000.000000Z-00000000"))
    assert info.value.reason == "missing"


def test_a_brand_published_after_start_is_served_without_restart(world):
    world.publish("acme")
    world.follower.reload()
    b1 = world.publish("globex")
    report = world.follower.reload()
    assert world.follower.snapshot()["globex"] == b1 and report.changed == {"globex": (None, b1)}
