"""What is stored about a version (`metadata.json`) and about alias changes (event files).

`VersionMetadata` is immutable: it is written once, last, when a version is published, and its
presence is what makes the version exist. `VersionInfo` adds the mutable lifecycle status
(published / rejected), which lives outside the version folder so the version itself is never
rewritten.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bg_platform.registry.errors import RegistryError

METADATA_FORMAT = 1
STATUSES = ("published", "rejected")
ACTIONS = ("publish", "set", "rollback", "reject")


def _check_keys(kind: str, data: Mapping[str, Any], required: set[str], optional: set[str] = frozenset()) -> None:
    if not isinstance(data, Mapping):
        raise RegistryError(f"{kind}: expected a JSON object, got {type(data).__name__}")
    missing = required - data.keys()
    unknown = data.keys() - required - optional
    if missing or unknown:
        raise RegistryError(
            f"{kind}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}; "
            "the document was not written by this registry version or was edited by hand"
        )


def check_json_mapping(name: str, value: object) -> dict[str, Any]:
    """A dict that round-trips through strict JSON (no NaN/inf, string keys); returns a deep copy."""
    if not isinstance(value, Mapping):
        raise RegistryError(f"{name} must be a dict, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(value, allow_nan=False, sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise RegistryError(
            f"{name} must be JSON-serialisable with finite numbers and string keys ({exc}); "
            "convert tensors/arrays with .item()/.tolist() and drop NaN values"
        ) from None


@dataclass(frozen=True)
class FileEntry:
    name: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileEntry:
        _check_keys("file entry", data, {"name", "sha256", "size"})
        return cls(name=str(data["name"]), sha256=str(data["sha256"]), size=int(data["size"]))


@dataclass(frozen=True)
class VersionMetadata:
    """Everything needed to trust and reproduce a version. Stored as `metadata.json`."""

    brand: str
    version: str
    created_at: str  # ISO 8601, UTC
    base_fingerprint: str  # of the frozen base the adapter was trained over
    data_hash: str  # of the training data (e.g. the DVC hash of the brand dataset)
    files: tuple[FileEntry, ...]
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    metrics: dict[str, Any] = field(default_factory=dict, hash=False)
    extra: dict[str, Any] = field(default_factory=dict, hash=False)
    format: int = METADATA_FORMAT

    def file(self, name: str) -> FileEntry:
        for entry in self.files:
            if entry.name == name:
                return entry
        raise RegistryError(
            f"{self.brand}/{self.version} has no file {name!r}; files: {', '.join(e.name for e in self.files)}"
        )

    @property
    def weight_files(self) -> tuple[FileEntry, ...]:
        return tuple(e for e in self.files if e.name.endswith(".safetensors"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "brand": self.brand,
            "version": self.version,
            "created_at": self.created_at,
            "base_fingerprint": self.base_fingerprint,
            "data_hash": self.data_hash,
            "files": [e.to_dict() for e in self.files],
            "params": self.params,
            "metrics": self.metrics,
            "extra": self.extra,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False).encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VersionMetadata:
        keys = {"format", "brand", "version", "created_at", "base_fingerprint", "data_hash", "files"}
        _check_keys("metadata.json", data, keys, {"params", "metrics", "extra"})
        if data["format"] != METADATA_FORMAT:
            raise RegistryError(
                f"metadata.json format {data['format']!r} is not supported (this code reads format "
                f"{METADATA_FORMAT}); upgrade bg-platform"
            )
        return cls(
            brand=str(data["brand"]),
            version=str(data["version"]),
            created_at=str(data["created_at"]),
            base_fingerprint=str(data["base_fingerprint"]),
            data_hash=str(data["data_hash"]),
            files=tuple(FileEntry.from_dict(f) for f in data["files"]),
            params=dict(data.get("params") or {}),
            metrics=dict(data.get("metrics") or {}),
            extra=dict(data.get("extra") or {}),
        )


@dataclass(frozen=True)
class VersionInfo:
    """A committed version: its immutable metadata plus its lifecycle status."""

    metadata: VersionMetadata
    status: str = "published"  # one of STATUSES
    reasons: tuple[str, ...] = ()  # why it was rejected
    uri: str = ""  # where the version folder lives

    @property
    def brand(self) -> str:
        return self.metadata.brand

    @property
    def version(self) -> str:
        return self.metadata.version

    @property
    def base_fingerprint(self) -> str:
        return self.metadata.base_fingerprint

    @property
    def files(self) -> tuple[FileEntry, ...]:
        return self.metadata.files

    @property
    def rejected(self) -> bool:
        return self.status == "rejected"

    def to_dict(self) -> dict[str, Any]:
        return {**self.metadata.to_dict(), "status": self.status, "reasons": list(self.reasons), "uri": self.uri}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VersionInfo:
        data = dict(data)
        status = data.pop("status", "published")
        reasons = tuple(data.pop("reasons", ()))
        uri = data.pop("uri", "")
        if status not in STATUSES:
            raise RegistryError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        return cls(VersionMetadata.from_dict(data), status=status, reasons=reasons, uri=uri)


@dataclass(frozen=True)
class Event:
    """One immutable entry of a brand's history (`<brand>/events/<id>.json`)."""

    id: str  # time-ordered: events sort by id
    brand: str
    action: str  # one of ACTIONS
    version: str
    alias: str | None = None
    previous: str | None = None  # the alias's version before this change
    reasons: tuple[str, ...] = ()
    force: bool = False
    actor: str = ""  # user@host of the writer

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "brand": self.brand,
            "action": self.action,
            "version": self.version,
            "alias": self.alias,
            "previous": self.previous,
            "reasons": list(self.reasons),
            "force": self.force,
            "actor": self.actor,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True).encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        optional = {"alias", "previous", "reasons", "force", "actor"}
        _check_keys("event", data, {"id", "brand", "action", "version"}, optional)
        if data["action"] not in ACTIONS:
            raise RegistryError(
                f"event {data['id']!r}: action {data['action']!r} is not one of {', '.join(ACTIONS)}"
            )
        return cls(
            id=str(data["id"]),
            brand=str(data["brand"]),
            action=str(data["action"]),
            version=str(data["version"]),
            alias=data.get("alias"),
            previous=data.get("previous"),
            reasons=tuple(data.get("reasons") or ()),
            force=bool(data.get("force", False)),
            actor=str(data.get("actor", "")),
        )

    def describe(self) -> str:
        if self.action == "publish":
            text = f"published {self.version}"
        elif self.action == "set":
            text = f"{self.alias}: {self.previous or '-'} -> {self.version}"
        elif self.action == "rollback":
            text = f"{self.alias}: rolled back {self.previous or '-'} -> {self.version}"
        else:
            text = f"rejected {self.version}: {'; '.join(self.reasons)}"
        forced = " (forced)" if self.force else ""
        return f"{self.id}  {text}{forced}  [{self.actor}]"
