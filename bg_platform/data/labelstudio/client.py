"""Connecting to Label Studio: credentials from the environment or an Airflow connection, clear
errors for an unreachable server or a bad token, authenticated file downloads."""

from __future__ import annotations

import logging
import os
from urllib.parse import parse_qsl, urlsplit

from bg_platform.data.labelstudio.constants import IMAGE, LabelStudioError, LabelStudioUnavailable

log = logging.getLogger(__name__)


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
