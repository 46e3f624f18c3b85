"""Scheduling knobs shared by the DAG files, read from the environment when a DAG file is parsed.

Kept apart from the step modules, and free of heavy imports, because every DAG parse imports it
(the scheduler and dag-processor parse DAG files every few seconds).

  BGP_DAG_RETRIES          task retries (default 2; the tests use 0)
  BGP_DAG_RETRY_DELAY_S    seconds between tries (default 60)
  BGP_MAX_ONBOARDINGS      onboarding runs at once, one brand each (default 4)
  BGP_MAX_TRAININGS        adapter trainings at once over all runs (default 2: CPU/GPU bound)
  BGP_SYNC_SCHEDULE        cron of bg_sync_label_studio (default "*/30 * * * *"; "none" = manual only)
  BGP_RETRAIN_SCHEDULE     cron of bg_retrain_base (default none: manual)
  BGP_TRAIN_TIMEOUT_MIN    training task timeout in minutes (default 360)
"""

from __future__ import annotations

import os
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


RETRIES = _int("BGP_DAG_RETRIES", 2)
RETRY_DELAY = timedelta(seconds=_int("BGP_DAG_RETRY_DELAY_S", 60))
MAX_ONBOARDINGS = _int("BGP_MAX_ONBOARDINGS", 4, 1)
MAX_TRAININGS = _int("BGP_MAX_TRAININGS", 2, 1)
SYNC_SCHEDULE = _schedule("BGP_SYNC_SCHEDULE", "*/30 * * * *")
RETRAIN_SCHEDULE = _schedule("BGP_RETRAIN_SCHEDULE", None)
TRAIN_TIMEOUT = timedelta(minutes=_int("BGP_TRAIN_TIMEOUT_MIN", 360, 1))
EVAL_TIMEOUT = timedelta(minutes=_int("BGP_EVAL_TIMEOUT_MIN", 120, 1))
STEP_TIMEOUT = timedelta(minutes=_int("BGP_STEP_TIMEOUT_MIN", 30, 1))  # pull, prepare, validate, deploy
REPRO_TIMEOUT = timedelta(minutes=_int("BGP_REPRO_TIMEOUT_MIN", 24 * 60, 1))


def default_args() -> dict:
    return {
        "owner": "bg-platform",
        "retries": RETRIES,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": 2.0 if RETRIES else 0,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": STEP_TIMEOUT,
    }
