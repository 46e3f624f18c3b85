"""Scheduling knobs shared by the DAG files, read from the environment when a DAG file is parsed.

Kept apart from the step modules, and free of heavy imports, because every DAG parse imports it
(the scheduler and dag-processor parse DAG files every few seconds).

  BGP_DAG_RETRIES          task retries (default 2; the tests use 0)
  BGP_DAG_RETRY_DELAY_S    seconds between tries (default 60)
  BGP_MAX_ONBOARDINGS      onboarding runs at once, one brand each (default 4)
  BGP_MAX_TRAININGS        adapter trainings at once over all runs (default 2: CPU/GPU bound)
  BGP_SYNC_SCHEDULE        cron of bg_sync_label_studio (default "*/30 * * * *"; "none" = manual only)
  BGP_RETRAIN_SCHEDULE     cron of bg_retrain_base (default none: manual)
  BGP_TRAIN_QUEUE          executor queue of train/evaluate (default "default"; CeleryExecutor: a GPU queue)
  BGP_TRAIN_TIMEOUT_MIN    training task timeout in minutes (default 360)
  BGP_EVAL_TIMEOUT_MIN     evaluation task timeout in minutes (default 120)
  BGP_STEP_TIMEOUT_MIN     timeout of every other task in minutes (default 30)
  BGP_REPRO_TIMEOUT_MIN    `dvc repro` timeout in minutes (default 1440)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

# Errors a retry cannot fix (bad data, failed gate, bad settings): the DAGs fail such tasks at once.
PERMANENT_ERROR = "bg_platform.orchestration.runs.StopRun"
BRAND_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"  # = bg_platform.config.BRAND_PATTERN (a unit test checks)
ONBOARD_DAG_ID = "bg_onboard_brand"


def _int(name: str, default: int, low: int = 0) -> int:
    raw = os.environ.get(name, "")
    try:
        value = int(raw) if raw.strip() else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer; unset it or give a whole number") from None
    if value < low:
        raise ValueError(f"{name}={value} is below {low}")
    return value


def _schedule(name: str, default: str | None) -> str | None:
    raw = os.environ.get(name)
    value = default if raw is None or not raw.strip() else raw.strip()
    return None if value is None or value.lower() in ("none", "off", "manual") else value


@dataclass(frozen=True)
class DagSettings:
    retries: int
    retry_delay: timedelta
    max_onboardings: int
    max_trainings: int
    sync_schedule: str | None
    retrain_schedule: str | None
    train_timeout: timedelta
    eval_timeout: timedelta
    step_timeout: timedelta  # pull, prepare, validate, gate, reload, smoke
    repro_timeout: timedelta
    train_queue: str

    def default_args(self) -> dict:
        return {
            "owner": "bg-platform",
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "retry_exponential_backoff": 2.0 if self.retries else 0,
            "max_retry_delay": timedelta(minutes=30),
            "execution_timeout": self.step_timeout,
        }


def current() -> DagSettings:
    """Read now (not at first import): every parse of a DAG file sees the environment of that parse."""
    return DagSettings(
        retries=_int("BGP_DAG_RETRIES", 2),
        retry_delay=timedelta(seconds=_int("BGP_DAG_RETRY_DELAY_S", 60)),
        max_onboardings=_int("BGP_MAX_ONBOARDINGS", 4, 1),
        max_trainings=_int("BGP_MAX_TRAININGS", 2, 1),
        sync_schedule=_schedule("BGP_SYNC_SCHEDULE", "*/30 * * * *"),
        retrain_schedule=_schedule("BGP_RETRAIN_SCHEDULE", None),
        train_timeout=timedelta(minutes=_int("BGP_TRAIN_TIMEOUT_MIN", 360, 1)),
        eval_timeout=timedelta(minutes=_int("BGP_EVAL_TIMEOUT_MIN", 120, 1)),
        step_timeout=timedelta(minutes=_int("BGP_STEP_TIMEOUT_MIN", 30, 1)),
        repro_timeout=timedelta(minutes=_int("BGP_REPRO_TIMEOUT_MIN", 24 * 60, 1)),
        train_queue=os.environ.get("BGP_TRAIN_QUEUE", "").strip() or "default",
    )
