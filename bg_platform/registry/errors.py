"""Registry errors. All are BgError subclasses, so the CLI prints them without a traceback."""

from __future__ import annotations

from bg_platform.errors import BgError


class RegistryError(BgError):
    """Bad registry input or state (unknown brand/version/alias, bad id, refused operation)."""


class UnknownName(RegistryError):
    """A brand, version or alias that does not exist; the message lists the allowed values."""


class VersionExists(RegistryError):
    """Refused: versions are immutable and a version id is never written twice."""


class RejectedVersion(RegistryError):
    """Refused: the version was rejected by the gate; pass force=True (CLI --force) to override."""


class AdapterIntegrityError(RegistryError):
    """A stored file does not match the sha256 (or size) recorded when the version was published."""

    exit_code = 4


class FingerprintMismatch(RegistryError):
    """The adapter was trained over a different base model than the one it is loaded into."""

    exit_code = 4
