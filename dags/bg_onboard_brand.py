"""
### bg_onboard_brand: a brand's references in Label Studio -> a live adapter in the service

`start` (check form + inputs) -> `pull` (Label Studio, incremental) -> `prepare` (held-out split,
`dvc add`) -> `validate` (Great Expectations; a failure stops the run, report in the log and in
XCom `validation_report`) -> `train` (`bgp train-adapter`) -> `evaluate` (`bgp evaluate-adapter`)
-> `gate` (publish: promoted, or recorded as rejected with production untouched) -> `reload`
(service `POST /reload`) -> `smoke` (`POST /generate` must answer with the new version) ->
`summary` (always runs; `summary.json` + XCom; fails the run when a step failed).

Trigger from the UI with the form, or from `bg_sync_label_studio` / `bg_retrain_base`.
Step code: `bg_platform.orchestration.onboarding`. Settings: docs/ORCHESTRATION.md.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import ExceptionRetryPolicy, Param, RetryAction, RetryRule, TriggerRule, chain, dag, task

from bg_platform.orchestration import dag_settings

cfg = dag_settings.current()

STOP_ON_PERMANENT = ExceptionRetryPolicy(
    rules=[RetryRule(exception=dag_settings.PERMANENT_ERROR, action=RetryAction.FAIL, reason="bad data/settings or failed gate")]
)
GATE = "Deployment gate (empty = params.yaml evaluate_adapter.gate)"


@dag(
    dag_id=dag_settings.ONBOARD_DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=cfg.max_onboardings,
    tags=["bg", "onboarding", "adapters"],
    default_args={**cfg.default_args(), "retry_policy": STOP_ON_PERMANENT},
    doc_md=__doc__,
    params={
        "brand": Param(type="string", pattern=dag_settings.BRAND_PATTERN, title="Brand id",
                       description="lower-case letters, digits, _ or - (the registry and the service use it)"),
        "ls_project": Param(None, type=["null", "integer"], minimum=1, title="Label Studio project id",
                            description="the number in the project's URL; empty = env BGP_LS_PROJECT"),
        "categories": Param([], type="array", items={"type": "string"}, title="Categories",
                            description="base categories the references may use (e.g. marble); empty = any"),
        "min_references": Param(3, type="integer", minimum=1, maximum=1000, title="Minimum references",
                                description="fewer completed references stop the run at validation"),
        "min_per_category": Param(1, type="integer", minimum=1, maximum=1000, title="Minimum per category",
                                  description="references each used category needs"),
        "min_brand_accuracy": Param(None, type=["null", "number"], minimum=0, maximum=1, section=GATE,
                                    title="Min brand judge accuracy with the adapter"),
        "max_category_drop": Param(None, type=["null", "number"], minimum=0, maximum=1, section=GATE,
                                   title="Max category fidelity drop below the brand's real references"),
        "min_brand_gain": Param(None, type=["null", "number"], minimum=0, maximum=1, section=GATE,
                                title="Min brand accuracy gain over the base"),
        "promote": Param(True, type="boolean", title="Promote to production when the gate passes",
                         description="off: publish as candidate only (no reload, no smoke test)"),
        "smoke_steps": Param(4, type="integer", minimum=1, maximum=200, title="Smoke test denoising steps"),
    },
)  # fmt: skip
def bg_onboard_brand():
    @task
    def start(params=None, run_id=None):
        from bg_platform.orchestration import onboarding

        return onboarding.start(params, run_id)

    @task
    def pull(params=None, run_id=None):
        from bg_platform.orchestration import onboarding

        return onboarding.pull(params, run_id)

    @task
    def prepare(params=None, run_id=None):
        from bg_platform.orchestration import onboarding

        return onboarding.prepare(params, run_id)

    @task
    def validate(params=None, run_id=None, ti=None):
        from bg_platform.orchestration import onboarding

        return onboarding.validate(params, run_id, report_to=ti.xcom_push)

    @task(execution_timeout=cfg.train_timeout, max_active_tis_per_dag=cfg.max_trainings, queue=cfg.train_queue)
    def train(params=None, run_id=None):
        from bg_platform.orchestration import onboarding

        return onboarding.train(params, run_id, timeout=cfg.train_timeout.total_seconds())

    @task(execution_timeout=cfg.eval_timeout, max_active_tis_per_dag=cfg.max_trainings, queue=cfg.train_queue)
    def evaluate(params=None, run_id=None):
        from bg_platform.orchestration import onboarding

        return onboarding.evaluate(params, run_id, timeout=cfg.eval_timeout.total_seconds())

    @task
    def gate(params=None, run_id=None):
        from bg_platform.orchestration import onboarding

        return onboarding.gate(params, run_id)

    @task
    def reload(params=None, run_id=None):
        from bg_platform.orchestration import onboarding

        return onboarding.reload(params, run_id)

    @task
    def smoke(params=None, run_id=None):
        from bg_platform.orchestration import onboarding

        return onboarding.smoke(params, run_id)

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
    def summary(params=None, run_id=None, ti=None):
        from bg_platform.orchestration import onboarding

        body, ok = onboarding.summary(params, run_id)
        ti.xcom_push("summary", body)
        if not ok:
            raise onboarding.StopRun(onboarding.failure_message(body))
        return body

    chain(start(), pull(), prepare(), validate(), train(), evaluate(), gate(), reload(), smoke(), summary())


bg_onboard_brand()
