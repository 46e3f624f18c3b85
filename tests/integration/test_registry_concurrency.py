"""The registry under real concurrency and real crashes: separate processes, SIGKILL mid-upload."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bg_platform.registry import Registry
from bg_platform.registry.aliases import replay

pytestmark = pytest.mark.integration
FP = "base-fp-concurrency"
WORKERS = 6
PUBLISHES_PER_WORKER = 3


def _make_adapter(folder: Path, seed: int, big_mib: float = 0) -> Path:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(seed)
    save_file({"lora_A": torch.randn(16, 8, generator=gen)}, str(folder / "a_adapter.safetensors"))
    if big_mib:
        n = int(big_mib * 1024 * 1024 / 4)
        save_file({"lora_B": torch.randn(n, generator=gen)}, str(folder / "b_large.safetensors"))
    save_file({"lora_C": torch.randn(8, 16, generator=gen)}, str(folder / "c_adapter.safetensors"))
    (folder / "config.json").write_text(json.dumps({"seed": seed}))
    return folder


def _publisher(root: str, src: str, worker: int, start, out: str) -> None:
    reg = Registry(root)
    start.wait(60)
    published = []
    for i in range(PUBLISHES_PER_WORKER):
        info = reg.publish(
            "aurora", src, base_fingerprint=FP, data_hash=f"w{worker}-{i}", params={"worker": worker, "i": i},
            metrics={"score": worker + i / 10},
        )  # fmt: skip
        published.append([info.version, info.metadata.data_hash])
    Path(out).write_text(json.dumps(published))


def _alias_changer(root: str, mine: list[str], start, phase, rounds: int, rollbacks: int) -> None:
    reg = Registry(root)
    start.wait(60)
    for i in range(rounds):  # alternate between this worker's own two versions: never a no-op
        reg.promote("aurora", mine[i % 2])
    phase.wait(120)  # every promotion is done before anyone rolls back
    for _ in range(rollbacks):
        reg.rollback("aurora")


def _run_all(ctx, processes: list, start) -> None:
    for p in processes:
        p.start()
    start.set()
    for p in processes:
        p.join(180)
    assert [p.exitcode for p in processes] == [0] * len(processes)


def test_concurrent_publishers_get_distinct_complete_versions(tmp_path: Path):
    root = str(tmp_path / "registry")
    reg = Registry(root)
    sources = [_make_adapter(tmp_path / f"src{w}", seed=w, big_mib=0.5) for w in range(WORKERS)]
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    outs = [tmp_path / f"out{w}.json" for w in range(WORKERS)]
    procs = [
        ctx.Process(target=_publisher, args=(root, str(sources[w]), w, start, str(outs[w])))
        for w in range(WORKERS)
    ]
    t0 = time.monotonic()
    _run_all(ctx, procs, start)
    elapsed = time.monotonic() - t0

    claimed = [tuple(v) for out in outs for v in json.loads(out.read_text())]
    versions = [v for v, _ in claimed]
    assert len(versions) == WORKERS * PUBLISHES_PER_WORKER == len(set(versions)), "every publish gets its own id"
    assert reg.list_versions("aurora") == sorted(versions), "nothing lost, nothing extra"
    for version, data_hash in claimed:
        info = reg.verify("aurora", version, expected_base_fingerprint=FP)
        assert info.metadata.data_hash == data_hash
        worker = info.metadata.params["worker"]
        # the stored bytes are the ones this worker uploaded, not another publisher's
        stored = reg.read_weights("aurora", version, FP)
        from safetensors.torch import load_file

        expected = load_file(str(sources[worker] / "a_adapter.safetensors"))
        assert stored["lora_A"].equal(expected["lora_A"])
    publishes = [e for e in reg.history("aurora") if e.action == "publish"]
    assert sorted(e.version for e in publishes) == sorted(versions)
    print(f"{len(versions)} concurrent publishes by {WORKERS} processes in {elapsed:.1f}s")


def test_concurrent_promotions_and_rollbacks_lose_no_event(tmp_path: Path):
    root = str(tmp_path / "registry")
    reg = Registry(root)
    src = _make_adapter(tmp_path / "src", seed=0)
    versions = [reg.publish("aurora", src, base_fingerprint=FP, data_hash="d", params={}, metrics={}).version
                for _ in range(1 + 2 * WORKERS)]  # fmt: skip
    reg.promote("aurora", versions[0])
    rounds, rollbacks = 4, 2
    ctx = mp.get_context("spawn")
    start, phase = ctx.Event(), ctx.Barrier(WORKERS)
    procs = [
        ctx.Process(
            target=_alias_changer, args=(root, versions[1 + 2 * w : 3 + 2 * w], start, phase, rounds, rollbacks)
        )
        for w in range(WORKERS)
    ]
    _run_all(ctx, procs, start)

    history = reg.history("aurora")
    changes = [e for e in history if e.alias == "production"]
    assert sum(e.action == "set" for e in changes) == 1 + WORKERS * rounds, "a promotion was lost"
    assert sum(e.action == "rollback" for e in changes) == WORKERS * rollbacks, "a rollback was lost"
    # each set/rollback saw the state left by the previous one (no lost update)
    for before, after in zip(changes, changes[1:], strict=False):
        assert after.previous == replay([e for e in changes if e.id <= before.id], "production")[-1]
    stack = replay(history, "production")
    assert len(stack) == 1 + WORKERS * rounds - WORKERS * rollbacks
    # the alias document (what serving reads) is exactly what the immutable log says
    assert reg.resolve("aurora", "production").version == stack[-1]
    assert reg.production_versions() == {"aurora": stack[-1]}
    doc = json.loads(Path(root, "aurora", "aliases", "production.json").read_text())
    assert doc["event"] == changes[-1].id


KILLED_PUBLISHER = """
import sys, time
from pathlib import Path
from bg_platform.registry import Registry

root, src, marker = sys.argv[1:4]

def stall(name, done, total):
    if name == "b_large.safetensors" and done < total:
        Path(marker).write_text(name)  # half of the large file is on storage now
        time.sleep(600)

Registry(root).publish("aurora", src, base_fingerprint="base-fp-concurrency", data_hash="killed",
                       params={}, metrics={}, progress=stall)
"""


def test_publisher_killed_mid_upload_leaves_nothing_visible_and_nothing_lost(tmp_path: Path):
    from bg_platform.registry import storage

    root = str(tmp_path / "registry")
    reg = Registry(root)
    good = _make_adapter(tmp_path / "good", seed=1)
    v1 = reg.publish("aurora", good, base_fingerprint=FP, data_hash="d1", params={}, metrics={}).version
    v2 = reg.publish("aurora", good, base_fingerprint=FP, data_hash="d2", params={}, metrics={}).version
    reg.promote("aurora", v1)
    reg.promote("aurora", v2)
    reg.set_alias("aurora", "candidate", v1)
    history_before = reg.history("aurora")

    big_mib = storage.CHUNK_BYTES / 2**20 * 1.5  # more than one chunk: the kill lands inside the file
    doomed = _make_adapter(tmp_path / "doomed", seed=2, big_mib=big_mib)
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PUBLISHER, root, str(doomed), str(marker)])
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "the publisher died before reaching the large file"
            assert time.monotonic() < deadline, "the publisher never reached the large file"
            time.sleep(0.05)
        # Observable: the upload is on disk, the large file half written, metadata.json absent.
        partial = [d for d in (Path(root) / "aurora" / "versions").iterdir() if d.name not in (v1, v2)]
        assert len(partial) == 1
        on_disk = {p.name: p.stat().st_size for p in partial[0].iterdir()}
        assert "metadata.json" not in on_disk and "a_adapter.safetensors" in on_disk
        assert 0 < on_disk["b_large.safetensors"] < (doomed / "b_large.safetensors").stat().st_size
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()

    # Nothing visible.
    assert reg.list_versions("aurora") == [v1, v2]
    assert reg.list_brands() == ["aurora"]
    assert reg.aliases("aurora") == {"candidate": v1, "production": v2}
    assert reg.history("aurora") == history_before
    # Nothing lost: aliases resolve and verify, rollback still works.
    assert reg.verify("aurora", "production", expected_base_fingerprint=FP).version == v2
    assert reg.read_weights("aurora", "candidate", FP).keys() == {"lora_A", "lora_C"}
    # The next publish works.
    v3 = reg.publish("aurora", good, base_fingerprint=FP, data_hash="d3", params={}, metrics={}).version
    assert reg.list_versions("aurora") == [v1, v2, v3]
    # gc: young leftovers are kept (an upload might still be running), old ones are removed.
    assert reg.gc(3600) == []
    removed = reg.gc(0)
    assert removed == [str(partial[0])]
    assert sorted(d.name for d in (Path(root) / "aurora" / "versions").iterdir()) == [v1, v2, v3]
    for version in (v1, v2, v3):
        reg.verify("aurora", version, expected_base_fingerprint=FP)
    assert reg.rollback("aurora").version == v1
