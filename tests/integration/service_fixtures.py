"""Fixtures for the BentoML service tests (owner: serving), star-imported by
tests/integration/conftest.py (`__all__` = the fixtures; pytest 9 refuses `pytest_plugins` outside
the root conftest).

- `serving_artifacts`: a tiny base (smoke profile, saved with `components.save`), one adapter per
  synth brand trained by `train_adapter` (+ a second `aurora` version for promotions), published and
  promoted in a fresh registry. ~20 s on 2 cores, once per session.
- `bento_home`: a temp BENTOML_HOME with the base imported by the real CLI, `bgp serve-import-base`.
- `bg_service`: a real `bentoml serve` subprocess on a free port, reading that model store and the
  registry (poll interval 0.3 s), admin token set; stopped (its process group) at session end.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import pytest

__all__ = ["bento_home", "bg_service", "serving_artifacts", "start_bento_server"]
ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
PASSED = {"gate": {"passed": True, "reasons": []}}


class ServingArtifacts(NamedTuple):
    base: Path
    fingerprint: str
    registry: str
    adapters: dict[str, Path]  # brand -> adapter folder; "aurora-v2" is a second aurora adapter
    initial: dict[str, str]  # brand -> the production version published by the fixture


class BentoServer(NamedTuple):
    url: str
    token: str
    registry: str
    log: Path
    process: subprocess.Popen


@pytest.fixture(scope="session")
def serving_artifacts(tmp_path_factory, smoke_params, tiny_dataset, tiny_components_factory) -> ServingArtifacts:
    from bg_platform.model.components import save
    from bg_platform.orchestration.adapters import publish_adapter
    from bg_platform.training.adapter import train_adapter

    root = tmp_path_factory.mktemp("serving")
    fingerprint = save(tiny_components_factory(), root / "base")
    cfg = smoke_params.adapter
    loop = replace(cfg.loop, steps=1, batch_size=2, warmup_steps=0, checkpoint_every=1, log_every=1)  # real, and cheap
    params = replace(smoke_params, adapter=replace(cfg, run_dir=str(root / "runs"), plots_dir=str(root / "plots"), loop=loop))
    adapters = {}
    for brand in smoke_params.synth.brands:
        adapters[brand] = train_adapter(params, brand, tiny_dataset, root / "base", root / "adapters" / brand,
                                        resume=False, progress=False).out_dir
    v2 = replace(params, adapter=replace(params.adapter, loop=replace(loop, seed=1)))
    adapters["aurora-v2"] = train_adapter(v2, "aurora", tiny_dataset, root / "base", root / "adapters" / "aurora-v2",
                                          resume=False, progress=False).out_dir
    registry = str(root / "registry")
    initial = {b: publish_adapter(registry, b, adapters[b], PASSED).version for b in smoke_params.synth.brands}
    return ServingArtifacts(root / "base", fingerprint, registry, adapters, initial)


@pytest.fixture(scope="session")
def bento_home(tmp_path_factory, serving_artifacts) -> Path:
    home = tmp_path_factory.mktemp("bentoml")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [str(BIN / "bgp"), "--params", str(ROOT / "params.yaml"), "serve-import-base", "--base", str(serving_artifacts.base)],
        env=env, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"fingerprint {serving_artifacts.fingerprint[:12]}" in proc.stdout
    return home


def start_bento_server(target: str, home: Path, registry: str, log: Path, *, cwd: Path = ROOT,
                       extra_env: dict | None = None, timeout: float = 180.0) -> BentoServer:
    """`bentoml serve <target>` (bg_platform.serving.launcher) with test settings; ready on return."""
    from bg_platform.serving.launcher import start_service

    env = {"BENTOML_HOME": str(home), "BGP_REGISTRY": registry, "BGP_POLL_INTERVAL_S": "0.3", "BGP_STEPS": "2",
           "BGP_MAX_RANK": "8", "BGP_SLOTS": "2", "BGP_CACHE_SIZE": "4", "BGP_WORK_DIR": str(log.parent / "adapters"),
           "BGP_MAX_UPLOAD_BYTES": "300000", "BGP_MAX_PIXELS": str(300 * 300), **(extra_env or {})}
    svc = start_service(env, log, target=target, cwd=cwd, admin_token="test-admin-token", timeout_s=timeout,
                        unset=("BGP_BASE_DIR",))  # the base comes from the model store, as in a Bento
    return BentoServer(svc.url, svc.admin_token, registry, log, svc.process)


def stop_server(proc: subprocess.Popen) -> None:
    from bg_platform.serving.launcher import RunningService

    RunningService("", "", Path(), proc).stop()


@pytest.fixture(scope="session")
def bg_service(tmp_path_factory, bento_home, serving_artifacts):
    """The dev-mode service (`bentoml serve bentos.bg_service.service:BgService` from the repo root)."""
    logs = tmp_path_factory.mktemp("bg-service")
    server = start_bento_server("bentos.bg_service.service:BgService", bento_home, serving_artifacts.registry,
                                logs / "server.log")
    try:
        yield server
    finally:
        stop_server(server.process)
