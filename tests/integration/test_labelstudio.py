"""Label Studio end to end, against a real server (fixture `labelstudio`) and the real SDK:
project setup, reference import, incremental pull into per-brand manifest datasets, bad annotations,
CLI errors, DVC versioning of a pulled brand."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bg_platform.data import imageio, manifest
from bg_platform.data import labelstudio as ls

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CATEGORIES = ["marble", "wood", "fabric sofa"]


@pytest.fixture(scope="module")
def client(labelstudio):
    return ls.connect(labelstudio.url, labelstudio.token)


def _mask(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), np.uint8)
    y, x = rng.integers(2, h // 3), rng.integers(2, w // 3)
    m[y : y + h // 2, x : x + w // 2] = 255
    m[rng.integers(0, h), rng.integers(0, w)] = 255  # a stray pixel: RLE must keep single pixels too
    return m


def _dataset(root: Path, brand: str, n: int, seed: int) -> dict[str, dict]:
    """A manifest-layout dataset of `n` random references; returns name -> expected pull values."""
    rng = np.random.default_rng(seed)
    samples, expected = [], {}
    for i in range(n):
        h, w = 36 + 2 * i, 48
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = _mask(h, w, seed * 100 + i)
        name = f"{brand}-ref{i}"
        data = imageio.write_png(root / "images" / f"{name}.png", img)
        imageio.write_png(root / "masks" / f"{name}.png", mask)
        cat, cap = CATEGORIES[i % len(CATEGORIES)], f"{brand} style {i}: warm light"
        samples.append(
            manifest.Sample(
                name,
                f"images/{name}.png",
                f"masks/{name}.png",
                cat,
                brand,
                cap,
                "train",
                w,
                h,
                imageio.sha256_bytes(data),
            )  # fmt: skip
        )
        expected[f"{brand}/{name}"] = {
            "image": img,
            "mask": mask,
            "category": cat,
            "caption": cap,
            "brand": brand,
        }
    manifest.write(manifest.to_frame(samples), root)
    return expected


def _project(client, labelstudio, tmp_path, brands=(("acme", 3), ("zenith", 2))):
    """A fresh project with annotated references of several brands, imported through the SDK."""
    res = ls.setup_project(client, f"refs-{uuid.uuid4().hex[:8]}", CATEGORIES, labelstudio.files_root)
    expected = {}
    for k, (brand, n) in enumerate(brands):
        # brand ids are unique per test run: every project shares the server's files root
        brand = f"{brand}-{uuid.uuid4().hex[:6]}"
        expected.update(_dataset(tmp_path / "src" / brand, brand, n, seed=k + 1))
        ls.import_references(client, res.project_id, tmp_path / "src" / brand, brand, labelstudio.files_root,
                             masks="annotations")  # fmt: skip
    return res.project_id, expected


def _tasks(client, project_id) -> dict[str, object]:
    return {t.data["ref"]: t for t in client.tasks.list(project=project_id, fields="all")}


def _read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_setup_is_idempotent_and_updates_categories(client, labelstudio):
    title = f"setup-{uuid.uuid4().hex[:8]}"
    first = ls.setup_project(client, title, ["marble", "wood"], labelstudio.files_root)
    again = ls.setup_project(client, title, ["marble", "wood"], labelstudio.files_root)
    assert first.created and not again.created and not again.config_updated
    assert (again.project_id, again.storage_id) == (first.project_id, first.storage_id)
    grown = ls.setup_project(client, title, ["marble", "wood", "tiles"], labelstudio.files_root)
    assert grown.project_id == first.project_id and grown.config_updated and not grown.created
    stored = client.projects.get(id=first.project_id).label_config
    assert ls.config_categories(stored) == ["marble", "wood", "tiles"]
    storages = list(client.import_storage.local.list(project=first.project_id))
    assert [s.id for s in storages] == [first.storage_id]
    assert Path(storages[0].path) == labelstudio.files_root / ls.FILES_SUBDIR


def test_setup_refuses_to_drop_a_category_still_in_use(client, labelstudio, tmp_path):
    title, brand = f"drop-{uuid.uuid4().hex[:8]}", f"drop-{uuid.uuid4().hex[:6]}"
    res = ls.setup_project(client, title, CATEGORIES, labelstudio.files_root)
    _dataset(tmp_path / "src", brand, 1, seed=3)  # one reference, annotated "marble"
    ls.import_references(
        client, res.project_id, tmp_path / "src", brand, labelstudio.files_root, masks="annotations"
    )
    with pytest.raises(ls.LabelStudioError, match=r"dropping \['marble'\].*relabel"):
        ls.setup_project(client, title, ["wood", "fabric sofa"], labelstudio.files_root)
    assert ls.config_categories(client.projects.get(id=res.project_id).label_config) == CATEGORIES


def test_pull_writes_brand_datasets_exactly(client, labelstudio, tmp_path):
    project_id, expected = _project(client, labelstudio, tmp_path)
    out = tmp_path / "brands"
    res = ls.pull_annotations(client, project_id, out)
    brands = sorted({e["brand"] for e in expected.values()})
    assert res.changed_brands == brands and res.bad == [] and len(res.added) == len(expected)
    tasks = _tasks(client, project_id)
    for brand in brands:
        frame = manifest.read(out / brand)
        assert set(frame["split"]) == {"train"} and set(frame["source"]) == {"labelstudio"}
        assert set(frame["brand"]) == {brand}
        by_id = {r.id: r for r in frame.itertuples()}
        refs = [k for k, e in expected.items() if e["brand"] == brand]
        assert len(by_id) == len(refs)
        for ref in refs:
            e, row = expected[ref], by_id[f"ls{project_id}-{tasks[ref].id}"]
            assert (row.category, row.caption) == (e["category"], e["caption"])
            assert (row.width, row.height) == (e["image"].shape[1], e["image"].shape[0])
            np.testing.assert_array_equal(_read_png(out / brand / row.mask), e["mask"])
            np.testing.assert_array_equal(imageio.read_image(out / brand / row.image).rgb, e["image"])
            assert row.sha256 == imageio.sha256_file(out / brand / row.image)


def test_second_pull_does_nothing_and_update_repulls_only_that_one(client, labelstudio, tmp_path):
    project_id, expected = _project(client, labelstudio, tmp_path)
    out = tmp_path / "brands"
    ls.pull_annotations(client, project_id, out)
    snapshot = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}

    again = ls.pull_annotations(client, project_id, out)
    assert (again.changed_brands, again.added, again.updated, again.removed) == ([], [], [], [])
    assert again.unchanged == len(expected)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == snapshot

    # change the mask of one reference of the first brand
    ref = next(iter(expected))
    brand, task = expected[ref]["brand"], _tasks(client, project_id)[ref]
    ann = task.annotations[0]
    new_mask = np.zeros_like(expected[ref]["mask"])
    new_mask[3:9, 4:20] = 255
    result = [ls.brush_result(new_mask) if r["type"] == "brushlabels" else r for r in ann["result"]]
    client.annotations.update(id=ann["id"], result=result)

    res = ls.pull_annotations(client, project_id, out)
    sid = f"ls{project_id}-{task.id}"
    assert (res.changed_brands, res.updated, res.added, res.removed) == ([brand], [sid], [], [])
    np.testing.assert_array_equal(_read_png(out / brand / "masks" / f"{sid}.png"), new_mask)
    # every other file was carried over (same inode: linked, not downloaded again); the other brand untouched
    rewritten = {out / brand / manifest.MANIFEST_NAME, out / brand / "images" / f"{sid}.png",
                 out / brand / "masks" / f"{sid}.png", res.state_path}  # fmt: skip
    for path, (ino, _) in snapshot.items():
        if path not in rewritten:
            assert path.stat().st_ino == ino, f"{path} was rewritten"

    # delete one annotation of the second brand: its sample disappears
    other = next(k for k, e in expected.items() if e["brand"] != brand)
    otask = _tasks(client, project_id)[other]
    client.annotations.delete(id=otask.annotations[0]["id"])
    res = ls.pull_annotations(client, project_id, out)
    osid = f"ls{project_id}-{otask.id}"
    assert res.removed == [osid] and res.changed_brands == [expected[other]["brand"]]
    assert osid not in set(manifest.read(out / expected[other]["brand"])["id"])
    assert not (out / expected[other]["brand"] / "images" / f"{osid}.png").exists()


def test_failed_pull_leaves_previous_dataset_and_crash_is_recovered(client, labelstudio, tmp_path):
    project_id, expected = _project(client, labelstudio, tmp_path, brands=(("atomic", 2),))
    out = tmp_path / "brands"
    (brand,) = ls.pull_annotations(client, project_id, out).changed_brands
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    first, second = (t for _, t in sorted(_tasks(client, project_id).items()))
    ann = first.annotations[0]
    client.annotations.update(id=ann["id"], result=[r for r in ann["result"] if r["type"] != "textarea"])
    # the server answers 500 for a path outside its files root: the pull must stop mid-brand
    client.tasks.update(
        id=str(second.id), data={**second.data, "image": "/data/local-files/?d=../outside.png"}
    )
    with pytest.raises(ls.LabelStudioUnavailable, match=f"task {second.id}.*HTTP 500"):
        ls.pull_annotations(client, project_id, out)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in out.iterdir() if p.name.startswith(f".{brand}")] == []

    client.tasks.update(id=str(second.id), data=second.data)
    # a crash between the two renames of the swap leaves only `.brand.old-*`: the next pull restores it
    (out / brand).rename(out / f".{brand}.old-deadbeef")
    res = ls.pull_annotations(client, project_id, out)
    assert res.updated == [f"ls{project_id}-{first.id}"] and res.unchanged == 1
    assert manifest.read(out / brand).set_index("id").loc[f"ls{project_id}-{first.id}", "caption"] == ""


def test_bad_annotations_are_written_and_listed(client, labelstudio, tmp_path):
    project_id, expected = _project(client, labelstudio, tmp_path, brands=(("bad", 4),))
    tasks = _tasks(client, project_id)
    refs = sorted(tasks)
    empty, nobrush, nocat = (tasks[r] for r in refs[:3])

    def replace(task, keep):
        ann = task.annotations[0]
        result = [keep(r) for r in ann["result"]]
        client.annotations.update(id=ann["id"], result=[r for r in result if r is not None])

    replace(
        empty,
        lambda r: (
            ls.brush_result(np.zeros_like(expected[refs[0]]["mask"])) if r["type"] == "brushlabels" else r
        ),
    )
    replace(nobrush, lambda r: None if r["type"] == "brushlabels" else r)
    replace(nocat, lambda r: None if r["type"] == "choices" else r)

    out = tmp_path / "brands"
    res = ls.pull_annotations(client, project_id, out)
    reasons = {b.task_id: b.reason for b in res.bad}
    assert reasons == {
        empty.id: "empty brush mask",
        nobrush.id: "no brush mask",
        nocat.id: "missing category",
    }
    assert all(b.written for b in res.bad)
    brand = expected[refs[0]]["brand"]
    frame = manifest.read(out / brand).set_index("id")
    assert len(frame) == 4  # bad rows are in the dataset, for validation to flag
    for task in (empty, nobrush):
        mask = _read_png(out / brand / frame.loc[f"ls{project_id}-{task.id}", "mask"])
        assert mask.shape == expected[task.data["ref"]]["mask"].shape and not mask.any()
    assert frame.loc[f"ls{project_id}-{nocat.id}", "category"] == ""
    # still listed on a pull with nothing new: the dataset still holds them
    assert {b.task_id for b in ls.pull_annotations(client, project_id, out).bad} == set(reasons)


def test_import_plain_folder_as_predictions_is_idempotent(client, labelstudio, tmp_path):
    res = ls.setup_project(client, f"plain-{uuid.uuid4().hex[:8]}", CATEGORIES, labelstudio.files_root)
    brand = f"plain-{uuid.uuid4().hex[:6]}"
    src = tmp_path / "plain"
    for i in range(2):
        imageio.write_png(src / f"shot {i}.png", np.full((32, 40, 3), 40 * i, np.uint8))
        imageio.write_png(src / "masks" / f"shot {i}.png", _mask(32, 40, i))
    first = ls.import_references(client, res.project_id, src, brand, labelstudio.files_root)
    assert len(first.task_ids) == 2 and first.with_masks == 2
    again = ls.import_references(client, res.project_id, src, brand, labelstudio.files_root)
    assert again.task_ids == [] and sorted(again.skipped) == [f"{brand}/shot-0", f"{brand}/shot-1"]
    tasks = list(client.tasks.list(project=res.project_id, fields="all"))
    assert len(tasks) == 2 and all(t.annotations == [] for t in tasks)
    preds = list(client.predictions.list(task=tasks[0].id))
    assert preds and preds[0].model_version == ls.IMPORT_MODEL_VERSION
    # pre-annotations are not references yet: nothing to pull until someone submits
    pulled = ls.pull_annotations(client, res.project_id, tmp_path / "brands")
    assert pulled.changed_brands == [] and pulled.added == []


def test_wrong_token_and_busy_port_are_clear_errors(labelstudio, tmp_path):
    from bg_platform.orchestration import labelstudio_server as server

    with pytest.raises(ls.LabelStudioError, match="rejected the token.*BGP_LS_TOKEN"):
        ls.connect(labelstudio.url, "not-the-token-0000")
    port = int(labelstudio.url.rsplit(":", 1)[1])
    with pytest.raises(server.LabelStudioServerError, match=f"port {port} .* already in use"):
        server.start_server(tmp_path / "d", port, "x" * 20, tmp_path / "f", password="pw-123456")


def _bgp(args, env_extra, cwd=REPO, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BGP_LS_", "AIRFLOW_CONN_"))}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "bg_platform", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def test_cli_server_down_names_url_without_traceback(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = _bgp(
        ["labelstudio", "pull", "--project", "1", "--out", str(tmp_path)],
        {"BGP_LS_URL": url, "BGP_LS_TOKEN": "t" * 20},
    )
    assert proc.returncode == 2, proc.stderr
    assert f"cannot reach Label Studio at {url}" in proc.stderr and "bgp labelstudio serve" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_setup_import_pull(labelstudio, tmp_path):
    env = {"BGP_LS_URL": labelstudio.url, "BGP_LS_TOKEN": labelstudio.token}
    title, brand = f"cli-{uuid.uuid4().hex[:8]}", f"cli-{uuid.uuid4().hex[:6]}"
    files = ["--files-root", str(labelstudio.files_root)]
    setup = _bgp(["labelstudio", "setup", "--title", title, "--categories", "marble,wood", *files], env)
    assert setup.returncode == 0, setup.stderr
    project_id = int(setup.stdout.split()[1])
    expected = _dataset(tmp_path / "src", brand, 2, seed=7)
    imp = _bgp(["labelstudio", "import", str(tmp_path / "src"), "--brand", brand, "--title", title,
                "--masks", "annotations", *files], env)  # fmt: skip
    assert imp.returncode == 0, imp.stderr
    assert "2 tasks created" in imp.stdout
    pull = _bgp(
        ["labelstudio", "pull", "--project", str(project_id), "--out", str(tmp_path / "out"), "--json"], env
    )
    assert pull.returncode == 0, pull.stderr
    res = json.loads(pull.stdout)
    assert res["changed_brands"] == [brand] and len(res["added"]) == len(expected)


def test_version_pulled_dataset_with_dvc(client, labelstudio, tmp_path):
    from bg_platform.orchestration.versioning import VersioningError, version_dataset

    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@t"], ["git", "config", "user.name", "t"],
                [sys.executable, "-m", "dvc", "init", "-q"]):  # fmt: skip
        subprocess.run(cmd, cwd=repo, check=True, env=env)
    project_id, expected = _project(client, labelstudio, tmp_path, brands=(("dvc", 2),))
    res = ls.pull_annotations(client, project_id, repo / "data" / "brands")
    (brand,) = res.changed_brands
    folder = repo / "data" / "brands" / brand
    md5 = version_dataset(folder, repo)
    assert md5.endswith(".dir") and md5 in (folder.parent / f"{brand}.dvc").read_text()
    assert version_dataset(folder, repo) == md5  # same content, same hash
    (repo / ".gitignore").write_text("/data/\n")  # the repo's own layout ignores data/: say how to fix it
    with pytest.raises(VersioningError, match=r"git-ignored.*`/data/\*`.*`!/data/brands/`"):
        version_dataset(folder, repo)
    (repo / ".gitignore").write_text("/data/*\n!/data/brands/\n")

    store = tmp_path / "dvc-store"
    subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "add", "-q", "-d", "store", str(store)],
        cwd=repo,
        check=True,
        env=env,
    )
    task = next(iter(_tasks(client, project_id).values()))
    ann = task.annotations[0]
    client.annotations.update(id=ann["id"], result=[r for r in ann["result"] if r["type"] != "textarea"])
    ls.pull_annotations(client, project_id, repo / "data" / "brands")
    md5_new = version_dataset(folder, repo)
    assert md5_new != md5
    assert (store / "files" / "md5" / md5_new[:2] / md5_new[2:]).exists()  # pushed: a remote is configured


@pytest.mark.slow  # a second first-start (migrations): ~45-75 s
def test_cli_serve_ignores_leaked_env_and_stops_on_sigterm(labelstudio_venv, tmp_path):
    import signal
    import time

    from bg_platform.orchestration import labelstudio_server as server

    port, token = server.free_port(), "serve-token-0123456789"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGP_LS_")}
    # what leaks into Label Studio's get_env() unless scrubbed: another user, port and host
    env.update(
        {
            "USERNAME": "leak@evil.example",
            "PASSWORD": "leak",
            "PORT": str(port + 1),
            "HOST": "http://evil.example",
        }
    )
    env.update({"BGP_LS_TOKEN": token, "BGP_LS_PASSWORD": "serve-pw-123"})
    log = tmp_path / "serve.log"
    args = [
        "labelstudio",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "d"),
        "--files-root",
        str(tmp_path / "f"),
    ]
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bg_platform", *args], cwd=REPO, env=env, stdout=fh, stderr=fh
        )
    try:
        deadline = time.monotonic() + 400
        while "UP at" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        assert f"UP at http://127.0.0.1:{port}" in log.read_text(), log.read_text()
        me = ls.connect(f"http://127.0.0.1:{port}", token).users.whoami()
        assert me.email == server.DEFAULT_USERNAME
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
        assert not server.port_in_use("127.0.0.1", port)
    finally:
        if proc.poll() is None:
            proc.kill()
