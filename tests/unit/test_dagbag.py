"""The DAG files: they import without errors, fast, without heavy libraries, with tags, retries and
timeouts set. Parsed in a subprocess with a temp AIRFLOW_HOME: Airflow fixes its config at the first
import, and a clean interpreter is the only honest `sys.modules` check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_IDS = {"bg_onboard_brand", "bg_sync_label_studio", "bg_retrain_base"}
HEAVY = ("torch", "diffusers", "transformers", "great_expectations", "label_studio_sdk", "dvc", "pandas", "bentoml")

PARSE = r"""
import json, sys, time
t0 = time.perf_counter()
import airflow.sdk  # noqa: F401  (Airflow itself is not what we time)
from airflow.dag_processing.dagbag import DagBag
t_airflow = time.perf_counter() - t0
t1 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
t_parse = time.perf_counter() - t1
out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "airflow_s": t_airflow, "parse_s": t_parse,
       "files": {str(s.file): s.duration.total_seconds() for s in bag.dagbag_stats},
       "heavy": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY), "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "tags": sorted(dag.tags), "schedule": str(dag.schedule), "params": sorted(dag.params.keys()),
        "max_active_runs": dag.max_active_runs, "catchup": dag.catchup, "fileloc": dag.fileloc,
        "tasks": {t.task_id: {"retries": t.retries, "timeout": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                              "policy": type(t.retry_policy).__name__ if getattr(t, "retry_policy", None) else None,
                              "trigger_rule": str(getattr(t.trigger_rule, "value", t.trigger_rule))} for t in dag.tasks},
    }
print("RESULT" + json.dumps(out))
"""


def _parse(tmp_path: Path, **env_extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BGP_"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"), AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path / 'airflow.db'}", **env_extra,
    )  # fmt: skip
    code = f"HEAVY = {HEAVY!r}\n" + PARSE
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "dags")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, f"parse failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT") :])


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    return _parse(tmp_path_factory.mktemp("dagbag"))


def test_dags_import_without_errors(parsed):
    assert parsed["import_errors"] == {}
    assert set(parsed["dags"]) == DAG_IDS
    for dag_id, d in parsed["dags"].items():
        assert Path(d["fileloc"]).name == f"{dag_id}.py", "one DAG per file, named after its id"


def test_dag_files_are_thin_and_fast(parsed):
    assert parsed["heavy"] == [], f"DAG files imported heavy modules at parse time: {parsed['heavy'][:20]}"
    slow = {Path(f).name: round(s, 2) for f, s in parsed["files"].items() if s >= 2.0}
    assert not slow, f"DAG files must parse in < 2 s: {slow}"
    assert parsed["parse_s"] < 6.0, parsed


def test_tags_retries_timeouts(parsed):
    for dag_id, d in parsed["dags"].items():
        assert "bg" in d["tags"] and len(d["tags"]) >= 2, (dag_id, d["tags"])
        assert d["catchup"] is False
        for task_id, t in d["tasks"].items():
            # the default of BGP_DAG_RETRIES; the summary only reports, a retry would not change it
            assert t["retries"] == (0 if task_id == "summary" else 2), (dag_id, task_id, t)
            assert t["timeout"] and t["timeout"] > 0, (dag_id, task_id, "every task needs an execution_timeout")
            assert t["policy"] == "ExceptionRetryPolicy", (dag_id, task_id, "permanent errors must not be retried")
    onboard = parsed["dags"]["bg_onboard_brand"]
    assert list(onboard["tasks"]) == ["start", "pull", "prepare", "validate", "train", "evaluate", "gate", "reload",
                                      "smoke", "summary"]  # fmt: skip
    assert onboard["tasks"]["summary"]["trigger_rule"] == "all_done"
    assert onboard["tasks"]["train"]["timeout"] >= 3600
    assert onboard["schedule"] == "None"
    assert parsed["dags"]["bg_sync_label_studio"]["schedule"] != "None"


def test_retries_come_from_the_environment(tmp_path):
    parsed = _parse(tmp_path, BGP_DAG_RETRIES="0", BGP_SYNC_SCHEDULE="none")
    for d in parsed["dags"].values():
        assert {t["retries"] for t in d["tasks"].values()} == {0}
    assert parsed["dags"]["bg_sync_label_studio"]["schedule"] == "None"


def test_onboarding_form(parsed):
    assert parsed["dags"]["bg_onboard_brand"]["params"] == sorted([
        "brand", "ls_project", "categories", "min_references", "min_per_category", "min_brand_accuracy",
        "max_category_drop", "min_brand_gain", "promote", "smoke_steps",
    ])  # fmt: skip


def test_brand_pattern_matches_the_config():
    from bg_platform.config import BRAND_PATTERN
    from bg_platform.orchestration import dag_settings

    assert dag_settings.BRAND_PATTERN == BRAND_PATTERN


def test_onboarding_conf_reports_every_problem():
    from bg_platform.orchestration.onboarding import OnboardConf
    from bg_platform.orchestration.runs import StopRun

    with pytest.raises(StopRun) as err:
        OnboardConf.from_params({"brand": "Bad Brand", "ls_project": None, "min_references": 0,
                                 "min_brand_accuracy": 1.5}, env={})  # fmt: skip
    msg = str(err.value)
    for field in ("brand: 'Bad Brand'", "ls_project", "min_references: 0", "min_brand_accuracy: 1.5"):
        assert field in msg, msg
    conf = OnboardConf.from_params({"brand": "acme", "ls_project": None, "min_brand_gain": 0.2},
                                   env={"BGP_LS_PROJECT": "7"})  # fmt: skip
    assert conf.ls_project == 7 and conf.gate == {"min_brand_gain": 0.2} and conf.min_references == 3


def test_holdout_split_is_deterministic_and_keeps_enough_training_references():
    from bg_platform.orchestration.brand_data import holdout_ids

    ids = [f"ls1-{i}" for i in range(12)]
    val = holdout_ids("acme", ids, min_train=3)
    assert len(val) == 3 and val == holdout_ids("acme", list(reversed(ids)), min_train=3)
    assert holdout_ids("acme", ids[:7], min_train=3) == set()  # < 8 references: all train
    assert len(holdout_ids("acme", ids[:8], min_train=7)) == 1  # never below min_train
    grown = holdout_ids("acme", [*ids, "ls1-99"], min_train=3)
    assert len(val - grown) <= 1  # one more reference moves at most one


def test_run_folders_are_keyed_on_the_run_id(tmp_path):
    from bg_platform.orchestration.runs import RunContext, Settings, safe_name

    (tmp_path / "params.yaml").write_text("{}\n")
    s = Settings.from_env({"BGP_REPO": str(tmp_path)})
    a = RunContext(s, "acme", "manual__2026-01-01T00:00:00+00:00")
    b = RunContext(s, "zenith", "manual__2026-01-01T00:00:00+00:00")
    assert a.run_dir != b.run_dir and a.run_dir.name == safe_name(a.run_id) == "manual__2026-01-01T00_00_00_00_00"
    assert s.brand_data_dir == tmp_path / "data" / "brands" and s.work_dir == tmp_path / "runs" / "orchestration"


# ---------------------------------------------------------------------------------------------
# Deployment files (docker/compose.yaml, Dockerfiles, scripts/dev_services.sh)

COMPOSE = ROOT / "docker" / "compose.yaml"


def _compose_env() -> dict[str, str]:
    # the secrets compose requires (`${VAR:?...}`), from the template
    env = dict(os.environ)
    for line in (ROOT / "docker" / ".env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env.setdefault(key, value or "x")
    return env


def test_docker_compose_config_is_valid(tmp_path):
    import shutil

    if shutil.which("docker") is None:
        pytest.skip("no docker CLI")
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"docker CLI without the compose plugin: {probe.stderr.strip()[:200]}")
    proc = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--format", "json"],
                          capture_output=True, text=True, env=_compose_env(), timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout)
    assert {"airflow-scheduler", "airflow-apiserver", "labelstudio", "service"} <= set(cfg["services"])


def test_compose_wiring():
    """What `docker compose config` cannot check: shared volumes, build files, the env the steps read."""
    import yaml

    cfg = yaml.safe_load(COMPOSE.read_text())
    services, volumes = cfg["services"], set(cfg["volumes"])
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            assert (COMPOSE.parent / build["context"] / build["dockerfile"]).exists(), (name, build)
        for v in svc.get("volumes", []):
            assert v.split(":")[0] in volumes, (name, v)
    mounts = {name: {v.split(":")[0]: v.split(":")[1] for v in svc.get("volumes", [])} for name, svc in services.items()}
    airflow = [n for n in services if n.startswith("airflow-")]
    for name in airflow:
        assert mounts[name]["registry"] == services[name]["environment"]["BGP_REGISTRY"] == "/registry"
        assert mounts[name]["dvc-remote"] == services[name]["environment"]["BGP_DVC_REMOTE"]
        assert mounts[name]["workspace"] == services[name]["environment"]["BGP_REPO"]
    assert mounts["service"]["registry"] == services["service"]["environment"]["BGP_REGISTRY"]
    assert mounts["labelstudio"]["ls-files"] == mounts["airflow-scheduler"]["ls-files"]  # same path in both
    env = services["airflow-scheduler"]["environment"]
    assert '"host": "labelstudio"' in env["AIRFLOW_CONN_LABEL_STUDIO"] and '"host": "service"' in env["AIRFLOW_CONN_BG_SERVICE"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:")


def test_dev_services_script_is_valid_bash():
    script = ROOT / "scripts" / "dev_services.sh"
    assert os.access(script, os.X_OK)
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
