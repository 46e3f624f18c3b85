"""The DAGs end to end with real parts: `dag.test()` on a migrated SQLite metadata DB, a real Label
Studio server (references uploaded through the SDK), real `dvc add`/`dvc repro` in a temp git + DVC
repo, `bgp train-adapter`/`evaluate-adapter` subprocesses on the smoke profile, the adapter registry,
and the running BentoML service for the deploy path.

The tests of one module share one brand ("acme") and run in file order: candidate -> deployed ->
rerun (nothing redone) -> sync -> parallel pulls -> gate failure under a stricter gate ->
validation failure on empty masks; production must only ever move in the deploy test.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from airflow_fixtures import load_dag

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ONBOARD = "bg_onboard_brand"
GATE_OPEN = {"min_brand_accuracy": 0.0, "min_brand_gain": 0.0, "max_category_drop": 1.0}
GATE_IMPOSSIBLE = {"min_brand_accuracy": 1.0, "min_brand_gain": 1.0}  # = judge perfect with, blind without


def _states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances() if ti.map_index < 0}


def _summary(brand: str, run_id: str) -> dict:
    from bg_platform.orchestration.runs import RunContext, Settings

    path = RunContext(Settings.from_env(), brand, run_id).run_dir / "summary.json"
    assert path.exists(), f"no summary at {path}"
    return json.loads(path.read_text())


def onboard(**conf) -> tuple[object, dict]:
    dr = load_dag(ONBOARD).test(run_conf=conf)
    return dr, _summary(conf["brand"], dr.run_id)


def _registry(bg_repo):
    from bg_platform.registry import Registry

    return Registry(str(bg_repo.registry))


def _production(bg_repo, brand: str) -> str | None:
    return _registry(bg_repo).aliases(brand).get("production")


@pytest.fixture(scope="module")
def acme(airflow_home, bg_repo, ls_brand, ls_env):
    """Brand "acme": 8 annotated references in its own Label Studio project (2 are held out)."""
    return ls_brand("acme", 8, seed=1)


# ---------------------------------------------------------------------------------------------
# Happy path: candidate, then deployed through the service, then a rerun that redoes nothing


def test_onboarding_publishes_a_candidate_without_promoting(acme, bg_repo):
    dr, s = onboard(brand="acme", ls_project=acme.project_id, promote=False, **GATE_OPEN)
    assert dr.state == "success", s
    assert set(_states(dr).values()) == {"success"}
    assert s["ok"] and s["outcome"] == "published as candidate (not promoted)"
    assert (s["data"]["references"], s["data"]["train"], s["data"]["val"]) == (8, 6, 2)  # held-out split
    dep = s["deployment"]
    assert dep["action"] == "published" and not dep["promoted"] and dep["production"] is None
    assert _registry(bg_repo).aliases("acme") == {"candidate": dep["version"]}
    assert s["smoke"] == {} or "skipped" in s["smoke"]
    # the brand dataset is DVC-versioned in the repo (and pushed to its default remote)
    dvc_file = bg_repo.root / "data" / "brands" / "acme.dvc"
    assert dvc_file.exists() and s["data"]["dvc_md5"] in dvc_file.read_text()
    assert any((bg_repo.root.parent / f"{bg_repo.root.name}-store").rglob("*")), "dvc push to the remote"
    assert Path(s["adapter"]["adapter_dir"], "adapter.safetensors").exists() or any(
        Path(s["adapter"]["adapter_dir"]).glob("*.safetensors"))


def test_onboarding_deploys_to_the_running_service(acme, bg_repo, onboard_service):
    before = _registry(bg_repo).list_versions("acme")
    dr, s = onboard(brand="acme", ls_project=acme.project_id, **GATE_OPEN)
    assert dr.state == "success", s
    assert s["outcome"] == "deployed"
    version = s["deployment"]["version"]
    # same references, base and config: the candidate's adapter is re-used and promoted, not retrained
    assert s["adapter"]["reused"] and s["deployment"]["action"] == "reused, promoted"
    assert _registry(bg_repo).list_versions("acme") == before
    assert _production(bg_repo, "acme") == version
    assert s["smoke"]["adapter_version"] == version and s["smoke"]["brand"] == "acme"
    # an independent request: the service answers for the brand with the new version
    import httpx

    ref = bg_repo.root / "data" / "brands" / "acme" / "images"
    img = sorted(ref.glob("*.png"))[0]
    mask = img.parent.parent / "masks" / img.name
    r = httpx.post(f"{onboard_service.url}/generate", timeout=120, data={"brand": "acme", "category": "marble", "steps": "2",
                   "seed": "3"}, files={"image": img.read_bytes(), "mask": mask.read_bytes()})  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["adapter_version"] == version and body["brand"] == "acme"
    assert base64.b64decode(body["images"][0]).startswith(b"\x89PNG")


def test_rerun_on_the_same_data_redoes_nothing(acme, bg_repo, onboard_service):
    version = _production(bg_repo, "acme")
    n_versions = len(_registry(bg_repo).list_versions("acme"))
    dr, s = onboard(brand="acme", ls_project=acme.project_id, **GATE_OPEN)
    assert dr.state == "success", s
    assert s["adapter"]["reused"] and s["deployment"]["action"] == "reused"
    assert s["deployment"]["version"] == version == _production(bg_repo, "acme")
    assert len(_registry(bg_repo).list_versions("acme")) == n_versions
    assert s["smoke"]["adapter_version"] == version


# ---------------------------------------------------------------------------------------------
# Sync: only brands with new references, one onboarding run each, never twice


def test_sync_triggers_onboarding_only_for_brands_with_new_references(acme, ls_brand, bg_repo):
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    ls_brand("zenco", 3, project_id=acme.project_id, seed=2)  # a new brand in the same project
    sync = load_dag("bg_sync_label_studio")
    first = sync.test(run_conf={"ls_project": acme.project_id})
    assert first.state == "success"
    due = first.get_task_instance("due_brands").xcom_pull(task_ids="due_brands")
    assert [d["brand"] for d in due] == ["zenco"], due  # acme's references are those of its last run
    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == ONBOARD, DagRun.run_id.like("sync__%")).all()
        assert [(r.run_id.split("__")[1], r.conf) for r in runs] == [("zenco", {"brand": "zenco", "ls_project": acme.project_id})]
    second = sync.test(run_conf={"ls_project": acme.project_id})
    assert second.state == "success"
    assert {str(ti.state) for ti in second.get_task_instances() if ti.task_id == "onboard"} == {"skipped"}
    with create_session() as session:
        assert session.query(DagRun).filter(DagRun.dag_id == ONBOARD, DagRun.run_id.like("sync__%")).count() == 1


def test_two_brands_pull_and_version_at_once(acme, bg_repo):
    """What concurrent onboardings share (the project's pull folder, the DVC repo) is locked; the rest
    is per brand and run. Runs the first steps of two brands in two threads, without Airflow."""
    from concurrent.futures import ThreadPoolExecutor

    from bg_platform.data import manifest
    from bg_platform.orchestration import onboarding

    def first_steps(brand: str) -> dict:
        params, run_id = {"brand": brand, "ls_project": acme.project_id}, f"manual__parallel_{brand}"
        onboarding.start(params, run_id)
        onboarding.pull(params, run_id)
        return onboarding.prepare(params, run_id)

    with ThreadPoolExecutor(2) as pool:
        acme_ds, zenco_ds = pool.map(first_steps, ["acme", "zenco"])
    assert acme_ds["dataset_dir"] != zenco_ds["dataset_dir"] and acme_ds["dvc_md5"] != zenco_ds["dvc_md5"]
    for brand, ds, n in (("acme", acme_ds, 8), ("zenco", zenco_ds, 3)):
        assert set(manifest.read(ds["dataset_dir"])["brand"]) == {brand} and ds["references"] == n
        assert ds["dvc_md5"] in (bg_repo.root / "data" / "brands" / f"{brand}.dvc").read_text()
    ignored = (bg_repo.root / "data" / "brands" / ".gitignore").read_text().split()
    assert {"/acme", "/zenco"} <= set(ignored)  # both `dvc add`s recorded in the shared .gitignore


# ---------------------------------------------------------------------------------------------
# Unhappy paths: production never moves


def test_failed_gate_records_a_rejected_candidate_and_keeps_production(acme, bg_repo):
    production = _production(bg_repo, "acme")
    n_versions = len(_registry(bg_repo).list_versions("acme"))
    # the same references under a stricter gate: the adapter is re-used, the evaluation is redone
    dr, s = onboard(brand="acme", ls_project=acme.project_id, **GATE_IMPOSSIBLE)
    assert dr.state == "failed"
    states = _states(dr)
    assert states["evaluate"] == "success" and states["gate"] == "failed"
    assert states["reload"] == "upstream_failed" and states["summary"] == "failed"
    rejected = s["deployment"]["version"]
    assert rejected != production and s["outcome"].startswith("rejected by the gate")
    info = _registry(bg_repo).get("acme", rejected)
    assert info.rejected and info.reasons == tuple(s["gate"]["reasons"]) and s["gate"]["reasons"]
    assert _registry(bg_repo).aliases("acme") == {"candidate": rejected, "production": production}
    assert len(_registry(bg_repo).list_versions("acme")) == n_versions + 1
    assert "production is unchanged" in s["error"] and (production or "no production version") in s["error"]


def test_empty_masks_stop_at_validation_with_a_report(acme, ls_brand, bg_repo):
    production = _production(bg_repo, "acme")
    n_versions = len(_registry(bg_repo).list_versions("acme"))
    ls_brand("acme", 2, project_id=acme.project_id, empty_masks=2, seed=4)
    dr, s = onboard(brand="acme", ls_project=acme.project_id, **GATE_OPEN)
    assert dr.state == "failed"
    states = _states(dr)
    assert states["validate"] == "failed" and states["train"] == "upstream_failed"
    assert s["outcome"] == "stopped at validation: nothing trained" and s["steps"]["train"] == {"status": "not run"}
    report = dr.get_task_instance("validate").xcom_pull(task_ids="validate", key="validation_report")
    assert "coverage" in report and "empty mask" in report
    assert Path(s["validation_report"], "report.md").read_text() == report
    assert _production(bg_repo, "acme") == production
    assert len(_registry(bg_repo).list_versions("acme")) == n_versions


def test_too_few_references_stop_at_validation(ls_brand, bg_repo, acme):
    solo = ls_brand("solo", 2, seed=5)
    dr, s = onboard(brand="solo", ls_project=solo.project_id, min_references=3)
    assert dr.state == "failed" and _states(dr)["validate"] == "failed"
    report = dr.get_task_instance("validate").xcom_pull(task_ids="validate", key="validation_report")
    assert "brand has too few samples" in report and "'solo': 2 samples" in report
    assert "solo" not in _registry(bg_repo).list_brands()


def test_label_studio_down_is_retried_then_fails_clearly(acme, monkeypatch):
    from bg_platform.orchestration.labelstudio_server import free_port

    monkeypatch.setenv("BGP_LS_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("BGP_DAG_RETRIES", "1")
    monkeypatch.setenv("BGP_DAG_RETRY_DELAY_S", "0")
    dr = load_dag(ONBOARD).test(run_conf={"brand": "acme", "ls_project": acme.project_id})
    assert dr.state == "failed"
    pull = dr.get_task_instance("pull")
    assert str(pull.state) == "failed" and pull.try_number == 2  # retried once
    s = _summary("acme", dr.run_id)
    assert s["outcome"] == "failed at pull" and "cannot reach Label Studio" in s["error"]


# ---------------------------------------------------------------------------------------------
# Retraining the base: adapters of another base are re-onboarded


def test_retrain_base_reonboards_adapters_of_another_base(acme, bg_repo):
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    from bg_platform.orchestration.runs import RunContext, Settings

    reg = _registry(bg_repo)
    adapter = next((bg_repo.root / "runs" / "orchestration" / "brands" / "acme" / "adapters").glob("*/adapter"))
    old = reg.publish("oldco", adapter, base_fingerprint="f" * 64, data_hash="x", params={}, metrics={})
    reg.promote("oldco", old.version)
    brand_dir = RunContext(Settings.from_env(), "oldco", "x").brand_dir
    brand_dir.mkdir(parents=True, exist_ok=True)
    (brand_dir / "last_run.json").write_text(json.dumps({"ls_project": acme.project_id, "content_sha256": "0"}))

    dr = load_dag("bg_retrain_base").test(run_conf={"targets": ["train_base"]})
    assert dr.state == "success"
    repro = dr.get_task_instance("repro").xcom_pull(task_ids="repro")
    assert repro["stages_ran"] == [] and not repro["base_changed"]  # the base is up to date
    stale = dr.get_task_instance("stale_adapters").xcom_pull(task_ids="stale_adapters")
    assert [s["brand"] for s in stale] == ["oldco"]
    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == ONBOARD, DagRun.run_id.like("rebase__oldco__%")).one()
        assert run.conf == {"brand": "oldco", "ls_project": acme.project_id}
        assert run.run_id == f"rebase__oldco__{bg_repo.fingerprint[:12]}"

