"""
### bg_sync_label_studio: onboard every brand with new completed references

`due_brands` pulls the Label Studio project (incrementally) and lists the brands whose references
changed since their last onboarding run; `onboard` triggers one `bg_onboard_brand` run per brand
(run id `sync__<brand>__<content hash>`: the same references never start two runs).
Schedule: BGP_SYNC_SCHEDULE (default every 30 min). Step code: `bg_platform.orchestration.sync`.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import ExceptionRetryPolicy, Param, RetryAction, RetryRule, dag, task

from bg_platform.orchestration import dag_settings

cfg = dag_settings.current()

STOP_ON_PERMANENT = ExceptionRetryPolicy(
    rules=[RetryRule(exception=dag_settings.PERMANENT_ERROR, action=RetryAction.FAIL, reason="bad settings")]
)


@dag(
    dag_id="bg_sync_label_studio",
    schedule=cfg.sync_schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["bg", "label-studio", "onboarding"],
    default_args={**cfg.default_args(), "retry_policy": STOP_ON_PERMANENT},
    doc_md=__doc__,
    params={
        "ls_project": Param(None, type=["null", "integer"], minimum=1, title="Label Studio project id",
                            description="empty = env BGP_LS_PROJECT"),
        "min_references": Param(None, type=["null", "integer"], minimum=1, title="Minimum references",
                                description="passed to each onboarding run; empty = its default"),
    },
)  # fmt: skip
def bg_sync_label_studio():
    @task
    def due_brands(params=None):
        from bg_platform.orchestration import sync

        return sync.find_brands(params)

    @task
    def onboarding_runs(due, params=None):
        from bg_platform.orchestration import sync

        return sync.onboarding_runs(due, params)

    TriggerDagRunOperator.partial(
        task_id="onboard",
        trigger_dag_id=dag_settings.ONBOARD_DAG_ID,
        skip_when_already_exists=True,
        wait_for_completion=False,
        map_index_template="{{ task.conf['brand'] }}",
    ).expand_kwargs(onboarding_runs(due_brands()))


bg_sync_label_studio()
