"""Pull: completed annotations -> per-brand manifest datasets, incrementally and atomically."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bg_platform.config import BRAND_PATTERN
from bg_platform.data import imageio, manifest
from bg_platform.data.labelstudio.client import base_url, call, fetch_file
from bg_platform.data.labelstudio.constants import BRAND, CATEGORY, IMAGE, MASK, STATE_FORMAT, STYLE
from bg_platform.data.labelstudio.labeling import decode_brush

log = logging.getLogger(__name__)


@dataclass
class BadAnnotation:
    task_id: int
    annotation_id: int | None
    brand: str
    sample_id: str
    reason: str
    written: bool  # True: a row is in the dataset for validation to flag; False: no row could be made


@dataclass
class PullResult:
    project_id: int
    out_root: Path
    state_path: Path
    changed_brands: list[str] = field(default_factory=list)  # dataset folder rewritten
    removed_brands: list[str] = field(default_factory=list)  # folder deleted: no completed annotation left
    added: list[str] = field(default_factory=list)  # sample ids
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    bad: list[BadAnnotation] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_root"], d["state_path"] = str(self.out_root), str(self.state_path)
        return d


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _completed(annotations: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The annotation that counts for a task: ground truth first, then the most recently updated;
    skipped (cancelled) ones are not references."""
    done = [a for a in annotations or [] if not a.get("was_cancelled")]
    if not done:
        return None
    return max(done, key=lambda a: (bool(a.get("ground_truth")), str(a.get("updated_at") or ""), a["id"]))


def decode_annotation(result: list[dict[str, Any]], w: int, h: int) -> tuple[np.ndarray, str, str, list[str]]:
    """(mask, category, caption, problems) of one annotation on a w x h image."""
    problems, layers, cats, texts = [], [], [], []
    for r in result:
        kind, name, value = str(r.get("type", "")).lower(), r.get("from_name"), r.get("value") or {}
        if kind == "brushlabels" and name == MASK:
            size = (r.get("original_width"), r.get("original_height"))
            if size != (w, h):
                problems.append(f"brush drawn on a {size[0]}x{size[1]} image but the image is {w}x{h}")
                continue
            try:
                layers.append(decode_brush(r))
            except (KeyError, ValueError, IndexError) as exc:
                problems.append(f"brush RLE cannot be decoded ({exc})")
        elif kind == "choices" and name == CATEGORY:
            cats.extend(value.get("choices") or [])
        elif kind == "textarea" and name == STYLE:
            texts.extend(t.strip() for t in value.get("text") or [] if t.strip())
    mask = np.zeros((h, w), np.uint8)
    for layer in layers:
        mask = np.maximum(mask, imageio.binarize(layer))
    if not layers and not problems:
        problems.append("no brush mask")
    elif layers and not mask.any():
        problems.append("empty brush mask")
    if not cats:
        problems.append("missing category")
    elif len(cats) > 1:
        problems.append(f"several categories {cats}")
    return mask, (cats[0] if cats else ""), " ".join(texts), problems


def _load_state(path: Path, project_id: int, url: str) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s unreadable (%s): pulling everything again", path, exc)
        return {}
    if (
        state.get("format") != STATE_FORMAT
        or state.get("project_id") != project_id
        or state.get("url") != url
    ):
        log.warning("%s belongs to another project/server/format: pulling everything again", path)
        return {}
    return state.get("tasks", {})


def _save_state(path: Path, project_id: int, url: str, tasks: dict[str, dict[str, Any]]) -> None:
    body = {"format": STATE_FORMAT, "project_id": project_id, "url": url, "tasks": tasks}
    data = json.dumps(body, indent=1, sort_keys=True).encode()
    if not path.exists() or path.read_bytes() != data:  # a pull with nothing new leaves every file alone
        imageio.atomic_write_bytes(path, data)


def _recover(out_root: Path) -> None:
    """Finish or undo a swap interrupted by a crash: `.X.old-*` is the last good dataset of X."""
    for old in sorted(out_root.glob(".*.old-*")):
        brand = old.name[1:].split(".old-")[0]
        if not (out_root / brand).exists():
            old.rename(out_root / brand)
            log.warning("restored %s from an interrupted pull", out_root / brand)
        else:
            shutil.rmtree(old)
    for tmp in out_root.glob(".*.tmp-*"):
        shutil.rmtree(tmp)


def _swap_in(tmp: Path | None, final: Path) -> None:
    """Replace `final` by `tmp` (or delete it when tmp is None); `.X.old-*` bridges the two renames."""
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        final.rename(old)
    if tmp is not None:
        tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # datasets are never modified in place, so sharing inodes is safe
    except OSError:
        shutil.copy2(src, dst)


def pull_annotations(
    client, project_id: int, out_root: str | Path, state_path: str | Path | None = None
) -> PullResult:
    """Write the project's completed annotations as `<out_root>/<brand>/` manifest datasets.

    Only new or changed annotations are downloaded; unchanged samples are carried over; removed ones
    disappear. Each changed brand folder is rebuilt in a temporary sibling and swapped in, so a crash
    leaves the previous dataset. Annotations with no/empty mask or no category are written (all-zero
    mask, empty category) for validation to flag, and listed in `PullResult.bad`."""
    out_root = Path(out_root).resolve()
    meta = out_root / ".labelstudio"
    meta.mkdir(parents=True, exist_ok=True)
    state_path = Path(state_path) if state_path else meta / f"project-{project_id}.json"
    with open(meta / "pull.lock", "a") as lock:  # "a": no truncation, so a no-op pull changes nothing
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second pull into the same root waits instead of interleaving
        _recover(out_root)
        return _Pull(client, project_id, out_root, state_path).run()


@dataclass
class _Pull:
    client: Any
    project_id: int
    out_root: Path
    state_path: Path

    def __post_init__(self) -> None:
        self.url = base_url(self.client)
        self.prefix = f"ls{self.project_id}-"
        self.old = _load_state(self.state_path, self.project_id, self.url)  # task id -> fingerprint
        self.new = dict(self.old)
        self.result = PullResult(self.project_id, self.out_root, self.state_path)
        self.current: dict[str, dict[str, Any]] = {}  # task id -> fingerprint, annotation, data

    def run(self) -> PullResult:
        tasks = call(
            self.client,
            f"list the tasks of project {self.project_id}",
            lambda: list(self.client.tasks.list(project=self.project_id, fields="all")),
        )
        for t in tasks:
            self._plan(t)
        affected = self._affected()
        for brand in sorted(affected):
            self._rebuild(brand)
            self._save()  # per brand: a crash in a later brand keeps this one's work
        self._save()
        self.result.unchanged += sum(1 for c in self.current.values() if c["fp"]["brand"] not in affected)
        for key, st in sorted(self.new.items(), key=lambda kv: int(kv[0])):
            if st.get("bad"):
                bad = BadAnnotation(
                    int(key), st["annotation_id"], st["brand"], st["sample_id"], st["bad"], True
                )
                self.result.bad.append(bad)
        return self.result

    def _plan(self, task) -> None:
        ann = _completed(task.annotations)
        if ann is None:
            return
        data, sid = task.data or {}, f"{self.prefix}{task.id}"
        brand = str(data.get(BRAND, ""))
        if not re.match(BRAND_PATTERN, brand):
            reason = f"task data brand {brand!r} does not match {BRAND_PATTERN}; fix the task's data"
            self.result.bad.append(BadAnnotation(task.id, ann["id"], brand, sid, reason, False))
            return
        fp = {
            "annotation_id": ann["id"], "updated_at": str(ann.get("updated_at")), "result_sha256": _sha(ann.get("result")),
            "data_sha256": _sha(data), "brand": brand, "sample_id": sid,
        }  # fmt: skip
        self.current[str(task.id)] = {"fp": fp, "ann": ann, "data": data, "task_id": task.id}

    def _unchanged(self, key: str, folder: Path) -> bool:
        prev, fp = self.old.get(key), self.current[key]["fp"]
        sid = fp["sample_id"]
        return (
            prev is not None
            and all(prev.get(k) == v for k, v in fp.items())
            and (folder / "images" / f"{sid}.png").exists()
            and (folder / "masks" / f"{sid}.png").exists()
        )

    def _affected(self) -> set[str]:
        """Brands whose folder must be rebuilt: a sample added, changed, moved, removed or missing."""
        affected: set[str] = set()
        for key, cur in self.current.items():
            brand = cur["fp"]["brand"]
            folder = self.out_root / brand
            if not self._unchanged(key, folder) or not (folder / manifest.MANIFEST_NAME).exists():
                affected.add(brand)
            prev = self.old.get(key)
            if prev is not None and prev["brand"] != brand:
                affected.add(prev["brand"])
        for key, prev in self.old.items():
            if key not in self.current:
                affected.add(prev["brand"])
                self.result.removed.append(prev["sample_id"])
                self.new.pop(key)
        return affected

    def _rebuild(self, brand: str) -> None:
        final = self.out_root / brand
        old_rows = {}
        if (final / manifest.MANIFEST_NAME).exists():
            old_rows = {r["id"]: r for r in manifest.read(final).to_dict("records")}
        tmp = Path(tempfile.mkdtemp(dir=self.out_root, prefix=f".{brand}.tmp-"))
        try:
            (tmp / "images").mkdir()
            (tmp / "masks").mkdir()
            rows = []

            def carry(row: dict[str, Any]) -> None:
                _link_or_copy(final / row["image"], tmp / row["image"])
                _link_or_copy(final / row["mask"], tmp / row["mask"])
                rows.append(row)

            for sid, row in old_rows.items():  # rows another project (or tool) wrote stay as they are
                if (
                    not sid.startswith(self.prefix)
                    and (final / row["image"]).exists()
                    and (final / row["mask"]).exists()
                ):
                    carry(row)
            members = sorted((int(k), k) for k, c in self.current.items() if c["fp"]["brand"] == brand)
            for _, key in members:
                cur, prev = self.current[key], self.old.get(key)
                sid = cur["fp"]["sample_id"]
                if sid in old_rows and self._unchanged(key, final):
                    carry(old_rows[sid])
                    self.result.unchanged += 1
                    continue
                row = self._write_sample(cur, tmp)
                if row is None:  # not recorded in the state: the next pull tries again
                    self.new.pop(key, None)
                    if prev is not None:
                        self.result.removed.append(sid)
                    continue
                rows.append(row)
                (self.result.updated if prev is not None else self.result.added).append(sid)
                self.new[key] = {**cur["fp"], "bad": row.pop("_bad")}
            if rows:
                manifest.write(manifest.to_frame(manifest.Sample(**r) for r in rows), tmp)
                _swap_in(tmp, final)
                self.result.changed_brands.append(brand)
            else:
                shutil.rmtree(tmp)
                if final.exists():
                    _swap_in(None, final)
                    self.result.removed_brands.append(brand)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _write_sample(self, cur: dict[str, Any], tmp: Path) -> dict[str, Any] | None:
        ann, task_id, sid, brand = cur["ann"], cur["task_id"], cur["fp"]["sample_id"], cur["fp"]["brand"]
        try:
            raw = fetch_file(self.client, str(cur["data"].get(IMAGE, "")), f"the image of task {task_id}")
            loaded = imageio.read_image(raw, what=f"task {task_id} image")
        except (ValueError, imageio.ImageError) as exc:
            reason = f"image not available: {exc}"
            self.result.bad.append(BadAnnotation(task_id, ann["id"], brand, sid, reason, False))
            return None
        h, w = loaded.rgb.shape[:2]
        mask, category, caption, problems = decode_annotation(ann.get("result") or [], w, h)
        image_bytes = imageio.write_png(tmp / "images" / f"{sid}.png", loaded.rgb)
        imageio.write_png(tmp / "masks" / f"{sid}.png", mask)
        bad = "; ".join(problems)
        if bad:
            log.warning("task %s (annotation %s, brand %s): %s", task_id, ann["id"], brand, bad)
        sample = manifest.Sample(
            id=sid, image=f"images/{sid}.png", mask=f"masks/{sid}.png", category=category, brand=brand,
            caption=caption, split="train", width=w, height=h, sha256=imageio.sha256_bytes(image_bytes),
            product="", source="labelstudio",
        )  # fmt: skip
        return {**asdict(sample), "_bad": bad}

    def _save(self) -> None:
        _save_state(self.state_path, self.project_id, self.url, self.new)
