"""The HTTP contract, framework-free: plain inputs in, `Reply(status, body, headers)` out.

The BentoML service (bentos/bg_service/service.py) only turns Replies into responses, so the
contract is testable in-process and any other front end would answer the same way.

    POST /generate       multipart: image, [mask], category, [brand, seed, num_images, steps, guidance]
                         -> {"images": [base64 PNG...], "base_fingerprint", "brand", "adapter_version", "seeds"}
    POST /generate_png   same fields (num_images 1) -> image/png; versions in X-Bgp-* headers
    GET|POST /brands     -> {"brands": {brand: version served}, "refused": {brand: {...}}, "base_fingerprint"}
    GET|POST /categories -> {"categories": [...]}
    POST /reload         Authorization: Bearer $BGP_ADMIN_TOKEN -> {"brands", "refused", "changed", "error"}
Errors: {"error": message} with 400/413 (bad input), 401/403 (admin auth), 503 (not ready,
overloaded, adapter unavailable), 500 only for unexpected failures (logged with a traceback).
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bg_platform.data.imageio import encode_png
from bg_platform.errors import BgError
from bg_platform.serving import metrics
from bg_platform.serving.engine import Engine, GenerateResult
from bg_platform.serving.errors import BadRequest, Forbidden, Unauthorized, Unavailable, http_status
from bg_platform.serving.requests import parse_generate

log = logging.getLogger(__name__)


@dataclass
class Reply:
    status: int
    body: dict | bytes
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"


def _result_json(result: GenerateResult) -> dict:
    return {
        "images": [base64.b64encode(encode_png(im)).decode("ascii") for im in result.images],
        "base_fingerprint": result.base_fingerprint,
        "brand": result.brand,
        "adapter_version": result.adapter_version,
        "seeds": list(result.seeds),
    }


def _version_headers(result: GenerateResult) -> dict[str, str]:
    return {
        "X-Bgp-Base-Fingerprint": result.base_fingerprint,
        "X-Bgp-Brand": result.brand or "",
        "X-Bgp-Adapter-Version": result.adapter_version or "",
        "X-Bgp-Seed": str(result.seeds[0]),
    }


class Api:
    def __init__(self, engine: Engine):
        self.engine = engine

    def _handle(self, endpoint: str, fn: Callable[[], Reply]) -> Reply:
        t0 = time.perf_counter()
        try:
            if not self.engine.ready:
                raise Unavailable("the base model is still loading; retry when /readyz answers 200")
            reply = fn()
        except BgError as exc:
            status = http_status(exc)
            headers = {"WWW-Authenticate": 'Bearer realm="bg-platform admin"'} if status == 401 else {}
            (log.warning if status < 500 else log.error)("%s -> %d: %s", endpoint, status, exc)
            reply = Reply(status, {"error": str(exc)}, headers)
        except Exception:  # a bug, not the client's fault: logged with traceback, answered 500
            log.exception("%s failed", endpoint)
            reply = Reply(500, {"error": "internal error; the server log has the details"})
        metrics.REQUESTS.labels(endpoint, str(reply.status)).inc()
        metrics.LATENCY.labels(endpoint).observe(time.perf_counter() - t0)
        return reply

    def _generate(self, fields: dict) -> GenerateResult:
        request = parse_generate(self.engine.config, self.engine.categories, **fields)
        return self.engine.generate(request)

    def generate(self, **fields) -> Reply:
        return self._handle("generate", lambda: Reply(200, _result_json(self._generate(fields))))

    def generate_png(self, **fields) -> Reply:
        def run() -> Reply:
            if fields.get("num_images") not in (None, 1):
                raise BadRequest(f"num_images: {fields['num_images']!r}; generate_png returns one image, use /generate")
            result = self._generate(fields)
            return Reply(200, encode_png(result.images[0]), _version_headers(result), "image/png")

        return self._handle("generate_png", run)

    def brands(self) -> Reply:
        def run() -> Reply:
            refused = {b: r.to_dict() for b, r in self.engine.follower.refused.items()}
            return Reply(200, {"brands": self.engine.brands(), "refused": refused,
                               "base_fingerprint": self.engine.base_fingerprint})

        return self._handle("brands", run)

    def categories(self) -> Reply:
        return self._handle("categories", lambda: Reply(200, {"categories": list(self.engine.categories)}))

    def reload(self, authorization: str | None) -> Reply:
        def run() -> Reply:
            self.check_admin(authorization)
            report = self.engine.reload()
            return Reply(503 if report.error else 200, report.to_dict())

        return self._handle("reload", run)

    def check_admin(self, authorization: str | None) -> None:
        var = self.engine.config.admin_token_env
        expected = os.environ.get(var, "")
        if not expected:
            raise Forbidden(f"admin endpoints are disabled: the server has no token (set {var} and restart)")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(f"send the admin token as 'Authorization: Bearer <token>' (the value of {var})")
        if not hmac.compare_digest(token.strip().encode(), expected.encode()):
            raise Forbidden(f"wrong admin token (it must equal the server's {var})")
