"""Garbage collection of what crashed writers leave behind; committed versions are never touched.

Leftovers are version folders without metadata.json (a publish that died before its commit)
and hidden `.tmp-*` files (a local atomic write that died before its rename). Their age is the
newest of the time embedded in their name and the modification times storage reports, so an
upload that is still writing files keeps getting younger.
"""

from __future__ import annotations

from datetime import datetime

from bg_platform.registry.errors import RegistryError
from bg_platform.registry.ids import is_brand, is_version_id, time_of, utc_now
from bg_platform.registry.integrity import METADATA
from bg_platform.registry.storage import TEMP_PREFIX, Storage, modified_time


def collect(store: Storage, older_than_s: float, dry_run: bool = False) -> list[str]:
    """Paths of abandoned items older than `older_than_s` seconds, deleted unless `dry_run`."""
    if isinstance(older_than_s, bool) or not isinstance(older_than_s, int | float) or older_than_s < 0:
        raise RegistryError(f"older_than_s must be a number of seconds >= 0, got {older_than_s!r}")
    now = utc_now()

    def old(*times: datetime | None) -> bool:
        known = [t for t in times if t is not None]
        return bool(known) and (now - max(known)).total_seconds() > older_than_s

    found = []
    for brand in store.listdir(store.root):
        if brand.get("type") != "directory" or not is_brand(brand["name"]):
            continue
        for vdir in store.listdir(store.path(brand["name"], "versions")):
            if vdir.get("type") != "directory" or not is_version_id(vdir["name"]):
                continue
            inside = store.listdir(vdir["path"])
            if any(e["name"] == METADATA for e in inside):
                continue  # committed: immutable, never collected
            if old(time_of(vdir["name"]), *(modified_time(e) for e in inside)):
                found.append(vdir["path"])
        for folder in ("aliases", "events", "rejections"):
            for entry in store.listdir(store.path(brand["name"], folder)):
                if entry["name"].startswith(TEMP_PREFIX) and old(time_of(entry["name"]), modified_time(entry)):
                    found.append(entry["path"])
    if not dry_run:
        for path in found:
            store.rm(path)
    return [store.uri(p) for p in found]
