"""Adapter registry: immutable, verified per-brand LoRA adapter versions on any fsspec URL.

See store.py for the layout on storage and the atomicity argument, ids.py for version ids.
"""

from bg_platform.registry.errors import (
    AdapterIntegrityError,
    FingerprintMismatch,
    RegistryError,
    RejectedVersion,
    UnknownName,
    VersionExists,
)
from bg_platform.registry.ids import ALIASES, VERSION_PATTERN
from bg_platform.registry.metadata import Event, FileEntry, VersionInfo, VersionMetadata
from bg_platform.registry.store import Registry

__all__ = [
    "ALIASES",
    "VERSION_PATTERN",
    "AdapterIntegrityError",
    "Event",
    "FileEntry",
    "FingerprintMismatch",
    "Registry",
    "RegistryError",
    "RejectedVersion",
    "UnknownName",
    "VersionExists",
    "VersionInfo",
    "VersionMetadata",
]
