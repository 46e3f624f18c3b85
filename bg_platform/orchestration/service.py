"""Talking to the running BentoML service over HTTP (its contract, not its code): ask it to reload
the registry's production adapters, then prove a brand is live with one real generation.

Contract: `POST /reload` (header `Authorization: Bearer <admin token>`) -> {"brands": {brand:
version}, "refused": {brand: reason}}; `POST /generate` (multipart: image, mask, category, brand,
seed, num_images, steps, guidance) -> {"images": [base64 PNG], "base_fingerprint", "brand",
"adapter_version", "seeds"}; `GET /readyz`.

Credentials: BGP_SERVICE_URL + BGP_ADMIN_TOKEN, else the Airflow connection `bg_service`
(host/port, admin token as password).
"""

from __future__ import annotations

import base64
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from bg_platform.orchestration.runs import OrchestrationError, StopRun

log = logging.getLogger(__name__)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONNECTION_ID = "bg_service"


@dataclass(frozen=True)
class Service:
    url: str
    token: str | None  # admin token: only /reload needs it


def resolve(url: str | None = None, token: str | None = None) -> Service:
    """Explicit args, else BGP_SERVICE_URL / BGP_ADMIN_TOKEN, else the Airflow connection `bg_service`."""
    url = url or os.environ.get("BGP_SERVICE_URL")
    token = token or os.environ.get("BGP_ADMIN_TOKEN")
    if url:
        return Service(url.rstrip("/"), token)
    conn = _airflow_connection()
    if conn is not None:
        host = conn.host or "127.0.0.1"
        if "://" not in host:
            host = f"{conn.schema or 'http'}://{host}"
        return Service((f"{host}:{conn.port}" if conn.port else host).rstrip("/"), token or conn.password)
    raise StopRun(
        "no service URL: set BGP_SERVICE_URL (e.g. http://127.0.0.1:3000) and BGP_ADMIN_TOKEN, or define the "
        f'Airflow connection `{CONNECTION_ID}` (AIRFLOW_CONN_BG_SERVICE=\'{{"conn_type": "http", "host": '
        '"localhost", "port": 3000, "password": "<admin token>"}\')'
    )


def _airflow_connection():
    try:
        from airflow.sdk import Connection  # only inside an Airflow deployment
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:
        return None
    try:
        return Connection.get(CONNECTION_ID)
    except AirflowNotFoundException:
        return None


def _client(timeout: float):
    import httpx

    return httpx.Client(timeout=timeout, trust_env=False)  # no proxy from the environment for a local service


def _request(svc: Service, method: str, path: str, what: str, timeout: float, **kw) -> Any:
    import httpx

    url = f"{svc.url}{path}"
    try:
        with _client(timeout) as http:
            resp = http.request(method, url, **kw)
    except httpx.TransportError as exc:
        raise OrchestrationError(
            f"cannot reach the service at {url} to {what} ({type(exc).__name__}: {exc}); is it running "
            f"(`curl {svc.url}/readyz`)? check BGP_SERVICE_URL / the `{CONNECTION_ID}` connection"
        ) from None
    if resp.status_code in (401, 403):
        raise StopRun(
            f"the service at {url} refused to {what}: HTTP {resp.status_code} {resp.text[:300]}; set BGP_ADMIN_TOKEN "
            f"(or the `{CONNECTION_ID}` connection's password) to the service's admin token"
        )
    if resp.status_code >= 500 or resp.status_code == 429:
        raise OrchestrationError(f"the service at {url} failed to {what}: HTTP {resp.status_code} {resp.text[:500]}")
    if resp.status_code != 200:
        raise StopRun(f"the service at {url} refused to {what}: HTTP {resp.status_code} {resp.text[:500]}")
    try:
        return resp.json()
    except ValueError:
        raise OrchestrationError(f"the service at {url} answered {what} with non-JSON: {resp.text[:300]!r}") from None


def reload(svc: Service, brand: str, version: str, *, attempts: int = 3, wait_s: float = 2.0,
           timeout: float = 120.0) -> dict[str, Any]:  # fmt: skip
    """POST /reload until the service serves `brand` at `version` (it may be mid-poll of the
    registry); a refusal (e.g. the adapter's base fingerprint is not the service's base) stops."""
    if not svc.token:
        raise StopRun(
            "no admin token for POST /reload: set BGP_ADMIN_TOKEN (the token the service was started with) or the "
            f"password of the Airflow connection `{CONNECTION_ID}`"
        )
    body: dict[str, Any] = {}
    for attempt in range(1, attempts + 1):
        body = _request(svc, "POST", "/reload", "reload its adapters", timeout,
                        headers={"Authorization": f"Bearer {svc.token}"})  # fmt: skip
        refused = (body.get("refused") or {}).get(brand)
        # a refusal names its version ({"version", "reason", "message"}); one of an older version is not ours
        if refused and (not isinstance(refused, dict) or refused.get("version") in (None, version)):
            why = refused.get("message") or refused.get("reason") if isinstance(refused, dict) else refused
            raise StopRun(
                f"the service at {svc.url} refused brand {brand!r} version {version} on reload: {why}. If the "
                f"adapter's base fingerprint differs from the service's base, restart the service on the base the "
                f"adapter was trained on (after `bg_retrain_base`, the service needs a restart first)"
            )
        served = (body.get("brands") or {}).get(brand)
        if served == version:
            log.info("service %s now serves %s/%s", svc.url, brand, version)
            return body
        log.info("reload %d/%d: the service serves %s at %s, waiting for %s", attempt, attempts, brand, served, version)
        time.sleep(wait_s)
    raise OrchestrationError(
        f"after {attempts} reloads the service at {svc.url} serves brand {brand!r} at {body.get('brands', {}).get(brand)!r}, "
        f"not {version}; does it read the same registry as this DAG? (reload answered {body})"
    )


def smoke(
    svc: Service, brand: str, version: str, image_png: bytes, mask_png: bytes, category: str, *,
    seed: int = 0, steps: int = 4, guidance: float = 3.0, base_fingerprint: str | None = None, timeout: float = 300.0,
) -> dict[str, Any]:  # fmt: skip
    """One real generation for `brand`; it must come from the new adapter version, as a PNG."""
    files = {"image": ("product.png", image_png, "image/png"), "mask": ("mask.png", mask_png, "image/png")}
    data = {"category": category, "brand": brand, "seed": str(seed), "num_images": "1", "steps": str(steps),
            "guidance": str(guidance)}  # fmt: skip
    t0 = time.monotonic()
    body = _request(svc, "POST", "/generate", f"generate for brand {brand!r}", timeout, files=files, data=data)
    seconds = time.monotonic() - t0
    problems = []
    if body.get("brand") != brand:
        problems.append(f"brand is {body.get('brand')!r}, expected {brand!r}")
    if body.get("adapter_version") != version:
        problems.append(f"adapter_version is {body.get('adapter_version')!r}, expected the new {version}")
    if base_fingerprint and body.get("base_fingerprint") not in (None, base_fingerprint):
        problems.append(f"base_fingerprint {str(body.get('base_fingerprint'))[:12]}… is not the adapter's {base_fingerprint[:12]}…")
    images = body.get("images") or []
    if len(images) != 1:
        problems.append(f"{len(images)} images returned, 1 requested")
    sizes = []
    for i, b64 in enumerate(images):
        try:
            raw = base64.b64decode(b64, validate=True)
        except (ValueError, TypeError):
            problems.append(f"images[{i}] is not base64")
            continue
        if not raw.startswith(PNG_MAGIC):
            problems.append(f"images[{i}] is not a PNG")
            continue
        sizes.append(_png_size(raw))
    if problems:
        raise OrchestrationError(f"smoke test of {brand}/{version} at {svc.url}/generate failed: " + "; ".join(problems))
    return {"brand": brand, "adapter_version": version, "category": category, "seconds": round(seconds, 2),
            "image_sizes": sizes, "base_fingerprint": body.get("base_fingerprint"), "seeds": body.get("seeds")}  # fmt: skip


def _png_size(raw: bytes) -> list[int]:
    # IHDR is always the first chunk: width and height are big-endian at bytes 16..24
    return [int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")]
