"""Brand onboarding, one function per DAG task: start -> pull -> prepare -> validate -> train ->
evaluate -> gate -> reload -> smoke -> summary.

Each function takes the run's params (the `bg_onboard_brand` form) and run id, does one step,
records it under the run folder (runs.RunContext) and returns a small JSON-able dict (the task's
XCom). Nothing here imports Airflow, so a shell or a test can run the same steps in order.

Idempotence: the run folder is keyed on the run id; training and evaluation are keyed on their
inputs (dataset DVC md5, base fingerprint, config), so a rerun on the same data reuses the adapter
and its metrics, and publishing an adapter whose files are already in the registry reuses that
version instead of uploading a duplicate.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bg_platform.config import BRAND_PATTERN
from bg_platform.orchestration import adapter_jobs, brand_data
from bg_platform.orchestration.runs import (
    STEPS,
    OrchestrationError,
    RunContext,
    Settings,
    StopRun,
)

log = logging.getLogger(__name__)

TRAIN_TIMEOUT_S = 6 * 3600.0
EVAL_TIMEOUT_S = 2 * 3600.0
GATE_KEYS = ("min_brand_accuracy", "max_category_drop", "min_brand_gain")


class GateFailed(StopRun):
    pass


# ---------------------------------------------------------------------------------------------
# The run's configuration (the trigger form)


@dataclass(frozen=True)
class OnboardConf:
    brand: str
    ls_project: int
    categories: tuple[str, ...] = ()  # empty: any category of the base
    min_references: int = 3
    min_per_category: int = 1
    gate: dict[str, float] = field(default_factory=dict)  # only the thresholds the form set
    promote: bool = True
    smoke_steps: int = 4

    @classmethod
    def from_params(cls, params: Mapping[str, Any], env: Mapping[str, str] | None = None) -> OnboardConf:
        """Check the form's values (all problems at once); `ls_project` falls back to BGP_LS_PROJECT."""
        import os

        env = os.environ if env is None else env
        p, problems = dict(params or {}), []
        brand = p.get("brand")
        if not isinstance(brand, str) or not re.match(BRAND_PATTERN, brand):
            problems.append(f"brand: {brand!r} does not match {BRAND_PATTERN} (lower-case letters, digits, '_' or '-')")
        try:
            project = resolve_project(p.get("ls_project"), env)
        except StopRun as exc:
            problems.append(str(exc))
        cats = p.get("categories") or ()
        if isinstance(cats, str):
            cats = [c.strip() for c in cats.split(",") if c.strip()]
        ints = {}
        for key, default, low in (("min_references", 3, 1), ("min_per_category", 1, 1), ("smoke_steps", 4, 1)):
            value = p.get(key, default)
            value = default if value is None else value
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                problems.append(f"{key}: {value!r}; give an integer >= {low}")
            ints[key] = value
        gate = {}
        for key in GATE_KEYS:
            value = p.get(key)
            if value is None:
                continue
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
                problems.append(f"{key}: {value!r}; give a number from 0 to 1, or leave it empty for params.yaml's")
            gate[key] = float(value)
        if problems:
            raise StopRun("bg_onboard_brand params: " + "; ".join(problems))
        return cls(brand=brand, ls_project=project, categories=tuple(cats), gate=gate,
                   promote=bool(p.get("promote", True)), **ints)  # fmt: skip


def resolve_project(value: Any, env: Mapping[str, str] | None = None) -> int:
    """The Label Studio project id: the given value, else BGP_LS_PROJECT."""
    import os

    env = os.environ if env is None else env
    raw = env.get("BGP_LS_PROJECT") if value in (None, "") else value
    try:
        project = int(raw)
    except (TypeError, ValueError):
        project = 0
    if project < 1 or isinstance(raw, bool):
        raise StopRun(
            f"ls_project: {value!r} (BGP_LS_PROJECT={env.get('BGP_LS_PROJECT')!r}); give the Label Studio project id "
            f"(the number in its URL), or set BGP_LS_PROJECT"
        )
    return project


def _context(params: Mapping[str, Any], run_id: str) -> tuple[Settings, OnboardConf, RunContext]:
    settings = Settings.from_env()
    conf = OnboardConf.from_params(params)
    return settings, conf, RunContext(settings, conf.brand, run_id)


# ---------------------------------------------------------------------------------------------
# Inputs every step needs


@dataclass(frozen=True)
class BaseModel:
    dir: Path
    fingerprint: str
    categories: tuple[str, ...]


def base_model(settings: Settings, params) -> BaseModel:
    """The Category-Wise base adapters are trained over (read from its bg_platform.json: no torch)."""
    d = settings.path(params.train_base.out_dir)
    meta = d / "bg_platform.json"
    if not meta.exists():
        raise StopRun(
            f"no trained base at {d} (train_base.out_dir): run `dvc repro train_base` (or the bg_retrain_base DAG), "
            f"or `dvc pull {params.train_base.out_dir}`"
        )
    data = json.loads(meta.read_text())
    if not data.get("fingerprint"):
        raise StopRun(f"{meta} has no fingerprint; the base was not saved by `bgp train-base`: retrain it")
    return BaseModel(d, data["fingerprint"], tuple(data.get("categories") or ()))


def _inputs(settings: Settings, params) -> dict[str, Path]:
    paths = {
        "judges": settings.path(params.judges.out_dir),
        "products": settings.path(params.dataset.dir),
    }
    missing = {
        "judges": (paths["judges"] / "category" / "judge.json", "dvc repro train_judges"),
        "products": (paths["products"] / "manifest.parquet", "dvc repro dataset"),
    }
    for name, (probe, fix) in missing.items():
        if not probe.exists():
            raise StopRun(f"{name}: {probe} is missing; run `{fix}` (or `dvc pull`) in {settings.repo}")
    return paths


def _overlay(conf: OnboardConf, params) -> dict[str, Any]:
    """What this run changes in params.yaml (written as a profile for the `bgp` subprocesses)."""
    cfg = params.adapter
    if conf.min_references > cfg.max_references:
        raise StopRun(
            f"min_references: {conf.min_references} exceeds adapter.max_references ({cfg.max_references}) in "
            f"params.yaml; lower it or raise adapter.max_references"
        )
    adapter = {"min_references": conf.min_references, "references": max(cfg.references, conf.min_references)}
    out: dict[str, Any] = {"adapter": adapter}
    if conf.gate:
        out["evaluate_adapter"] = {"gate": dict(conf.gate)}
    return out


# ---------------------------------------------------------------------------------------------
# Steps


def start(params: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """Check the form, the settings and the inputs before anything runs; record the plan."""
    settings, conf, run = _context(params, run_id)
    with run.step("start") as rec:
        p = settings.load_params()
        base = base_model(settings, p)
        inputs = _inputs(settings, p)
        unknown = [c for c in conf.categories if c not in base.categories]
        if unknown:
            raise StopRun(f"categories: {unknown} are not categories of the base ({', '.join(base.categories)}); "
                          f"pick from those, or retrain the base with them")  # fmt: skip
        overlay = _overlay(conf, p)
        rec.result = {
            "brand": conf.brand, "run_id": run_id, "run_dir": str(run.run_dir), "conf": asdict(conf),
            "settings": {k: str(v) for k, v in asdict(settings).items()},
            "base": {"dir": str(base.dir), "fingerprint": base.fingerprint, "categories": list(base.categories)},
            "inputs": {k: str(v) for k, v in inputs.items()}, "registry": settings.registry_root(p),
            "overlay": overlay,
        }  # fmt: skip
    log.info("onboarding %s (run %s) in %s", conf.brand, run_id, run.run_dir)
    return run.result("start")


def pull(params: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    settings, conf, run = _context(params, run_id)
    with run.step("pull") as rec:
        rec.result = brand_data.pull_brand(settings, conf.ls_project, conf.brand, run.run_dir / "pulled")
    res = run.result("pull")
    log.info("pulled %d references of %s from project %s (%s)", res["references"], conf.brand, conf.ls_project,
             res["categories"])  # fmt: skip
    return _brief(res, drop=("bad_annotations",)) | {"bad_annotations": len(res["bad_annotations"])}


def prepare(params: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """Held-out split, then the DVC version of the brand dataset."""
    settings, conf, run = _context(params, run_id)
    with run.step("prepare") as rec:
        pulled = Path(run.result("pull")["pulled_dir"])
        ds = brand_data.prepare_dataset(conf.brand, pulled, run.run_dir / "dataset", conf.min_references)
        rec.result = ds | brand_data.version_brand_dataset(settings, conf.brand, Path(ds["dataset_dir"]))
    return run.result("prepare")


def validate(params: Mapping[str, Any], run_id: str, report_to: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
    """Great Expectations with brand rules. On failure the report goes to `report_to(key, value)`
    (the DAG passes `ti.xcom_push`) and the log, and the run stops: nothing is trained."""
    settings, conf, run = _context(params, run_id)
    report_dir = run.run_dir / "validation"
    try:
        with run.step("validate") as rec:
            rec.details["report_dir"] = str(report_dir)
            plan = run.result("start")
            rules = brand_data.BrandRules(
                known_categories=tuple(conf.categories) or tuple(plan["base"]["categories"]),
                min_references=conf.min_references, min_per_category=conf.min_per_category,
            )  # fmt: skip
            ds = Path(run.result("prepare")["dataset_dir"])
            rec.result = brand_data.validate_brand_dataset(settings.load_params(), ds, rules, report_dir)
    except brand_data.BrandValidationFailed as exc:
        log.error("validation of brand %s FAILED; nothing will be trained.\n%s", conf.brand, exc.report)
        bad = run.result("pull").get("bad_annotations") or []
        if bad:
            log.error("Label Studio annotations of %s with problems:\n%s", conf.brand,
                      "\n".join(f"  task {b['task_id']}: {b['reason']}" for b in bad))  # fmt: skip
        if report_to is not None:
            report_to("validation_report", exc.report)
            report_to("validation_report_path", str(exc.report_dir / "report.md"))
        raise
    res = run.result("validate")
    if report_to is not None:
        report_to("validation_report_path", res["report"])
    return {"summary": res["summary"], "report": res["report"]}


def train(params: Mapping[str, Any], run_id: str, timeout: float = TRAIN_TIMEOUT_S) -> dict[str, Any]:
    """`bgp train-adapter` in a folder keyed on (data version, base, adapter config): a rerun on the
    same data reuses the adapter; a retry after a crash resumes from its checkpoints."""
    settings, conf, run = _context(params, run_id)
    with run.step("train") as rec:
        plan, prep = run.result("start"), run.result("prepare")
        rec.result = adapter_jobs.train_keyed(
            settings, run.brand_dir, conf.brand, dataset_dir=prep["dataset_dir"], base_dir=plan["base"]["dir"],
            data_version=prep["dvc_md5"], base_fingerprint=plan["base"]["fingerprint"],
            overlay=_overlay(conf, settings.load_params()), run_id=run_id, timeout=timeout, details=rec.details,
        )  # fmt: skip
    res = run.result("train")
    log.info("adapter %s: %s (%s)", conf.brand, res["adapter_dir"], "reused, same data/base/config" if res["reused"] else "trained")
    return res


def evaluate(params: Mapping[str, Any], run_id: str, timeout: float = EVAL_TIMEOUT_S) -> dict[str, Any]:
    """`bgp evaluate-adapter` (with vs without the adapter, the gate with this run's thresholds),
    keyed on the adapter's files, the held-out data, the judges and the evaluation config."""
    settings, conf, run = _context(params, run_id)
    with run.step("evaluate") as rec:
        plan, prep, trained = run.result("start"), run.result("prepare"), run.result("train")
        overlay = adapter_jobs.write_overlay(run.run_dir / "overlay.yaml", _overlay(conf, settings.load_params()))
        rec.result = adapter_jobs.evaluate_keyed(
            settings, run.brand_dir, conf.brand, adapter_dir=trained["adapter_dir"], dataset_dir=prep["dataset_dir"],
            base_dir=plan["base"]["dir"], products=Path(plan["inputs"]["products"]), judges=Path(plan["inputs"]["judges"]),
            data_version=prep["dvc_md5"], base_fingerprint=plan["base"]["fingerprint"], overlay_path=overlay,
            timeout=timeout, details=rec.details,
        )  # fmt: skip
    res = run.result("evaluate")
    log.info("evaluation of %s: gate %s %s", conf.brand, "PASS" if res["gate"]["passed"] else "FAIL",
             "; ".join(res["gate"]["reasons"]))  # fmt: skip
    return res


def gate(params: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """Publish the adapter: promoted when the gate passed; recorded as rejected (production
    untouched) when it failed, and then the run stops here."""
    settings, conf, run = _context(params, run_id)
    with run.step("gate") as rec:
        plan, trained, ev = run.result("start"), run.result("train"), run.result("evaluate")
        metrics = json.loads(Path(ev["metrics_path"]).read_text())
        dep = adapter_jobs.publish(plan["registry"], conf.brand, Path(trained["adapter_dir"]), metrics,
                                   promote=conf.promote)
        rec.result = dep
        rec.details.update(dep)
        if not metrics["gate"]["passed"]:
            prod = dep["production"] or "no production version"
            raise GateFailed(
                f"gate failed for brand {conf.brand}: {'; '.join(metrics['gate']['reasons'])}. Candidate "
                f"{dep['version']} is recorded as rejected in {plan['registry']}; production is unchanged ({prod}). "
                f"Metrics: {ev['metrics_path']}; samples: {ev['samples']}"
            )
    return run.result("gate")


def reload(params: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """Tell the service to pick up the new production adapter; it must answer with that version."""
    from bg_platform.orchestration import service

    settings, conf, run = _context(params, run_id)
    with run.step("reload") as rec:
        dep = run.result("gate")
        if not dep["promoted"]:
            rec.result = {"skipped": f"{conf.brand}/{dep['version']} was not promoted (promote=false): nothing to reload"}
        else:
            svc = service.resolve()
            body = service.reload(svc, conf.brand, dep["version"])
            rec.result = {"service": svc.url, "version": dep["version"], "brands": body.get("brands"),
                          "refused": body.get("refused")}  # fmt: skip
    return run.result("reload")


def smoke(params: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """Generate once through HTTP for the brand, on a held-out reference when there is one."""
    from bg_platform.data import manifest
    from bg_platform.orchestration import service

    settings, conf, run = _context(params, run_id)
    with run.step("smoke") as rec:
        dep, plan = run.result("gate"), run.result("start")
        if not dep["promoted"]:
            rec.result = {"skipped": f"{conf.brand}/{dep['version']} was not promoted: the service does not serve it"}
        else:
            ds = Path(run.result("prepare")["dataset_dir"])
            frame = manifest.read(ds).sort_values(["split", "id"], ascending=[False, True])  # val before train
            row = frame.iloc[0]
            rec.result = service.smoke(
                service.resolve(), conf.brand, dep["version"], (ds / row["image"]).read_bytes(),
                (ds / row["mask"]).read_bytes(), row["category"], steps=conf.smoke_steps,
                base_fingerprint=plan["base"]["fingerprint"],
            ) | {"reference": row["id"]}  # fmt: skip
    return run.result("smoke")


# ---------------------------------------------------------------------------------------------
# Summary


def summary(params: Mapping[str, Any], run_id: str) -> tuple[dict[str, Any], bool]:
    """(summary, ok): every step's outcome, written to `<run_dir>/summary.json` and logged; also
    the brand's last-run record the sync DAG reads. Runs even when a step failed."""
    settings = Settings.from_env()
    brand = str((params or {}).get("brand"))
    run = RunContext(settings, brand, run_id)
    steps, failed_at, error = {}, None, None
    for name in ("start", *STEPS):
        rec = run.record(name)
        if rec is None:
            steps[name] = {"status": "not run"}
            if failed_at is None:
                failed_at = name
                error = "did not run or left no record (killed, timed out, or an upstream task failed before it)"
            continue
        steps[name] = {k: rec.get(k) for k in ("status", "seconds", "error") if rec.get(k) is not None}
        if rec["status"] != "ok" and failed_at is None:
            failed_at, error = name, rec.get("error")
    results = {n: (run.record(n) or {}).get("result") or {} for n in ("pull", "prepare", "validate", "train", "evaluate", "gate", "smoke")}
    gate_rec = run.record("gate") or {}
    deployment = gate_rec.get("result") or gate_rec.get("details") or {}
    if failed_at is None:
        outcome = "deployed" if deployment.get("promoted") else "published as candidate (not promoted)"
    elif failed_at == "validate":
        outcome = "stopped at validation: nothing trained"
    elif failed_at == "gate" and deployment.get("version"):
        outcome = f"rejected by the gate: {deployment['version']} recorded as rejected, production unchanged"
    elif failed_at in ("reload", "smoke") and deployment.get("promoted"):
        # the registry already says production: the service follows it at its next poll, unchecked
        outcome = f"promoted {deployment['version']} to production, but failed at {failed_at}"
    else:
        outcome = f"failed at {failed_at}"
    body = {
        "brand": brand, "run_id": run_id, "ok": failed_at is None, "outcome": outcome, "failed_at": failed_at,
        "error": error, "run_dir": str(run.run_dir), "steps": steps,
        "data": {"content_sha256": results["pull"].get("content_sha256"), "dvc_md5": results["prepare"].get("dvc_md5"),
                 "references": results["pull"].get("references"), "train": results["prepare"].get("train"),
                 "val": results["prepare"].get("val")},
        "validation_report": (run.record("validate") or {}).get("details", {}).get("report_dir"),
        "adapter": {k: results["train"].get(k) for k in ("adapter_dir", "reused", "key")},
        "gate": results["evaluate"].get("gate"),
        "deployment": deployment, "smoke": results["smoke"],
        "ls_project": results["pull"].get("project"),
    }  # fmt: skip
    from bg_platform.data.imageio import atomic_write_bytes

    if run.run_dir.exists():
        atomic_write_bytes(run.run_dir / "summary.json", json.dumps(body, indent=1, default=str).encode())
        if body["data"]["content_sha256"]:
            last = {k: body[k] for k in ("run_id", "ok", "outcome", "ls_project")} | {
                "content_sha256": body["data"]["content_sha256"], "finished_at": time.time()}  # fmt: skip
            atomic_write_bytes(run.brand_dir / "last_run.json", json.dumps(last, indent=1).encode())
    log.info("onboarding %s (run %s): %s\n%s", brand, run_id, outcome, json.dumps(body, indent=1, default=str))
    return body, failed_at is None


def failure_message(body: dict[str, Any]) -> str:
    return (f"onboarding of brand {body['brand']} {body['outcome']}"
            + (f": {body['error']}" if body.get("error") else "") + f" (summary: {body['run_dir']}/summary.json)")  # fmt: skip


def _brief(d: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in drop}


def run_all(params: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """Every step in order without Airflow (a shell, a debugger); stops at the first failure."""
    for fn in (start, pull, prepare, validate, train, evaluate, gate, reload, smoke):
        try:
            fn(params, run_id)
        except (StopRun, OrchestrationError):
            break
    return summary(params, run_id)[0]
