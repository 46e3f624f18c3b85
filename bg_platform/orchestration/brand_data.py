"""A brand's references, from Label Studio to a validated, DVC-versioned training dataset.

pull (incremental, the whole project; this run keeps a snapshot of one brand) -> prepare (a
deterministic held-out split) -> version (`dvc add` of `<repo>/data/brands/<brand>`) -> validate
(Great Expectations with the rules of a brand dataset).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bg_platform.data import manifest
from bg_platform.orchestration.runs import Settings, StopRun, locked

log = logging.getLogger(__name__)

VAL_FRACTION = 0.25  # of a brand's references held out for evaluation...
MIN_FOR_HOLDOUT = 8  # ...once it has this many (fewer: every reference is needed for training)
PULL_LOCK = Path(".labelstudio") / "pull.lock"  # the lock `labelstudio.pull_annotations` holds per root


class NoReferences(StopRun):
    pass


class BrandValidationFailed(StopRun):
    def __init__(self, message: str, report: str, report_dir: Path):
        super().__init__(message)
        self.report = report
        self.report_dir = report_dir


def pull_root(settings: Settings, project_id: int) -> Path:
    """One pull folder per Label Studio project, shared by every brand's run (the pull locks it)."""
    return settings.work_dir / "labelstudio" / f"project-{int(project_id)}"


def content_hash(dataset_dir: Path) -> str:
    """What a brand's references are: rows (id, category, caption, split, image sha256) + mask bytes.
    Equal hashes = nothing to retrain; the sync DAG compares it with the last onboarded one."""
    frame = manifest.read(dataset_dir).sort_values("id")
    h = hashlib.sha256()
    for r in frame.itertuples():
        h.update(f"{r.id}\0{r.category}\0{r.caption}\0{r.split}\0{r.sha256}\0".encode())
        h.update(hashlib.sha256((dataset_dir / r.mask).read_bytes()).digest())
    return h.hexdigest()


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a dataset folder, hard-linking files (datasets are never modified in place)."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:  # another filesystem, or links not allowed
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link, ignore=shutil.ignore_patterns(".*"))


def _replace_dir(src: Path, final: Path) -> None:
    """Swap `final` for a copy of `src`: built in a sibling temp folder, then two renames."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    _link_tree(src, tmp)
    try:
        if final.exists():
            final.rename(old)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# pull


def pull_brand(
    settings: Settings, project_id: int, brand: str, dest: Path, *, url: str | None = None, token: str | None = None
) -> dict[str, Any]:
    """Pull the project's completed annotations (incrementally) and snapshot `brand`'s folder into
    `dest`, so later pulls (other brands' runs, the sync DAG) cannot change this run's data."""
    from bg_platform.data import labelstudio as ls

    root = pull_root(settings, project_id)
    try:
        client = ls.connect(url, token)
        res = ls.pull_annotations(client, project_id, root)
    except ls.LabelStudioUnavailable:
        raise  # retried by the DAG: the server may come back
    except ls.LabelStudioError as exc:
        raise StopRun(str(exc)) from None
    src = root / brand
    with locked(root / PULL_LOCK, f"the Label Studio pull folder {root}"):
        if not (src / manifest.MANIFEST_NAME).exists():
            others = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise NoReferences(
                f"brand {brand!r}: Label Studio project {project_id} has no completed annotation for this brand "
                f"(task data 'brand' must be {brand!r}); brands with completed annotations: {others or 'none'}. "
                f"Import references (`bgp labelstudio import DIR --brand {brand} --project {project_id}`) and "
                f"annotate them, or fix the brand / ls_project of this run"
            )
        shutil.rmtree(dest, ignore_errors=True)  # a retry of the same run starts from a fresh snapshot
        _link_tree(src, dest)
    frame = manifest.read(dest)
    bad = [dataclasses.asdict(b) for b in res.bad if b.brand == brand]
    for b in bad:
        log.warning("task %s (brand %s): %s [%s]", b["task_id"], brand, b["reason"],
                    "kept for validation to flag" if b["written"] else "NOT in the dataset")  # fmt: skip
    return {
        "project": int(project_id),
        "server": ls.base_url(client),
        "pulled_dir": str(dest),
        "references": len(frame),
        "categories": {str(k): int(v) for k, v in frame["category"].value_counts().sort_index().items()},
        "changed_in_this_pull": brand in res.changed_brands,
        "content_sha256": content_hash(dest),
        "bad_annotations": bad,
    }


# ---------------------------------------------------------------------------------------------
# prepare + version


def holdout_ids(brand: str, ids: Sequence[str], min_train: int) -> set[str]:
    """~25% of the references as "val" once there are >= 8, never leaving fewer than `min_train`
    for training. Chosen by a hash of brand/id, so the split depends on the references only (not
    on their order or the run), and adding one reference moves at most one other."""
    n = len(ids)
    if n < MIN_FOR_HOLDOUT:
        return set()
    k = min(round(n * VAL_FRACTION), n - min_train)
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{brand}/{i}".encode()).hexdigest())
    return set(ranked[: max(k, 0)])


def prepare_dataset(brand: str, pulled_dir: Path, out_dir: Path, min_references: int) -> dict[str, Any]:
    """The brand's training dataset: its references with the held-out split; files hard-linked."""
    frame = manifest.read(pulled_dir)
    frame = frame[frame["brand"] == brand].copy()
    val = holdout_ids(brand, list(frame["id"]), min_references)
    frame["split"] = ["val" if i in val else "train" for i in frame["id"]]
    shutil.rmtree(out_dir, ignore_errors=True)
    (out_dir / "images").mkdir(parents=True)
    (out_dir / "masks").mkdir()
    for r in frame.itertuples():
        for rel in (r.image, r.mask):
            try:
                os.link(pulled_dir / rel, out_dir / rel)
            except OSError:
                shutil.copy2(pulled_dir / rel, out_dir / rel)
    manifest.write(frame.sort_values("id"), out_dir)
    return {
        "dataset_dir": str(out_dir),
        "references": len(frame),
        "train": int((frame["split"] == "train").sum()),
        "val": len(val),
        "content_sha256": content_hash(out_dir),
    }


def version_brand_dataset(settings: Settings, brand: str, dataset_dir: Path) -> dict[str, Any]:
    """Copy the prepared dataset to `<brand data dir>/<brand>` and `dvc add` it (and push when the
    repo has a default remote). Returns the DVC md5 = the data version the adapter is keyed on."""
    from bg_platform.orchestration.versioning import VersioningError, version_dataset

    final = settings.brand_data_dir / brand
    # one writer per brand: the folder and its .dvc file are shared by every run of the brand
    with locked(settings.work_dir / "locks" / f"dataset-{brand}.lock", f"the DVC dataset of brand {brand}"):
        _replace_dir(dataset_dir, final)
        try:
            md5 = version_dataset(final, settings.repo)
        except VersioningError as exc:
            # a stuck or broken dvc is not fixed by a retry in a minute either
            raise StopRun(f"DVC versioning of {final} failed: {exc}") from None
    dvc_file = final.with_name(final.name + ".dvc")
    return {"dvc_path": str(final), "dvc_file": str(dvc_file), "dvc_md5": md5}


# ---------------------------------------------------------------------------------------------
# validate


@dataclass(frozen=True)
class BrandRules:
    known_categories: tuple[str, ...]  # the base's categories (or the run's chosen subset of them)
    min_references: int  # -> validate.min_per_brand
    min_per_category: int  # a category with references needs at least this many


def validate_brand_dataset(params, dataset_dir: Path, rules: BrandRules, report_dir: Path) -> dict[str, Any]:
    """Great Expectations over the brand dataset with brand rules; raises BrandValidationFailed
    (report text attached) when a rule fails."""
    from bg_platform.validation import validate_dataset

    cfg = dataclasses.replace(
        params.validate,
        min_per_brand=rules.min_references,
        min_per_category=rules.min_per_category,
        known_categories=tuple(rules.known_categories),
        report_dir=str(report_dir),
    )
    res = validate_dataset(dataset_dir, cfg, params.imageio, rules.known_categories, report_dir)
    if not res.success:
        raise BrandValidationFailed(
            f"{res.summary}. Nothing was trained. Report: {report_dir / 'report.md'}\n\n{res.report}",
            res.report, report_dir,
        )  # fmt: skip
    return {"summary": res.summary, "report": str(report_dir / "report.md"), "metrics": res.metrics}

