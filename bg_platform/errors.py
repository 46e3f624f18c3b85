"""Errors a user can act on. The CLI prints them without a traceback and exits non-zero."""


class BgError(Exception):
    """Bad input or state, with a message that names the field, the value and the fix."""

    exit_code = 2


class ConfigError(BgError):
    pass


class ImageError(BgError):
    pass


class DataError(BgError):
    pass


class ValidationFailed(BgError):
    exit_code = 3
