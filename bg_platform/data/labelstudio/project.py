"""Project setup (idempotent) and reference import into a Label Studio project."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bg_platform.config import BRAND_PATTERN
from bg_platform.data import imageio, manifest
from bg_platform.data.labelstudio.client import call
from bg_platform.data.labelstudio.constants import (
    BRAND,
    CATEGORY,
    FILES_SUBDIR,
    IMAGE,
    IMAGE_SUFFIXES,
    IMPORT_MODEL_VERSION,
    LabelStudioError,
)
from bg_platform.data.labelstudio.labeling import (
    brush_result,
    build_label_config,
    choice_result,
    config_categories,
    text_result,
)
from bg_platform.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class SetupResult:
    project_id: int
    created: bool
    config_updated: bool
    storage_id: int
    categories: list[str]


def find_project(client, title: str):
    matches = [
        p
        for p in call(client, "list projects", lambda: list(client.projects.list(title=title)))
        if p.title == title
    ]
    if len(matches) > 1:
        ids = sorted(p.id for p in matches)
        raise LabelStudioError(
            f"title: {len(matches)} projects are titled {title!r} (ids {ids}); rename or delete the extras"
        )
    return matches[0] if matches else None


def setup_project(client, title: str, categories: Sequence[str], files_root: str | Path) -> SetupResult:
    """Create (or find by title) the labeling project, update its config when the categories changed,
    and make sure a Local Files import storage covers `<files_root>/brands` (needed to serve images)."""
    config = build_label_config(categories)
    project = find_project(client, title)
    created = updated = False
    if project is None:
        project = call(
            client,
            f"create project {title!r}",
            lambda: client.projects.create(title=title, label_config=config),
        )
        created = True
    else:
        current = call(
            client, f"read project {project.id}", lambda: client.projects.get(id=project.id)
        ).label_config
        if (current or "").strip() != config.strip():
            _refuse_dropping_used_categories(
                client, project.id, config_categories(current or "<View/>"), categories
            )
            call(client, f"validate the new labeling config of project {project.id} (categories {list(categories)})",
                 lambda: client.projects.validate_label_config(id=project.id, label_config=config))  # fmt: skip
            call(
                client,
                f"update project {project.id}",
                lambda: client.projects.update(id=project.id, label_config=config),
            )
            updated = True
    storage_id = ensure_local_storage(client, project.id, files_root)
    return SetupResult(project.id, created, updated, storage_id, list(categories))


def _refuse_dropping_used_categories(client, project_id: int, old: Sequence[str], new: Sequence[str]) -> None:
    # Label Studio 1.23 accepts a config without a category that annotations still use; those annotations
    # would then show no category in the UI while pulls keep the old name: refuse instead
    dropped = set(old) - set(new)
    if not dropped:
        return
    tasks = call(client, "list tasks", lambda: list(client.tasks.list(project=project_id, fields="all")))
    users = {
        t.id
        for t in tasks
        for a in t.annotations or []
        for r in a.get("result") or []
        if r.get("from_name") == CATEGORY and dropped & set((r.get("value") or {}).get("choices") or [])
    }
    if users:
        raise LabelStudioError(
            f"categories: dropping {sorted(dropped)} from project {project_id}, but annotations of tasks "
            f"{sorted(users)[:10]} use them; relabel those tasks first or keep the categories"
        )


def ensure_local_storage(client, project_id: int, files_root: str | Path) -> int:
    path = Path(files_root).resolve() / FILES_SUBDIR
    path.mkdir(parents=True, exist_ok=True)  # the server refuses a storage path that does not exist
    for st in call(
        client, "list Local Files storages", lambda: client.import_storage.local.list(project=project_id)
    ):
        if st.path and Path(st.path) == path:
            return st.id
    st = call(
        client,
        f"create a Local Files storage at {path} (it must be a sub-folder of the server's "
        f"LOCAL_FILES_DOCUMENT_ROOT, which must equal --files-root)",
        lambda: client.import_storage.local.create(
            project=project_id, path=str(path), use_blob_urls=True, title="bgp references",
            regex_filter=r".*\.(png|jpe?g|webp)$",
        ),
    )  # fmt: skip
    return st.id


@dataclass
class Reference:
    name: str  # safe file stem, unique per brand
    image: Path
    mask: Path | None = None
    category: str = ""
    caption: str = ""


def find_references(src: str | Path, brand: str, category: str = "") -> list[Reference]:
    """References in a dataset folder (manifest layout: rows of `brand`, or all rows when none has a
    brand) or a plain folder of images with optional `masks/<stem>.png`."""
    src = Path(src)
    if (src / manifest.MANIFEST_NAME).exists():
        frame = manifest.read(src)
        rows = frame[frame["brand"] == brand]
        if rows.empty and (frame["brand"] == "").all():
            rows = frame
        if rows.empty:
            raise DataError(
                f"{src}: no manifest rows with brand {brand!r}; brands there: {sorted(set(frame['brand']))}"
            )
        refs = [
            Reference(
                str(r.id), src / r.image, src / r.mask if r.mask else None, category or r.category, r.caption
            )
            for r in rows.itertuples()
        ]
    elif src.is_dir():
        folder = src / "images" if (src / "images").is_dir() else src
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(
                f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}); point DIR at the reference images"
            )
        masks = src / "masks"
        refs = [Reference(p.stem, p, masks / f"{p.stem}.png" if (masks / f"{p.stem}.png").exists() else None, category)
                for p in files]  # fmt: skip
    else:
        raise DataError(f"{src}: not a folder; give a folder of reference images or a dataset folder")
    seen: dict[str, str] = {}
    for ref in refs:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", ref.name).strip("-.") or "ref"
        if safe in seen:
            raise DataError(f"{ref.image}: its name maps to {safe!r} like {seen[safe]}; rename one of them")
        seen[safe] = str(ref.image)
        ref.name = safe
    return refs


@dataclass
class ImportResult:
    project_id: int
    brand: str
    task_ids: list[int]
    skipped: list[str]  # references already in the project (same brand/name)
    with_masks: int


def import_references(
    client, project_id: int, src: str | Path, brand: str, files_root: str | Path, *,
    masks: str = "predictions", category: str = "",
) -> ImportResult:  # fmt: skip
    """Copy reference images (re-encoded PNG) into `<files_root>/brands/<brand>/` and create one task
    each. Existing masks become pre-annotations (`masks="predictions"`) or finished annotations
    (`"annotations"`); `"none"` imports images only. Re-importing the same names is a no-op."""
    if not re.match(BRAND_PATTERN, brand):
        raise DataError(
            f"brand: {brand!r} does not match {BRAND_PATTERN}; use lower-case letters, digits, _ or -"
        )
    if masks not in ("predictions", "annotations", "none"):
        raise DataError(f"masks: {masks!r}; use predictions, annotations or none")
    refs = find_references(src, brand, category)
    root = Path(files_root).resolve()
    existing = {
        (t.data or {}).get("ref")
        for t in call(client, "list tasks", lambda: list(client.tasks.list(project=project_id, fields="all")))
    }
    payload, skipped, with_masks = [], [], 0
    for ref in refs:
        key = f"{brand}/{ref.name}"
        rel = f"{FILES_SUBDIR}/{brand}/{ref.name}.png"
        data = imageio.encode_png(imageio.read_image(ref.image, what=str(ref.image)).rgb)
        target = root / rel
        if target.exists() and target.read_bytes() != data:
            raise DataError(f"{target}: a different image is already imported as {key!r}; rename {ref.image}")
        if not target.exists():
            imageio.atomic_write_bytes(target, data)
        if key in existing:
            skipped.append(key)
            continue
        task: dict[str, Any] = {"data": {IMAGE: f"/data/local-files/?d={rel}", BRAND: brand, "ref": key}}
        result = []
        if ref.mask is not None and masks != "none":
            mask = imageio.binarize(imageio.read_mask(ref.mask, what=str(ref.mask)))
            h, w = imageio.read_image(data).rgb.shape[:2]
            if mask.shape != (h, w):
                raise DataError(
                    f"{ref.mask}: mask is {mask.shape[1]}x{mask.shape[0]}, image {ref.image} is {w}x{h}"
                )
            result.append(brush_result(mask))
            with_masks += 1
        if result and ref.category:
            result.append(choice_result(ref.category))
        if result and ref.caption:
            result.append(text_result(ref.caption))
        if result and masks == "annotations":
            task["annotations"] = [{"result": result}]
        elif result:
            task["predictions"] = [{"result": result, "model_version": IMPORT_MODEL_VERSION}]
        payload.append(task)
    task_ids: list[int] = []
    for i in range(0, len(payload), 200):
        batch = payload[i : i + 200]
        res = call(client, f"import {len(batch)} tasks", lambda b=batch: client.projects.import_tasks(
            id=project_id, request=b, return_task_ids=True))  # fmt: skip
        task_ids.extend(res.task_ids or [])
    return ImportResult(project_id, brand, task_ids, skipped, with_masks)
