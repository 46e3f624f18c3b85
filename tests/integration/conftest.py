"""Fixtures for tests against real servers. One section per server; each section is self-contained
(its heavier imports inside its fixtures) so sections can be added or removed independently."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest
from airflow_fixtures import *  # noqa: F403  Airflow fixtures (pytest 9 refuses pytest_plugins in a non-root conftest)
from service_fixtures import *  # noqa: F403  BentoML service fixtures (owner: serving)

# =============================================================================================
# Label Studio (owner: orchestration / Label Studio). A real server from .venv-ls on a free port,
# SQLite in a temp data dir, started once per session (~45-75 s: the first start runs migrations).
# =============================================================================================


class LabelStudioServer(NamedTuple):
    url: str
    token: str
    files_root: Path  # the server's LOCAL_FILES_DOCUMENT_ROOT


@pytest.fixture(scope="session")
def labelstudio_venv() -> Path:
    """The Label Studio server venv; skips the test when it is missing."""
    from bg_platform.orchestration import labelstudio_server as server

    venv = server.default_venv()
    if not (venv / "bin" / "label-studio").exists():
        pytest.skip(f"Label Studio server venv {venv} is missing; run `make setup-labelstudio`")
    return venv


@pytest.fixture(scope="session")
def labelstudio(labelstudio_venv, tmp_path_factory):
    """(url, token, files_root) of a running Label Studio; skipped only when .venv-ls is missing."""
    import secrets

    from bg_platform.orchestration import labelstudio_server as server

    venv = labelstudio_venv
    root = tmp_path_factory.mktemp("labelstudio")
    token = secrets.token_hex(20)
    handle = server.start_server(
        root / "data",
        server.free_port(),
        token,
        root / "files",
        password=secrets.token_urlsafe(16),
        venv=venv,
    )
    try:
        yield LabelStudioServer(handle.url, token, handle.files_root)
    finally:
        handle.stop()


# ======================================= end Label Studio ====================================
