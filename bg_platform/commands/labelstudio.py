"""`bgp labelstudio serve|setup|import|pull`: the brand teams' labeling project in Label Studio.

Credentials: BGP_LS_URL + BGP_LS_TOKEN, or the Airflow connection `label_studio`. The server (`serve`)
also reads BGP_LS_PASSWORD (admin UI password, first start only) and BGP_LS_USERNAME.
"""

from __future__ import annotations

import json
import os
import sys

HELP = "Label Studio: run the server, set up the reference project, import references, pull annotations"
DEFAULT_TITLE = "bg-brand-references"
DEFAULT_FILES_ROOT = (
    "data/labelstudio"  # the server's LOCAL_FILES_DOCUMENT_ROOT; references live in brands/<brand>/
)
DEFAULT_OUT = "data/brands"


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="ls_command", required=True, metavar="<serve|setup|import|pull>")
    files_help = "the server's document root for Local Files (env BGP_LS_FILES_ROOT)"

    s = sub.add_parser("serve", help="run a headless Label Studio server in the foreground (Ctrl-C stops it)")
    s.add_argument(
        "--port", type=int, default=_env("BGP_LS_PORT", "8081"), help="exact port (env BGP_LS_PORT)"
    )
    s.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (0.0.0.0 exposes it to the network)"
    )
    s.add_argument(
        "--data-dir",
        default=_env("BGP_LS_DATA_DIR", ".ls-data"),
        help="SQLite DB + media (env BGP_LS_DATA_DIR)",
    )
    s.add_argument("--files-root", default=_env("BGP_LS_FILES_ROOT", DEFAULT_FILES_ROOT), help=files_help)
    s.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for /health UP")

    s = sub.add_parser("setup", help="create or update the labeling project and its Local Files storage")
    s.add_argument(
        "--title", default=DEFAULT_TITLE, help="project title (the same title finds the same project)"
    )
    s.add_argument(
        "--categories", default="", help="comma-separated categories (default: synth.categories in params)"
    )
    s.add_argument("--files-root", default=_env("BGP_LS_FILES_ROOT", DEFAULT_FILES_ROOT), help=files_help)

    s = sub.add_parser("import", help="import a brand's reference images (and existing masks) as tasks")
    s.add_argument(
        "dir", help="folder of images (+ masks/<stem>.png), or a dataset folder with manifest.parquet"
    )
    s.add_argument("--brand", required=True, help="brand id")
    s.add_argument("--project", type=int, help="project id (default: the project titled --title)")
    s.add_argument("--title", default=DEFAULT_TITLE)
    s.add_argument("--masks", choices=["predictions", "annotations", "none"], default="predictions",
                   help="existing masks become pre-annotations (default), finished annotations, or are ignored")  # fmt: skip
    s.add_argument("--category", default="", help="category for every reference (overrides the manifest's)")
    s.add_argument("--files-root", default=_env("BGP_LS_FILES_ROOT", DEFAULT_FILES_ROOT), help=files_help)

    s = sub.add_parser("pull", help="completed annotations -> <out>/<brand>/ manifest datasets (incremental)")
    s.add_argument("--project", type=int, required=True, help="project id")
    s.add_argument("--out", default=DEFAULT_OUT, help="root of the per-brand dataset folders")
    s.add_argument("--state", default=None, help="state file (default <out>/.labelstudio/project-<id>.json)")
    s.add_argument("--dvc", action="store_true", help="`dvc add` (and push) every changed brand folder")
    s.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    s.add_argument("--strict", action="store_true", help="exit 3 when any annotation is bad")


def run(args, params) -> int:
    return {"serve": _serve, "setup": _setup, "import": _import, "pull": _pull}[args.ls_command](args, params)


def _serve(args, params) -> int:
    from bg_platform.orchestration import labelstudio_server as server

    token = os.environ.get("BGP_LS_TOKEN")
    if not token:
        raise server.LabelStudioServerError(
            "BGP_LS_TOKEN is not set: it becomes the admin's API token at the first start of --data-dir; "
            "e.g. export BGP_LS_TOKEN=$(python -c 'import secrets; print(secrets.token_hex(20))')"
        )
    return server.serve(
        args.data_dir, args.port, token, args.files_root, host=args.host, timeout=args.timeout,
        username=_env("BGP_LS_USERNAME", server.DEFAULT_USERNAME), password=os.environ.get("BGP_LS_PASSWORD"),
    )  # fmt: skip


def _setup(args, params) -> int:
    from bg_platform.data import labelstudio as ls

    cats = [c.strip() for c in args.categories.split(",") if c.strip()] or list(params.synth.categories)
    client = ls.connect()
    res = ls.setup_project(client, args.title, cats, args.files_root)
    state = "created" if res.created else ("config updated" if res.config_updated else "up to date")
    print(
        f"project {res.project_id} {args.title!r}: {state}; categories {cats}; Local Files storage {res.storage_id}"
    )
    return 0


def _import(args, params) -> int:
    from bg_platform.data import labelstudio as ls

    client = ls.connect()
    project_id = args.project
    if project_id is None:
        project = ls.find_project(client, args.title)
        if project is None:
            raise ls.LabelStudioError(
                f"no project titled {args.title!r}; run `bgp labelstudio setup` or pass --project"
            )
        project_id = project.id
    res = ls.import_references(
        client, project_id, args.dir, args.brand, args.files_root, masks=args.masks, category=args.category
    )
    print(f"project {project_id}, brand {args.brand}: {len(res.task_ids)} tasks created ({res.with_masks} with "
          f"{args.masks} from masks), {len(res.skipped)} already imported")  # fmt: skip
    return 0


def _pull(args, params) -> int:
    from bg_platform.data import labelstudio as ls

    client = ls.connect()
    res = ls.pull_annotations(client, args.project, args.out, args.state)
    out = res.to_dict()
    if args.dvc:
        from pathlib import Path

        from bg_platform.orchestration.versioning import version_dataset

        out["dvc_md5"] = {b: version_dataset(Path(args.out) / b, Path.cwd()) for b in res.changed_brands}
    if args.json:
        print(json.dumps(out, indent=1, default=str))
    else:
        print(
            f"project {res.project_id} -> {res.out_root}: {len(res.added)} added, {len(res.updated)} updated, "
            f"{len(res.removed)} removed, {res.unchanged} unchanged; changed brands {res.changed_brands or 'none'}"
            + (f"; removed brands {res.removed_brands}" if res.removed_brands else "")
        )
    for bad in res.bad:
        where = "written for validation to flag" if bad.written else "NOT written"
        print(f"bad annotation: task {bad.task_id} (annotation {bad.annotation_id}, brand {bad.brand!r}, "
              f"sample {bad.sample_id}): {bad.reason} [{where}]", file=sys.stderr)  # fmt: skip
    return 3 if args.strict and res.bad else 0
