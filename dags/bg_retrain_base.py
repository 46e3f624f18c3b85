"""
### bg_retrain_base: the Category-Wise base through `dvc repro`, then stale adapters re-onboarded

`repro` runs `dvc repro` (params `targets`, `force`) in the project repo; `stale_adapters` lists the
production adapters whose base fingerprint is not the new base's; `onboard` triggers
`bg_onboard_brand` for each (run id `rebase__<brand>__<base fingerprint>`), when `onboard_stale`.
Restart the service on the new base before those runs reach `reload` (docs/ORCHESTRATION.md).
Step code: `bg_platform.orchestration.retrain`.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import ExceptionRetryPolicy, Param, RetryAction, RetryRule, dag, task

from bg_platform.orchestration import dag_settings

cfg = dag_settings.current()

STOP_ON_PERMANENT = ExceptionRetryPolicy(
    rules=[RetryRule(exception=dag_settings.PERMANENT_ERROR, action=RetryAction.FAIL, reason="pipeline or settings error")]
)


@dag(
    dag_id="bg_retrain_base",
    schedule=cfg.retrain_schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["bg", "base", "dvc"],
    default_args={**cfg.default_args(), "retry_policy": STOP_ON_PERMANENT},
    doc_md=__doc__,
    params={
        "targets": Param([], type="array", items={"type": "string"}, title="DVC stages",
                         description="empty = the whole pipeline (dataset ... evaluate_base)"),
        "force": Param(False, type="boolean", title="Force (dvc repro -f)"),
        "onboard_stale": Param(True, type="boolean", title="Re-onboard adapters trained on another base"),
        "ls_project": Param(None, type=["null", "integer"], minimum=1, title="Label Studio project id",
                            description="for brands whose project is unknown; empty = env BGP_LS_PROJECT"),
    },
)  # fmt: skip
def bg_retrain_base():
    @task(execution_timeout=cfg.repro_timeout, queue=cfg.train_queue)
    def repro(params=None):
        from bg_platform.orchestration import retrain

        return retrain.repro(params, timeout=cfg.repro_timeout.total_seconds())

    @task
    def stale_adapters(_repro, params=None):
        from bg_platform.orchestration import retrain

        return retrain.stale_adapters(params)

    @task
    def onboarding_runs(stale, params=None):
        from bg_platform.orchestration import retrain

        return retrain.onboarding_runs(stale, params) if params["onboard_stale"] else []

    TriggerDagRunOperator.partial(
        task_id="onboard",
        trigger_dag_id=dag_settings.ONBOARD_DAG_ID,
        skip_when_already_exists=True,
        wait_for_completion=False,
        map_index_template="{{ task.conf['brand'] }}",
    ).expand_kwargs(onboarding_runs(stale_adapters(repro())))


bg_retrain_base()
