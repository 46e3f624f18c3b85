"""The adapter registry: immutable versions of per-brand LoRA adapters on any fsspec URL.

Layout under the root (`<root>` is a local folder, `memory://...`, `s3://...`, `gs://...`):

    <brand>/versions/<version>/.claim              who uploads this version (written first)
    <brand>/versions/<version>/<name>.safetensors  weights (+ optional .json/.txt/.yaml configs)
    <brand>/versions/<version>/metadata.json       written LAST: its presence = committed
    <brand>/aliases/{candidate,production}.json    current version of each alias (one small read)
    <brand>/events/<time>-<rand>.json              immutable log: publish, set, rollback, reject
    <brand>/rejections/<version>.json              gate verdict: status "rejected" + reasons
    <brand>/.lock                                  local disks only: serialises alias changes

Why this is safe under concurrency and crashes:
- Publishers never share a folder: version ids are time + 32 random bits (see ids.py), claimed
  with an exclusive create. Files go into the version folder, then metadata.json is written last
  with an atomic replace (temp + rename locally, one PUT on object stores). Listing and reading
  only consider folders holding metadata.json, so a killed upload is invisible and touches
  nothing else; `gc` deletes such folders once they are older than a threshold.
- A committed version is never written again: publish refuses an existing id, and the recorded
  sha256 of every file is checked on every download/load.
- Alias changes append an immutable event first, then rewrite the alias document from a replay
  of the whole log (aliases.py), under a lock on local disks. Events never collide, so
  concurrent promotions/rollbacks lose nothing, and `history`/`rollback` read the log.
  Object stores have no lock: two simultaneous changes of one alias both stay in the log, the
  alias document is last-writer-wins (each writer rebuilds it from the log after its event).
- A writer killed between its event and the alias document leaves the document one change
  behind the log until the next change of that alias (which rebuilds it from the log).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import posixpath
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bg_platform.registry import aliases as alias_log
from bg_platform.registry import gc as garbage
from bg_platform.registry import integrity, sources
from bg_platform.registry.errors import (
    AdapterIntegrityError,
    RegistryError,
    RejectedVersion,
    UnknownName,
    VersionExists,
)
from bg_platform.registry.ids import (
    ALIASES,
    check_alias,
    check_brand,
    check_version,
    is_brand,
    is_event_id,
    is_version_id,
    new_event_id,
    new_version_id,
    utc_now,
)
from bg_platform.registry.integrity import CLAIM, METADATA
from bg_platform.registry.metadata import Event, FileEntry, VersionInfo, VersionMetadata, check_json_mapping
from bg_platform.registry.storage import Progress, Storage

log = logging.getLogger(__name__)


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no passwd entry / no USER variable in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _short_list(values: list[str], limit: int = 12) -> str:
    if not values:
        return "(none)"
    if len(values) <= limit:
        return ", ".join(values)
    return ", ".join(values[-limit:]) + f" (newest {limit} of {len(values)})"


class Registry:
    """Publish, verify, alias and load brand adapters under one root URL."""

    def __init__(self, root: str, **storage_options: Any):
        self.store = Storage(str(root), **storage_options)

    @property
    def root(self) -> str:
        return self.store.url

    def __repr__(self) -> str:
        return f"Registry({self.root!r})"

    # -- paths -----------------------------------------------------------------------------------
    def _vdir(self, brand: str, version: str) -> str:
        return self.store.path(brand, "versions", version)

    def _alias_path(self, brand: str, alias: str) -> str:
        return self.store.path(brand, "aliases", f"{alias}.json")

    # -- publish ---------------------------------------------------------------------------------
    def publish(
        self,
        brand: str,
        src_dir_or_files: str | Path | Iterable[str | Path],
        *,
        base_fingerprint: str,
        data_hash: str,
        params: dict[str, Any],
        metrics: dict[str, Any],
        extra: dict[str, Any] | None = None,
        version: str | None = None,
        progress: Progress | None = None,
    ) -> VersionInfo:
        """Upload a new immutable version; it becomes visible only once complete.

        `version` is normally left to the registry (a fresh time-ordered id); pass one only to
        mirror an exact version from another registry. `progress(name, done, total)` is called
        after every uploaded chunk.
        """
        brand = check_brand(brand)
        for name, value in (("base_fingerprint", base_fingerprint), ("data_hash", data_hash)):
            if not isinstance(value, str) or not value.strip():
                raise RegistryError(f"{name} must be a non-empty string, got {value!r}")
        meta_fields = {
            "params": check_json_mapping("params", params),
            "metrics": check_json_mapping("metrics", metrics),
            "extra": check_json_mapping("extra", extra or {}),
        }
        files = sources.collect(src_dir_or_files)
        version = check_version(version) if version is not None else new_version_id()
        vdir = self._vdir(brand, version)
        if self.store.exists(posixpath.join(vdir, METADATA)):
            raise VersionExists(
                f"{brand}/{version} already exists and versions are immutable; publish a new version"
            )
        claim = {"version": version, "actor": _actor(), "pid": os.getpid(), "started_at": utc_now().isoformat()}
        try:
            self.store.create(posixpath.join(vdir, CLAIM), json.dumps(claim).encode())
        except FileExistsError:
            raise VersionExists(
                f"{brand}/{version} is already being uploaded (or an upload was abandoned: `bgp registry gc` "
                "removes it); versions are never written twice, publish under a new version id"
            ) from None

        entries = []
        for name, path in files:
            sha256, size = self.store.upload(path, posixpath.join(vdir, name), progress)
            entries.append(FileEntry(name=name, sha256=sha256, size=size))
        self._check_upload_intact(brand, version, entries)
        meta = VersionMetadata(
            brand=brand,
            version=version,
            created_at=utc_now().isoformat(),
            base_fingerprint=base_fingerprint,
            data_hash=data_hash,
            files=tuple(entries),
            **meta_fields,
        )
        self.store.put(posixpath.join(vdir, METADATA), meta.to_json())  # the commit point
        self._append_event(Event(new_event_id(), brand, "publish", version, actor=_actor()))
        log.info("published %s/%s (%d files) to %s", brand, version, len(entries), self.root)
        return VersionInfo(meta, uri=self.store.uri(vdir))

    def _check_upload_intact(self, brand: str, version: str, entries: list[FileEntry]) -> None:
        """Right before committing: the claim and every file are there with the size written (a
        `gc` with a too-short threshold, or another writer, would otherwise go unnoticed)."""
        found = {e["name"]: e for e in self.store.listdir(self._vdir(brand, version))}
        problems = [] if CLAIM in found else [f"{CLAIM} is gone"]
        for entry in entries:
            if entry.name not in found:
                problems.append(f"{entry.name} is missing")
            elif found[entry.name].get("size") not in (None, entry.size):
                problems.append(f"{entry.name} has {found[entry.name]['size']} bytes, {entry.size} were written")
        if problems:
            raise RegistryError(
                f"publish of {brand}/{version} aborted before commit: {'; '.join(problems)}. Another process "
                "(e.g. `gc` with a threshold shorter than the upload) changed the upload; publish again"
            )

    # -- reading versions ------------------------------------------------------------------------
    def _brand_dirs(self) -> list[str]:
        """Folders under the root named like a brand (one listing; they may hold no version yet)."""
        entries = self.store.listdir(self.store.root)
        return sorted(e["name"] for e in entries if e.get("type") == "directory" and is_brand(e["name"]))

    def _committed(self, brand: str) -> list[str]:
        found = self.store.glob(self.store.path(brand, "versions", "*", METADATA))
        return sorted(v for v in (posixpath.basename(posixpath.dirname(p)) for p in found) if is_version_id(v))

    def list_brands(self) -> list[str]:
        """Brands with at least one committed version."""
        return [brand for brand in self._brand_dirs() if self._committed(brand)]

    def list_versions(self, brand: str) -> list[str]:
        """Committed versions of a brand, oldest first (uploads in progress are never listed)."""
        brand = check_brand(brand)
        versions = self._committed(brand)
        if not versions:
            brands = _short_list(self.list_brands())
            raise UnknownName(f"brand {brand!r} has no published versions in {self.root}; brands: {brands}")
        return versions

    def get(self, brand: str, version: str) -> VersionInfo:
        brand = check_brand(brand)
        version = check_version(version)
        vdir = self._vdir(brand, version)
        try:
            raw = self.store.read_bytes(posixpath.join(vdir, METADATA))
        except FileNotFoundError:
            versions = self.list_versions(brand)  # raises for an unknown brand, listing the brands
            raise UnknownName(
                f"brand {brand!r} has no version {version!r}; versions: {_short_list(versions)}; "
                f"aliases: {', '.join(ALIASES)}"
            ) from None
        try:
            meta = VersionMetadata.from_dict(json.loads(raw))
        except (ValueError, TypeError, KeyError, RegistryError) as exc:
            raise AdapterIntegrityError(
                f"{self.store.uri(vdir)}/{METADATA} is unreadable ({exc}); the version is corrupt: roll back or "
                "republish"
            ) from None
        if (meta.brand, meta.version) != (brand, version):
            raise AdapterIntegrityError(
                f"{self.store.uri(vdir)}/{METADATA} describes {meta.brand}/{meta.version}, not "
                f"{brand}/{version}; the folder was copied or renamed by hand: republish the adapter"
            )
        rejection = self.store.read_json(self.store.path(brand, "rejections", f"{version}.json"))
        if rejection:
            return VersionInfo(meta, "rejected", tuple(rejection.get("reasons", ())), self.store.uri(vdir))
        return VersionInfo(meta, uri=self.store.uri(vdir))

    def resolve(self, brand: str, alias_or_version: str) -> VersionInfo:
        """An alias (`production`, `candidate`) or a version id -> that committed version."""
        brand = check_brand(brand)
        if is_version_id(alias_or_version):
            return self.get(brand, alias_or_version)
        if alias_or_version in ALIASES:
            doc = self.store.read_json(self._alias_path(brand, alias_or_version))
            if doc is None:
                versions = self.list_versions(brand)
                set_aliases = sorted(self.aliases(brand))
                raise UnknownName(
                    f"alias {alias_or_version!r} is not set for brand {brand!r}; set aliases: "
                    f"{_short_list(set_aliases)}; versions: {_short_list(versions)} "
                    f"(set it with `bgp registry promote {brand} <version> --alias {alias_or_version}`)"
                )
            return self.get(brand, doc["version"])
        versions = self.list_versions(brand)
        raise UnknownName(
            f"{alias_or_version!r} is neither an alias nor a version of brand {brand!r}; aliases: "
            f"{', '.join(ALIASES)}; versions: {_short_list(versions)}"
        )

    def aliases(self, brand: str) -> dict[str, str]:
        """{alias: version} for the aliases that are set."""
        brand = check_brand(brand)
        paths = [self._alias_path(brand, alias) for alias in ALIASES]
        docs = [json.loads(raw) for raw in self.store.read_many(paths, missing_ok=True).values()]
        return {doc["alias"]: doc["version"] for doc in sorted(docs, key=lambda d: d["alias"])}

    def production_versions(self) -> dict[str, str]:
        """{brand: production version} for every brand: one listing plus one small read per brand.

        This is what the serving layer polls; it never reads version metadata or weights.
        """
        paths = {self._alias_path(brand, "production"): brand for brand in self._brand_dirs()}
        out = {}
        for path, raw in self.store.read_many(list(paths), missing_ok=True).items():
            doc = json.loads(raw)
            if doc.get("brand") != paths[path]:
                raise RegistryError(f"{self.store.uri(path)} names brand {doc.get('brand')!r}; it was copied by hand")
            out[paths[path]] = doc["version"]
        return dict(sorted(out.items()))

    # -- verification and loading ----------------------------------------------------------------
    def verify(
        self, brand: str, alias_or_version: str, expected_base_fingerprint: str | None = None
    ) -> VersionInfo:
        """Re-hash every stored file against metadata.json (and check the base fingerprint)."""
        info = self.resolve(brand, alias_or_version)
        integrity.check_fingerprint(info, expected_base_fingerprint)
        integrity.verify(self.store, self._vdir(info.brand, info.version), info)
        return info

    def download(
        self, brand: str, version: str, dest_dir: str | Path, expected_base_fingerprint: str | None = None
    ) -> Path:
        """Copy a verified version (files + metadata.json) into a local folder; returns the folder.

        Each file is hashed while it is copied and renamed into place only if its sha256 matches,
        so `dest_dir` never holds an unverified adapter file.
        """
        info = self.resolve(brand, version)
        integrity.check_fingerprint(info, expected_base_fingerprint)
        return integrity.download(self.store, self._vdir(info.brand, info.version), info, Path(dest_dir))

    def read_weights(self, brand: str, version: str, expected_base_fingerprint: str) -> dict[str, Any]:
        """All tensors of a version's .safetensors files (torch), after the fingerprint and sha256 checks."""
        if not isinstance(expected_base_fingerprint, str) or not expected_base_fingerprint:
            raise RegistryError(
                "expected_base_fingerprint must be the loaded base's fingerprint (a non-empty string), got "
                f"{expected_base_fingerprint!r}"
            )
        info = self.resolve(brand, version)
        integrity.check_fingerprint(info, expected_base_fingerprint)
        return integrity.read_weights(self.store, self._vdir(info.brand, info.version), info)

    # -- aliases, rejection, history -------------------------------------------------------------
    def _append_event(self, event: Event) -> None:
        self.store.put(self.store.path(event.brand, "events", f"{event.id}.json"), event.to_json())

    def history(self, brand: str) -> list[Event]:
        """Every publish / alias change / rejection of a brand, oldest first."""
        brand = check_brand(brand)
        entries = self.store.listdir(self.store.path(brand, "events"))
        paths = [e["path"] for e in entries if e["name"].endswith(".json") and is_event_id(e["name"][:-5])]
        events = []
        for path, raw in sorted(self.store.read_many(paths).items()):
            try:
                events.append(Event.from_dict(json.loads(raw)))
            except (ValueError, TypeError, KeyError) as exc:
                raise RegistryError(
                    f"{self.store.uri(path)}: unreadable event ({exc}); restore it from a backup or remove it"
                ) from None
        if not events:
            self.list_versions(brand)  # unknown brand -> error listing the brands
        return sorted(events, key=lambda e: e.id)

    def _write_alias(self, brand: str, alias: str, events: list[Event]) -> None:
        stack = alias_log.replay(events, alias)
        if stack:
            last = alias_log.last_event_id(events, alias)
            doc = alias_log.alias_doc(brand, alias, stack[-1], last, utc_now().isoformat())
            self.store.put(self._alias_path(brand, alias), json.dumps(doc, sort_keys=True).encode())

    def _change_alias(self, brand: str, alias: str, action: str, target: str | None, force: bool) -> VersionInfo:
        with self.store.lock(brand, ".lock"):
            events = self.history(brand)
            stack = alias_log.replay(events, alias)
            current = stack[-1] if stack else None
            if action == "rollback":
                if len(stack) < 2:
                    raise RegistryError(
                        f"cannot roll back {alias!r} of brand {brand!r}: there is no earlier {alias} version "
                        f"(current: {current or 'unset'}); promote a version instead"
                    )
                target = stack[-2]
            info = self.get(brand, target)
            if info.rejected and not force:
                raise RejectedVersion(
                    f"{brand}/{info.version} was rejected ({'; '.join(info.reasons)}); refusing to make it "
                    f"{alias}. Pass force=True (CLI: --force) if you really mean it"
                )
            if action == "set" and current == info.version:
                return info
            event = Event(
                id=new_event_id(), brand=brand, action=action, version=info.version, alias=alias,
                previous=current, force=force and info.rejected, actor=_actor(),
            )  # fmt: skip
            self._append_event(event)
            # Rebuild the alias document from the whole log (incl. changes that raced with this one).
            self._write_alias(brand, alias, self.history(brand))
            log.info("%s/%s: %s %s -> %s", brand, alias, action, current, info.version)
            return info

    def set_alias(self, brand: str, alias: str, version: str, *, force: bool = False) -> VersionInfo:
        """Point `alias` at a version (or at the version another alias points to)."""
        brand, alias = check_brand(brand), check_alias(alias)
        target = self.resolve(brand, version).version
        return self._change_alias(brand, alias, "set", target, force)

    def promote(self, brand: str, version: str, alias: str = "production", force: bool = False) -> VersionInfo:
        """Make a version (or alias, e.g. "candidate") the brand's `alias` (production by default).

        Rejected versions are refused unless force=True.
        """
        return self.set_alias(brand, alias, version, force=force)

    def rollback(self, brand: str, alias: str = "production", force: bool = False) -> VersionInfo:
        """Point `alias` back at the version it had before its current one; returns that version."""
        brand, alias = check_brand(brand), check_alias(alias)
        self.list_versions(brand)  # an unknown brand fails here, before a lock file is created for it
        return self._change_alias(brand, alias, "rollback", None, force)

    def reject(self, brand: str, version: str, reasons: list[str]) -> VersionInfo:
        """Mark a version rejected (e.g. by the onboarding gate). It stays listed, with its reasons."""
        if isinstance(reasons, str) or not reasons or not all(isinstance(r, str) and r.strip() for r in reasons):
            raise RegistryError(f"reasons must be a non-empty list of non-empty strings, got {reasons!r}")
        info = self.resolve(brand, version)
        brand, version = info.brand, info.version
        with self.store.lock(brand, ".lock"):
            merged = list(dict.fromkeys([*self.get(brand, version).reasons, *reasons]))
            event = Event(new_event_id(), brand, "reject", version, reasons=tuple(reasons), actor=_actor())
            doc = {"brand": brand, "version": version, "reasons": merged, "event": event.id}
            path = self.store.path(brand, "rejections", f"{version}.json")
            self.store.put(path, json.dumps(doc, sort_keys=True).encode())  # the guard first, then the record
            self._append_event(event)
        return VersionInfo(info.metadata, "rejected", tuple(merged), info.uri)

    # -- housekeeping ----------------------------------------------------------------------------
    def gc(self, older_than_s: float, *, dry_run: bool = False) -> list[str]:
        """Delete abandoned uploads and leftover temp files older than `older_than_s` seconds.

        Committed versions are never touched. Keep the threshold well above the longest upload
        (the CLI default is a day): an upload still running past it is deleted, and that publish
        then fails before its commit instead of committing a broken version.
        """
        removed = garbage.collect(self.store, older_than_s, dry_run)
        log.info("gc %s: %s %d item(s)", self.root, "would remove" if dry_run else "removed", len(removed))
        return removed

