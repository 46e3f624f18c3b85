"""Serving errors carry their HTTP status, so any front end (BentoML, a test, a CLI) maps them the
same way: bad input is always a 4xx with a message naming the field, never a 500."""

from __future__ import annotations

from bg_platform.errors import BgError, ImageError


class ServingError(BgError):
    status = 500


class BadRequest(ServingError):
    """A request field with a wrong value; the message names the field and the allowed values."""

    status = 400


class PayloadTooLarge(BadRequest):
    status = 413


class Unauthorized(ServingError):
    status = 401


class Forbidden(ServingError):
    status = 403


class Unavailable(ServingError):
    """Not ready yet, overloaded, or an adapter that cannot be loaded right now: retry later."""

    status = 503


def http_status(exc: BaseException) -> int:
    """The status of an error raised while serving a request (500 only for unexpected ones)."""
    if isinstance(exc, ServingError):
        return exc.status
    from bg_platform.model.pipeline import RequestError  # pipeline's own checks (mask/category)

    if isinstance(exc, RequestError | ImageError):
        return 400
    return 500
