"""DVC-versioning of dataset folders: `dvc add` a pulled brand dataset and return its md5, the
training-data hash an adapter records; `dvc push` it when the repo has a default remote."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import yaml

from bg_platform.errors import BgError

log = logging.getLogger(__name__)


class VersioningError(BgError):
    pass


def _dvc(args: list[str], repo_root: Path, timeout: float) -> subprocess.CompletedProcess:
    # the dvc of this interpreter's venv, whatever is first on PATH; --wait-for-lock because parallel
    # DAG tasks version different brands of the same repo and DVC holds a repo-wide lock
    cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", *args]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    try:
        proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise VersioningError(
            f"`dvc {' '.join(args)}` in {repo_root} took over {timeout:.0f} s; is another dvc stuck?"
        ) from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise VersioningError(
            f"`dvc {' '.join(args)}` failed in {repo_root} (exit {proc.returncode}):\n{tail}"
        )
    return proc


def default_remote(repo_root: str | Path) -> str | None:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "config", "core.remote"], cwd=repo_root, capture_output=True, text=True,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )  # fmt: skip
    if proc.returncode != 0:  # "dvc config" exits non-zero when the option is unset
        return None
    return proc.stdout.strip() or None


def version_dataset(
    path: str | Path, repo_root: str | Path, *, push: bool | None = None, timeout: float = 600.0
) -> str:
    """`dvc add` a dataset folder inside a DVC repo and return the md5 recorded in its .dvc file
    (for a folder `<md5>.dir`, exactly as DVC writes it). `push`: None = push when a default remote is
    configured, True = push or fail, False = never. Git-adding the .dvc file is left to the caller."""
    repo_root = Path(repo_root).resolve()
    path = Path(path).resolve()
    if not (repo_root / ".dvc").is_dir():
        raise VersioningError(
            f"repo_root: {repo_root} is not a DVC repo (no .dvc/); run `dvc init` there first"
        )
    try:
        rel = path.relative_to(repo_root)
    except ValueError:
        raise VersioningError(
            f"path: {path} is outside the DVC repo {repo_root}; pull the dataset inside it"
        ) from None
    if not path.exists():
        raise VersioningError(f"path: {path} does not exist; pull the dataset first")
    try:
        _dvc(["add", str(rel)], repo_root, timeout)
    except VersioningError as exc:
        if "git-ignored" not in str(exc):
            raise
        raise VersioningError(
            f"{exc}\n{rel}.dvc would be git-ignored, so the version could not be committed; un-ignore the "
            f"dataset root in .gitignore (git cannot re-include below an ignored folder: replace `/{rel.parts[0]}/` "
            f"by `/{rel.parts[0]}/*` and add `!/{rel.parent}/`), or pull elsewhere"
        ) from None
    dvc_file = path.with_name(path.name + ".dvc")
    try:
        outs = yaml.safe_load(dvc_file.read_text())["outs"]
        md5 = str(outs[0]["md5"])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
        raise VersioningError(
            f"{dvc_file}: no outs[0].md5 after `dvc add` ({exc}); inspect the file"
        ) from None
    remote = default_remote(repo_root)
    if push is True and remote is None:
        raise VersioningError(
            f"push requested but {repo_root} has no default DVC remote; `dvc remote add -d <name> <url>`"
        )
    if push is not False and remote is not None:
        _dvc(["push", str(dvc_file.relative_to(repo_root))], repo_root, timeout)
        log.info("pushed %s (%s) to DVC remote %s", rel, md5, remote)
    return md5
