"""bg_sync_label_studio: which brands have new completed references, and one onboarding run each.

A brand is due when its pulled references (content hash: ids, categories, captions, image and mask
bytes) differ from those of its last onboarding run, whatever that run's outcome: a brand whose
references failed validation is not retried every half hour, but is as soon as someone fixes an
annotation. The trigger's run id carries the content hash, so the same references never start two
onboarding runs (the operator skips a run id that exists).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from bg_platform.data import manifest
from bg_platform.orchestration import brand_data
from bg_platform.orchestration.onboarding import resolve_project
from bg_platform.orchestration.runs import RunContext, Settings, StopRun, locked

log = logging.getLogger(__name__)


def last_run(settings: Settings, brand: str) -> dict[str, Any] | None:
    path = RunContext(settings, brand, "x").brand_dir / "last_run.json"
    return json.loads(path.read_text()) if path.exists() else None


def find_brands(params: Mapping[str, Any], *, url: str | None = None, token: str | None = None) -> list[dict[str, Any]]:
    """Pull the project (incrementally) and list the brands whose references changed since their
    last onboarding run."""
    from bg_platform.data import labelstudio as ls

    settings = Settings.from_env()
    project = _project(params)
    root = brand_data.pull_root(settings, project)
    try:
        res = ls.pull_annotations(ls.connect(url, token), project, root)
    except ls.LabelStudioUnavailable:
        raise
    except ls.LabelStudioError as exc:
        raise StopRun(str(exc)) from None
    due = []
    with locked(root / brand_data.PULL_LOCK, f"the Label Studio pull folder {root}"):
        folders = sorted(p for p in root.iterdir() if p.is_dir() and (p / manifest.MANIFEST_NAME).exists())
        for folder in folders:
            brand, content = folder.name, brand_data.content_hash(folder)
            last = last_run(settings, brand)
            if last is not None and last.get("content_sha256") == content:
                continue
            due.append({
                "brand": brand, "content_sha256": content, "references": len(manifest.read(folder)),
                "changed_in_this_pull": brand in res.changed_brands,
                "last_run": (last or {}).get("run_id"), "last_outcome": (last or {}).get("outcome"),
            })  # fmt: skip
    bad = [b for b in res.bad if not b.written]
    for b in bad:
        log.warning("task %s (brand %r) not pulled: %s", b.task_id, b.brand, b.reason)
    log.info("project %s: %d brand(s) with pulled references, due for onboarding: %s", project, len(folders),
             [d["brand"] for d in due] or "none")  # fmt: skip
    return due


def _project(params: Mapping[str, Any]) -> int:
    return resolve_project((params or {}).get("ls_project"))


def onboarding_runs(due: list[dict[str, Any]], params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """TriggerDagRunOperator kwargs, one per due brand: its conf (the onboarding form) and a run id
    keyed on the brand's references."""
    project = _project(params)
    extra = {k: params[k] for k in ("min_references", "min_per_category") if (params or {}).get(k) is not None}
    return [
        {"conf": {"brand": d["brand"], "ls_project": project, **extra},
         "trigger_run_id": f"sync__{d['brand']}__{d['content_sha256'][:12]}"}
        for d in due
    ]  # fmt: skip

