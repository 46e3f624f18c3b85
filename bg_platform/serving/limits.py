"""ASGI middleware refusing oversized request bodies with 413 before anything parses them.

Without it the server would spool a multi-GB upload to disk before `requests.py` could say the
file is too large. Light (no torch), so the service module can install it at import time.
"""

from __future__ import annotations

import json


def body_limit(max_upload_bytes: int) -> int:
    """Largest request body: an image and a mask at the upload limit, plus the form fields."""
    return 2 * max_upload_bytes + 64 * 1024


class BodyLimit:
    """413 for a request whose Content-Length, or streamed body, exceeds `max_bytes`.

    A streamed (chunked) body is cut at the limit; whatever the app then answers is replaced by
    the 413, so the app's own error handling (which would call a cut body a 500) never shows.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send, int(declared))
        seen = 0
        exceeded = False

        async def limited_receive():
            nonlocal seen, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message):
            if not exceeded:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)
        if exceeded:
            await self._reject(send, seen)

    async def _reject(self, send, size: int) -> None:
        body = json.dumps({"error": f"request body: {size}+ bytes exceeds the {self.max_bytes}-byte limit "
                                    "(2 x BGP_MAX_UPLOAD_BYTES + 64 KiB); send smaller files"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
