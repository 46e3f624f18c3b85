"""Checks before an adapter is trusted: base fingerprint, then the sha256 of every stored file.

Loading never unpickles: weights are parsed by safetensors only, from the very bytes that were
hashed (no second read between the check and the parse).
"""

from __future__ import annotations

import hashlib
import posixpath
from pathlib import Path
from typing import Any

from bg_platform.registry.errors import AdapterIntegrityError, FingerprintMismatch
from bg_platform.registry.metadata import FileEntry, VersionInfo
from bg_platform.registry.storage import Storage, checksum_message

METADATA = "metadata.json"
CLAIM = ".claim"


def check_fingerprint(info: VersionInfo, expected: str | None) -> None:
    if expected is not None and info.base_fingerprint != expected:
        raise FingerprintMismatch(
            f"{info.brand}/{info.version} was trained over a different base model: expected base fingerprint "
            f"{info.base_fingerprint!r} (recorded at publish), actual {expected!r} (the loaded base). Load the "
            "matching base model or retrain the adapter on this base"
        )


def _missing(info: VersionInfo, entry: FileEntry) -> AdapterIntegrityError:
    return AdapterIntegrityError(
        f"{info.brand}/{info.version}: file {entry.name} is missing from {info.uri} (expected sha256 "
        f"{entry.sha256}); roll back or republish the adapter"
    )


def _label(info: VersionInfo, entry: FileEntry) -> str:
    return f"{info.brand}/{info.version}: file {entry.name}"


def verify(store: Storage, vdir: str, info: VersionInfo) -> None:
    """Every recorded file is present with its sha256, and nothing was added after publish."""
    stored = {e["name"] for e in store.listdir(vdir)}
    unexpected = sorted(stored - {e.name for e in info.files} - {METADATA, CLAIM})
    if unexpected:
        raise AdapterIntegrityError(
            f"{info.brand}/{info.version}: files {unexpected} were added to the immutable version folder "
            f"{info.uri} after publish; remove them (and find out what wrote them)"
        )
    for entry in info.files:
        path = posixpath.join(vdir, entry.name)
        try:
            sha256, _ = store.hash_file(path)
        except FileNotFoundError:
            raise _missing(info, entry) from None
        if sha256 != entry.sha256:
            message = checksum_message(_label(info, entry), store.uri(path), entry.sha256, sha256)
            raise AdapterIntegrityError(message)


def download(store: Storage, vdir: str, info: VersionInfo, dest: Path) -> Path:
    """Copy each file to `dest`, hashed on the way and renamed into place only if it matches."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in info.files:
        try:
            store.download(posixpath.join(vdir, entry.name), dest / entry.name, entry.sha256, _label(info, entry))
        except FileNotFoundError:
            raise _missing(info, entry) from None
    (dest / METADATA).write_bytes(info.metadata.to_json())
    return dest


def read_weights(store: Storage, vdir: str, info: VersionInfo) -> dict[str, Any]:
    """Tensors of every .safetensors file, each file's bytes checked against its sha256 first."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    tensors: dict[str, Any] = {}
    for entry in info.metadata.weight_files:
        path = posixpath.join(vdir, entry.name)
        try:
            data = store.read_bytes(path)
        except FileNotFoundError:
            raise _missing(info, entry) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != entry.sha256:
            message = checksum_message(_label(info, entry), store.uri(path), entry.sha256, actual)
            raise AdapterIntegrityError(message)
        try:
            loaded = load_safetensors(data)
        except SafetensorError as exc:
            raise AdapterIntegrityError(f"{_label(info, entry)} is not valid safetensors ({exc})") from None
        clash = sorted(tensors.keys() & loaded.keys())
        if clash:
            raise AdapterIntegrityError(f"{_label(info, entry)}: tensors {clash[:5]} also appear in another file")
        tensors.update(loaded)
    return tensors
