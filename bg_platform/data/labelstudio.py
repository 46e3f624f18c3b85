"""Label Studio as the brand teams' labeling front end: client, labeling config, project setup,
reference import, and the incremental pull of completed annotations into per-brand datasets.

A pulled brand dataset is a manifest folder (`<out_root>/<brand>/manifest.parquet`, images/, masks/)
holding references only (split "train", source "labelstudio"). Masks come from the brush RLE through
the SDK's own decoder. The SDK (~2.5 s to import) is only imported by the functions that talk to the
server; pass them a client from `connect()`.
"""

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
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import quoteattr

import numpy as np

from bg_platform.config import BRAND_PATTERN, CATEGORY_PATTERN
from bg_platform.data import imageio, manifest
from bg_platform.errors import BgError, DataError

log = logging.getLogger(__name__)

# Control and object names in the labeling config = keys in the annotation result JSON.
IMAGE, MASK, CATEGORY, STYLE, BRAND = "image", "mask", "category", "style", "brand"
PRODUCT_LABEL = "product"
IMPORT_MODEL_VERSION = "bgp-import"
FILES_SUBDIR = "brands"  # Local Files storage path = <files_root>/brands (it may not be the root itself)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
STATE_FORMAT = 1


class LabelStudioError(BgError):
    pass


class LabelStudioUnavailable(LabelStudioError):
    pass


# ---------------------------------------------------------------------------------------------
# Labeling config


def build_label_config(categories: Sequence[str]) -> str:
    """The brand-reference labeling interface: image, product brush mask, one category, style notes."""
    cats = list(categories)
    problems = [c for c in cats if not isinstance(c, str) or not re.match(CATEGORY_PATTERN, c)]
    if not cats or problems:
        raise DataError(
            f"categories: {problems or cats!r} invalid; give 1+ names matching {CATEGORY_PATTERN} "
            f"(lower-case letters, digits, space, _ or -)"
        )
    dupes = sorted({c for c in cats if cats.count(c) > 1})
    if dupes:
        raise DataError(f"categories: {dupes} listed more than once; list each category once")
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in cats)
    return (
        "<View>\n"
        f'  <Header value="Brand: ${BRAND}"/>\n'
        f'  <Text name="{BRAND}" value="${BRAND}"/>\n'
        f'  <Image name="{IMAGE}" value="${IMAGE}" zoom="true"/>\n'
        f'  <BrushLabels name="{MASK}" toName="{IMAGE}">\n'
        f'    <Label value="{PRODUCT_LABEL}" background="#ff0000"/>\n'
        "  </BrushLabels>\n"
        f'  <Choices name="{CATEGORY}" toName="{IMAGE}" choice="single" required="true" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        f'  <TextArea name="{STYLE}" toName="{IMAGE}" rows="2" maxSubmissions="1" '
        'placeholder="brand style: palette, materials, lighting, layout"/>\n'
        "</View>\n"
    )


def config_categories(label_config: str) -> list[str]:
    """The category choices of a labeling config built by `build_label_config`."""
    root = ET.fromstring(label_config)
    for choices in root.iter("Choices"):
        if choices.get("name") == CATEGORY:
            return [c.get("value", "") for c in choices.iter("Choice")]
    return []


def brush_result(mask: np.ndarray) -> dict[str, Any]:
    """A product mask (H, W) uint8, product = 255, as a Label Studio brush result (SDK RLE)."""
    from label_studio_sdk.converter.brush import mask2rle

    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise DataError(f"mask: expected a (H, W) uint8 array, got shape {mask.shape} dtype {mask.dtype}")
    h, w = mask.shape
    return {
        "from_name": MASK, "to_name": IMAGE, "type": "brushlabels", "original_width": w, "original_height": h,
        "image_rotation": 0, "value": {"format": "rle", "rle": mask2rle(mask), "brushlabels": [PRODUCT_LABEL]},
    }  # fmt: skip


def choice_result(category: str) -> dict[str, Any]:
    return {"from_name": CATEGORY, "to_name": IMAGE, "type": "choices", "value": {"choices": [category]}}


def text_result(text: str) -> dict[str, Any]:
    return {"from_name": STYLE, "to_name": IMAGE, "type": "textarea", "value": {"text": [text]}}


def decode_brush(result: dict[str, Any]) -> np.ndarray:
    """One brush result -> (H, W) uint8 alpha, decoded by the SDK's converter."""
    from label_studio_sdk.converter.brush import decode_rle

    value = result.get("value", {})
    w, h = int(result["original_width"]), int(result["original_height"])
    flat = decode_rle(value["rle"])
    if flat.size != w * h * 4:
        raise ValueError(f"RLE holds {flat.size} values, expected {w}x{h}x4 = {w * h * 4}")
    return flat.reshape(h, w, 4)[:, :, 3]


# ---------------------------------------------------------------------------------------------
# Client


def resolve_credentials(url: str | None = None, token: str | None = None) -> tuple[str, str]:
    """Explicit args, else BGP_LS_URL / BGP_LS_TOKEN, else the Airflow connection `label_studio`."""
    url = url or os.environ.get("BGP_LS_URL")
    token = token or os.environ.get("BGP_LS_TOKEN")
    if token:
        return (url or "http://127.0.0.1:8081").rstrip("/"), token
    try:
        from airflow.sdk import Connection  # optional: only inside an Airflow deployment
    except ImportError:
        Connection = None  # noqa: N806
    if Connection is not None:
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = Connection.get("label_studio")
        except AirflowNotFoundException:
            conn = None
        if conn is not None and not conn.password:
            raise LabelStudioError(
                "the Airflow connection `label_studio` has no password; put the Label Studio API token there"
            )
        if conn is not None:
            host = conn.host or "127.0.0.1"
            if "://" not in host:
                host = f"{conn.schema or 'http'}://{host}"
            return (url or (f"{host}:{conn.port}" if conn.port else host)).rstrip("/"), conn.password
    raise LabelStudioError(
        "no Label Studio token: set BGP_LS_TOKEN (and BGP_LS_URL, default http://127.0.0.1:8081), or define "
        'the Airflow connection `label_studio` (e.g. AIRFLOW_CONN_LABEL_STUDIO=\'{"conn_type": "http", '
        '"host": "localhost", "port": 8081, "password": "<token>"}\')'
    )


def connect(url: str | None = None, token: str | None = None, timeout: float = 60.0):
    """A checked `label_studio_sdk.LabelStudio` client (the token is tried once with whoami)."""
    from label_studio_sdk import LabelStudio

    url, token = resolve_credentials(url, token)
    # always both: the SDK's defaults (localhost:8000, env read at import) are wrong here
    client = LabelStudio(base_url=url, api_key=token, timeout=timeout)
    call(client, "check the token (whoami)", lambda: client.users.whoami())
    return client


def base_url(client) -> str:
    return client._client_wrapper.get_base_url().rstrip("/")


def call(client, what: str, fn):
    """Run one SDK call; network and API failures become errors that name the server and the fix."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    url = base_url(client)
    try:
        return fn()
    except httpx.TransportError as exc:
        raise LabelStudioUnavailable(
            f"cannot reach Label Studio at {url} to {what} ({type(exc).__name__}: {exc}); check that the server "
            f"runs (`bgp labelstudio serve`, or `curl {url}/health`), and BGP_LS_URL / the `label_studio` "
            f"Airflow connection"
        ) from None
    except ApiError as exc:
        if exc.status_code == 401:
            raise LabelStudioError(
                f"Label Studio at {url} rejected the token while trying to {what} (HTTP 401: {exc.body}); check "
                f"BGP_LS_TOKEN (the admin token the server's data dir was first started with)"
            ) from None
        raise LabelStudioError(
            f"Label Studio at {url} refused to {what}: HTTP {exc.status_code} {exc.body}"
        ) from None


def fetch_file(client, data_url: str, what: str = "a file") -> bytes:
    """Bytes of a file Label Studio serves (`/data/local-files/?d=...`, `/data/upload/...`), with auth.

    Only URLs on the client's own server are fetched: our token must not travel to other hosts."""
    base = urlsplit(base_url(client))
    if not data_url:
        raise ValueError(f"task data has no {IMAGE!r} URL")
    parts = urlsplit(data_url)
    if parts.scheme and (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
        raise ValueError(
            f"image URL {data_url!r} is not on {base.geturl()}; import images through Label Studio"
        )
    # the SDK's own HTTP client adds the right auth header (legacy Token or refreshed JWT Bearer)
    http = client._client_wrapper.httpx_client
    resp = call(
        client,
        f"download {data_url}",
        lambda: http.request(parts.path, method="GET", params=dict(parse_qsl(parts.query))),
    )
    if resp.status_code >= 500:
        raise LabelStudioUnavailable(
            f"Label Studio at {base.geturl()} failed to serve {what} ({data_url}): HTTP {resp.status_code}; "
            f"the pull stopped and left the datasets as they were: fix that URL or the server (see its log)"
        )
    if resp.status_code != 200:
        raise ValueError(
            f"HTTP {resp.status_code} for {data_url}; the file must exist under the server's files root and a "
            f"Local Files storage must cover it (run `bgp labelstudio setup`)"
        )
    return resp.content


# ---------------------------------------------------------------------------------------------
# Project setup and reference import


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


# ---------------------------------------------------------------------------------------------
# Pull: completed annotations -> per-brand manifest datasets, incrementally


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
