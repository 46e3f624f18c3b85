"""bg_retrain_base: `dvc repro` of the base pipeline, then the production adapters that no longer
match the base (their recorded base fingerprint differs) are listed and re-onboarded, each on its
brand's current references.

The service loads its base once per process: after a new base it must be restarted (it then
refuses the old adapters, whose fingerprints no longer match, until the re-onboarded ones land).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from bg_platform.orchestration.onboarding import base_model
from bg_platform.orchestration.runs import OrchestrationError, Settings, StopRun
from bg_platform.orchestration.sync import last_run

log = logging.getLogger(__name__)


def repro(params: Mapping[str, Any], timeout: float = 24 * 3600.0) -> dict[str, Any]:
    """`dvc repro [targets] [-f]` in the project repo; returns the stages that ran and the base
    fingerprint before and after."""
    settings = Settings.from_env()
    targets = [str(t) for t in (params or {}).get("targets") or []]
    bad = [t for t in targets if not re.match(r"^[A-Za-z0-9_./@:-]+$", t)]
    if bad:
        raise StopRun(f"targets: {bad} are not DVC stage names (e.g. train_base, evaluate_base)")
    p = settings.load_params()
    before = _fingerprint(settings, p)
    cmd = [sys.executable, "-m", "dvc", "repro", *(["-f"] if (params or {}).get("force") else []), *targets]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}  # `bgp` of this venv
    log.info("%s (cwd %s)", " ".join(cmd), settings.repo)
    try:
        proc = subprocess.run(cmd, cwd=settings.repo, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OrchestrationError(f"`dvc repro` in {settings.repo} took over {timeout:.0f} s and was stopped") from None
    out = proc.stdout + proc.stderr
    for line in out.splitlines():
        log.info("[dvc repro] %s", line)
    if proc.returncode != 0:
        tail = "\n".join(out.strip().splitlines()[-25:])
        raise StopRun(f"`dvc repro {' '.join(targets)}` failed in {settings.repo} (exit {proc.returncode}); the "
                      f"base and production adapters are unchanged. Last lines:\n{tail}")  # fmt: skip
    ran = [ln.split("'")[1] for ln in out.splitlines() if ln.startswith("Running stage '")]
    after = _fingerprint(settings, p)
    return {"stages_ran": ran, "base_fingerprint_before": before, "base_fingerprint": after,
            "base_changed": before != after}  # fmt: skip


def _fingerprint(settings: Settings, params) -> str | None:
    try:
        return base_model(settings, params).fingerprint
    except StopRun:
        return None


def stale_adapters(params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Production adapters whose base fingerprint is not the current base's."""
    from bg_platform.registry import Registry

    settings = Settings.from_env()
    p = settings.load_params()
    current = base_model(settings, p).fingerprint
    reg = Registry(settings.registry_root(p))
    stale = []
    for brand, version in reg.production_versions().items():
        info = reg.get(brand, version)
        if info.base_fingerprint != current:
            last = last_run(settings, brand) or {}
            stale.append({"brand": brand, "version": version, "adapter_base": info.base_fingerprint,
                          "current_base": current, "ls_project": last.get("ls_project")})  # fmt: skip
    log.info("%d production adapter(s) trained on another base: %s", len(stale), [s["brand"] for s in stale] or "none")
    return stale


def onboarding_runs(stale: list[dict[str, Any]], params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """TriggerDagRunOperator kwargs re-onboarding each stale brand on the new base; a brand with no
    known Label Studio project (never onboarded by a DAG here) is logged and left to a person."""
    default = (params or {}).get("ls_project") or os.environ.get("BGP_LS_PROJECT")
    runs = []
    for s in stale:
        project = s.get("ls_project") or default
        if not project:
            log.warning("brand %s is stale (base %s…) but its Label Studio project is unknown; trigger "
                        "bg_onboard_brand for it by hand", s["brand"], s["adapter_base"][:12])  # fmt: skip
            continue
        runs.append({"conf": {"brand": s["brand"], "ls_project": int(project)},
                     "trigger_run_id": f"rebase__{s['brand']}__{s['current_base'][:12]}"})  # fmt: skip
    return runs
