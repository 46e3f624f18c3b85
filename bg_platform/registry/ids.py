"""Names that become storage paths: brand ids, version ids, event ids, file names.

Every name is checked against a strict pattern before it is joined into a path, so `..`, `/`,
spaces, upper case and empty names can never reach the filesystem (no path traversal).

Version ids are time-ordered plus random: `v20260105T121314.123456Z-1a2b3c4d`. Why not `v0001`?
A sequential id needs an atomic "create if absent" on the store to be claimed safely by
concurrent publishers. Local disks have it (O_EXCL) but not every fsspec backend does, and a
backend that silently turns "create" into "overwrite" would let two publishers write into the
same version. Time + 32 random bits needs no coordination at all: concurrent publishers on any
store get distinct ids, and ids sort chronologically (UTC, fixed width), so "newest" is a string
sort. The cost is a longer id to type; aliases (`production`, `candidate`) cover everyday use.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from bg_platform.config import BRAND_PATTERN
from bg_platform.registry.errors import RegistryError

ALIASES = ("candidate", "production")
_BRAND_RE = re.compile(BRAND_PATTERN)
_STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_STAMP = r"\d{8}T\d{6}\.\d{6}Z"
VERSION_PATTERN = rf"^v{_STAMP}-[0-9a-f]{{8}}$"
_VERSION_RE = re.compile(VERSION_PATTERN)
EVENT_PATTERN = rf"^{_STAMP}-[0-9a-f]{{8}}$"
_EVENT_RE = re.compile(EVENT_PATTERN)
# Files inside a version: flat names, no hidden files, no separators.
FILE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_FILE_RE = re.compile(FILE_PATTERN)


def utc_now() -> datetime:
    return datetime.now(UTC)


def stamp(when: datetime | None = None) -> str:
    """Fixed-width UTC timestamp that sorts chronologically as a string."""
    return (when or utc_now()).astimezone(UTC).strftime(_STAMP_FORMAT)


def parse_stamp(text: str) -> datetime:
    return datetime.strptime(text, _STAMP_FORMAT).replace(tzinfo=UTC)


def new_version_id(when: datetime | None = None) -> str:
    return f"v{stamp(when)}-{secrets.token_hex(4)}"


def new_event_id(when: datetime | None = None) -> str:
    return f"{stamp(when)}-{secrets.token_hex(4)}"


def time_of(name: str) -> datetime | None:
    """Creation time embedded in a version id, event id or temp-file name; None if there is none."""
    match = re.search(_STAMP, name)
    return parse_stamp(match.group(0)) if match else None


def check_brand(brand: object) -> str:
    if not is_brand(brand):
        raise RegistryError(
            f"brand id {brand!r} is not allowed: it must match {BRAND_PATTERN} (lower-case letters, digits, "
            "'_' and '-', at most 40 characters, starting with a letter or digit); rename the brand"
        )
    return brand


def is_brand(name: object) -> bool:
    return isinstance(name, str) and bool(_BRAND_RE.fullmatch(name))


def is_version_id(text: object) -> bool:
    return isinstance(text, str) and bool(_VERSION_RE.fullmatch(text))


def check_version(version: object) -> str:
    if not is_version_id(version):
        raise RegistryError(
            f"version id {version!r} is malformed: expected the form v<UTC time>-<8 hex>, e.g. "
            f"{new_version_id()!r} (see `bgp registry list <brand>` for existing versions)"
        )
    return version  # type: ignore[return-value]


def is_event_id(text: str) -> bool:
    return bool(_EVENT_RE.fullmatch(text))


def check_alias(alias: object) -> str:
    if alias not in ALIASES:
        raise RegistryError(f"alias {alias!r} is not allowed; allowed aliases: {', '.join(ALIASES)}")
    return alias  # type: ignore[return-value]


def check_file_name(name: str) -> str:
    if not _FILE_RE.fullmatch(name):
        raise RegistryError(
            f"adapter file name {name!r} is not allowed: it must match {FILE_PATTERN} (no folders, no hidden "
            "files); rename the file"
        )
    return name
