"""Fixtures for the Airflow DAG tests (owner: orchestration), star-imported by
tests/integration/conftest.py (`__all__` = the fixtures; pytest 9 refuses `pytest_plugins` outside
the root conftest, and `tests` is not an importable package).

- `airflow_home`: a temp AIRFLOW_HOME with a migrated SQLite metadata DB, DAGS_FOLDER = this repo's
  dags/. Airflow reads its config once, at the first `import airflow`, so the AIRFLOW_* variables are
  set before that; when an earlier test already imported it, its config and ORM are re-pointed.
- `bg_repo`: a temp git + DVC repo with the smoke-profile pipeline reproduced by a real `dvc repro`
  (dataset, judges, Category-Wise base), a DVC remote, and the BGP_* variables pointing at it.
- `onboard_service`: the real BentoML service (`bentoml serve`, started by the serving tests'
  `start_bento_server`) on `bg_repo`'s base and registry, with BGP_SERVICE_URL / BGP_ADMIN_TOKEN set.
- `ls_brand(...)`: BG-Synth references of a brand style imported into a fresh Label Studio project
  with finished annotations (masks, categories) through the SDK.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

__all__ = ["airflow_home", "bg_repo", "ls_brand", "ls_env", "onboard_service"]
ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}  # fmt: skip


@contextlib.contextmanager
def _environ(values: dict[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) environment variables; the old values come back on exit."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in values.items():
            if v is None:
                mp.delenv(k, raising=False)
            else:
                mp.setenv(k, v)
        yield


def _run(cwd: Path, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


# =============================================================================================
# Airflow metadata DB


class AirflowHome(NamedTuple):
    home: Path
    dags: Path


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Iterator[AirflowHome]:
    home = tmp_path_factory.mktemp("airflow")
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "BGP_DAG_RETRIES": "0",  # pitfall 2: dag.test() waits out every retry_delay
        "BGP_DAG_RETRY_DELAY_S": "1",
    }
    with _environ(env):
        _run(ROOT, sys.executable, "-m", "airflow", "db", "migrate", timeout=300)
        if "airflow" in sys.modules:
            _reconfigure_airflow(env)  # an earlier test imported it with other settings
        yield AirflowHome(home, DAGS)


def _reconfigure_airflow(env: dict[str, str]) -> None:
    """Point an already imported Airflow at this home: its config is read once, at import."""
    from airflow import settings
    from airflow.configuration import conf

    conf.set("core", "dags_folder", env["AIRFLOW__CORE__DAGS_FOLDER"])
    conf.set("core", "load_examples", "False")
    conf.set("database", "sql_alchemy_conn", env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    settings.AIRFLOW_HOME = env["AIRFLOW_HOME"]
    settings.DAGS_FOLDER = env["AIRFLOW__CORE__DAGS_FOLDER"]
    settings.SQL_ALCHEMY_CONN = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    settings.configure_orm()


def load_dag(dag_id: str):
    """A freshly parsed DAG (the BGP_DAG_* variables are read at parse time)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags[dag_id]


# =============================================================================================
# The project repo: git + DVC, smoke-profile pipeline reproduced


class BgRepo(NamedTuple):
    root: Path
    registry: Path
    base_dir: Path
    categories: tuple[str, ...]
    fingerprint: str


def write_params(repo: Path) -> None:
    from bg_platform.config import deep_merge

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = deep_merge(params, yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text()))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="session")
def bg_repo(tmp_path_factory, request) -> Iterator[BgRepo]:
    """~60 s: a real `dvc repro` of dataset -> validate -> judges + base (smoke profile). When the
    test also needs Label Studio, its server starts while `dvc repro` runs (both take about a minute)."""
    import json

    repo = tmp_path_factory.mktemp("bg-repo")
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    # the stages depend on the source folders (a code change re-runs them)
    shutil.copytree(ROOT / "bg_platform", repo / "bg_platform", ignore=shutil.ignore_patterns("__pycache__"))
    write_params(repo)
    (repo / ".gitignore").write_text("/runs/\n/registry/\n")
    _run(repo, "git", "init", "-q")
    _run(repo, "git", "config", "user.email", "t@example.com")
    _run(repo, "git", "config", "user.name", "t")
    _run(repo, sys.executable, "-m", "dvc", "init", "-q")
    _run(repo, sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(repo.parent / f"{repo.name}-store"))
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "init")
    # only what onboarding needs: the adapter stages of dvc.yaml would train the synth brands too
    log_path = repo.parent / f"{repo.name}-repro.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "train_judges", "train_base"], cwd=repo,
                                env=_env(), stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            if "labelstudio" in request.fixturenames:
                request.getfixturevalue("labelstudio")
            rc = proc.wait(timeout=1800)
        finally:
            if proc.poll() is None:
                proc.kill()
    if rc != 0:
        raise AssertionError(f"dvc repro failed ({rc}):\n{log_path.read_text()[-4000:]}")
    meta = json.loads((repo / "models" / "base" / "bg_platform.json").read_text())
    # Session-wide (the base is trained once): set only what the DAGs read and *unset* the
    # overrides, so later test modules' `bgp` subprocesses see an ordinary environment.
    env = {"BGP_REPO": str(repo), "BGP_RUNS_DIR": str(repo / "runs" / "orchestration"),
           "BGP_PARAMS": None, "BGP_PROFILES": None, "BGP_BRAND_DATA_DIR": None}  # fmt: skip
    with _environ(env):
        yield BgRepo(repo, repo / "registry", repo / "models" / "base", tuple(meta["categories"]), meta["fingerprint"])


# =============================================================================================
# The service, on bg_repo's base and registry


@pytest.fixture(scope="module")
def onboard_service(bg_repo, tmp_path_factory):
    from service_fixtures import start_bento_server, stop_server

    home = tmp_path_factory.mktemp("bentoml-onboard")
    env = {**_env(), "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    proc = subprocess.run([sys.executable, "-m", "bg_platform", "--params", str(bg_repo.root / "params.yaml"),
                           "serve-import-base", "--base", str(bg_repo.base_dir)],
                          cwd=bg_repo.root, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    bg_repo.registry.mkdir(exist_ok=True)
    server = start_bento_server("bentos.bg_service.service:BgService", home, str(bg_repo.registry),
                                home / "server.log")  # fmt: skip
    try:
        with _environ({"BGP_SERVICE_URL": server.url, "BGP_ADMIN_TOKEN": server.token}):
            yield server
    finally:
        stop_server(server.process)


# =============================================================================================
# Label Studio: brand references through the SDK


class LsBrand(NamedTuple):
    project_id: int
    brand: str
    names: list[str]


def render_references(out: Path, brand: str, n: int, *, style: str = "aurora", empty_masks: int = 0,
                      seed: int = 0, size: int = 64) -> Path:  # fmt: skip
    """`n` BG-Synth references in `style`'s brand look (its categories), as a manifest dataset of
    brand `brand`; the first `empty_masks` get an all-zero mask (nothing marked)."""
    import numpy as np

    from bg_platform.config import SynthConfig
    from bg_platform.data import imageio, manifest
    from bg_platform.data.synth import generator

    cfg = SynthConfig(seed=seed, image_size=size, brands=(style,), samples_per_brand=n, samples_per_category=1,
                      products=24, workers=1)  # fmt: skip
    specs = [s for s in generator.plan(cfg) if s.brand == style][:n]
    rows = []
    for i, spec in enumerate(specs):
        img, mask = generator.render_sample(spec, size)
        if i < empty_masks:
            mask = np.zeros_like(mask)
        name = f"{brand}-{seed}-{i:03d}"
        data = imageio.write_png(out / "images" / f"{name}.png", img)
        imageio.write_png(out / "masks" / f"{name}.png", mask)
        rows.append(manifest.Sample(name, f"images/{name}.png", f"masks/{name}.png", spec.category, brand,
                                    f"{style} look", "train", size, size, imageio.sha256_bytes(data)))  # fmt: skip
    manifest.write(manifest.to_frame(rows), out)
    return out


@pytest.fixture(scope="module")
def ls_brand(labelstudio, bg_repo, tmp_path_factory) -> Callable[..., LsBrand]:
    """ls_brand(brand, n, empty_masks=0, project_id=None, seed=0) -> references of `brand` imported
    with finished annotations into a new project (or into `project_id`)."""
    from bg_platform.data import labelstudio as ls

    client = ls.connect(labelstudio.url, labelstudio.token)
    tmp = tmp_path_factory.mktemp("ls-refs")

    def make(brand: str, n: int, *, empty_masks: int = 0, project_id: int | None = None, seed: int = 0) -> LsBrand:
        if project_id is None:
            title = f"refs-{brand}-{uuid.uuid4().hex[:6]}"
            project_id = ls.setup_project(client, title, bg_repo.categories, labelstudio.files_root).project_id
        src = render_references(tmp / f"{brand}-{seed}-{uuid.uuid4().hex[:6]}", brand, n, empty_masks=empty_masks,
                                seed=seed)  # fmt: skip
        res = ls.import_references(client, project_id, src, brand, labelstudio.files_root, masks="annotations")
        assert len(res.task_ids) == n, res
        return LsBrand(project_id, brand, [p.stem for p in sorted((src / "images").glob("*.png"))])

    return make


@pytest.fixture(scope="module")
def ls_env(labelstudio) -> Iterator[None]:
    """BGP_LS_URL / BGP_LS_TOKEN of the test server, for the DAG's tasks."""
    with _environ({"BGP_LS_URL": labelstudio.url, "BGP_LS_TOKEN": labelstudio.token}):
        yield


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
