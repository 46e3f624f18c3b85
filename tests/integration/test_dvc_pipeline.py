"""Real `dvc repro` of the whole pipeline on the smoke profile, in a fresh git + DVC repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bg_platform.config import deep_merge

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(DVC_NO_ANALYTICS="1", GX_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    return env


def run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "dvc", *args, check=check)


def write_params(repo: Path, **overrides) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = deep_merge(params, yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text()))
    params = deep_merge(params, overrides)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("pipeline")
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copytree(ROOT / "bg_platform", repo / "bg_platform", ignore=shutil.ignore_patterns("__pycache__"))
    write_params(repo)
    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.email", "t@example.com")
    run(repo, "git", "config", "user.name", "t")
    dvc(repo, "init", "-q")
    dvc(repo, "remote", "add", "-d", "local", str(repo.parent / f"{repo.name}-store"))
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "init")
    return repo


def ran_stages(proc: subprocess.CompletedProcess) -> set[str]:
    out = proc.stdout + proc.stderr
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}


def test_repro_runs_every_stage_then_nothing(repo):
    first = dvc(repo, "repro")
    adapters = {f"{s}@{b}" for s in ("train_adapter", "evaluate_adapter") for b in ("aurora", "kinetic", "verdant")}
    assert ran_stages(first) == {"dataset", "validate", "train_judges", "train_base", "evaluate_base"} | adapters
    for path in ["data/dataset/manifest.parquet", "reports/dataset/contact_sheet.png", "models/base/model_index.json",
                 "models/judges/category/judge.safetensors", "reports/base/samples.png", "plots/base/loss.png"]:
        assert (repo / path).exists(), path
    metrics = json.loads((repo / "metrics/base.json").read_text())
    assert metrics["product_preservation"] == 1.0
    for brand in ("aurora", "kinetic", "verdant"):
        assert (repo / f"models/adapters/{brand}/adapter.safetensors").exists()
        assert "gate" in json.loads((repo / f"metrics/adapters/{brand}.json").read_text())
        assert list((repo / "registry" / brand / "versions").iterdir()), "published to the local registry"
    second = dvc(repo, "repro")
    assert ran_stages(second) == set()
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    assert "metrics/base.json" in json.dumps(shown)


def test_changing_one_section_reruns_only_its_dependants(repo):
    write_params(repo, evaluate_base={"grid_seeds": 1})
    assert ran_stages(dvc(repo, "repro")) == {"evaluate_base"}
    write_params(repo, evaluate_base={"grid_seeds": 1}, adapter={"rank": 2})
    assert ran_stages(dvc(repo, "repro")) == {f"{s}@{b}" for s in ("train_adapter", "evaluate_adapter")
                                              for b in ("aurora", "kinetic", "verdant")}


def test_push_and_pull_with_the_default_remote(repo):
    dvc(repo, "push")
    shutil.rmtree(repo / "models" / "base")
    dvc(repo, "pull", "train_base")
    assert (repo / "models/base/model_index.json").exists()


def test_bad_data_stops_the_pipeline_at_validation(repo):
    write_params(repo, evaluate_base={"grid_seeds": 1}, adapter={"rank": 2}, validate={"min_per_category": 10_000})
    proc = dvc(repo, "repro", check=False)
    assert proc.returncode != 0
    assert "min_per_category" in proc.stdout + proc.stderr or "too few" in (proc.stdout + proc.stderr).lower()
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (repo / "reports/validation/passed.json").exists()
    assert ran_stages(proc) == {"validate"}
