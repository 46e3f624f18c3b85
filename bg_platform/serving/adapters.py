"""Fetching one adapter version for serving: download verified, load, prepare for the slots.

A version is trusted only after (1) the registry's checks while downloading (base fingerprint
recorded at publish, sha256 of every file) and (2) `adapter.json`'s own base fingerprint, brand
and rank/targets fitting the slots. Anything else is an `AdapterRefused` with a reason used as a
metric label: the caller keeps serving the version it had.

Verified files stay in a local folder per (brand, version) (versions are immutable): a cache
eviction then costs a local read, not another registry download. Their sha256 is checked again
against the downloaded metadata.json on every load, so a file changed on local disk is refused
too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from bg_platform.model.lora import AdapterError, AdapterMeta, load_adapter
from bg_platform.registry import (
    AdapterIntegrityError,
    FingerprintMismatch,
    Registry,
    RegistryError,
    UnknownName,
)
from bg_platform.serving import metrics
from bg_platform.serving.errors import Unavailable

log = logging.getLogger(__name__)

METADATA = "metadata.json"
REASONS = ("checksum", "fingerprint", "missing", "invalid", "unavailable")


class AdapterRefused(Unavailable):
    """This adapter version cannot be served; `reason` is one of REASONS."""

    def __init__(self, brand: str, version: str, reason: str, message: str):
        super().__init__(f"adapter {brand}/{version} refused ({reason}): {message}")
        self.brand, self.version, self.reason, self.detail = brand, version, reason, message

    @property
    def permanent(self) -> bool:
        """Versions are immutable, so only an unreachable registry is worth retrying on the next poll."""
        return self.reason != "unavailable"


@dataclass(frozen=True, eq=False)
class PreparedAdapter:
    brand: str
    version: str
    meta: AdapterMeta
    tensors: Mapping[str, torch.Tensor]  # LoraSlots.prepare output: one padded buffer per LoRA layer
    nbytes: int

    @property
    def key(self) -> str:
        return f"{self.brand}@{self.version}"


class AdapterSource:
    """(brand, version) -> PreparedAdapter, through a local folder of verified downloads."""

    def __init__(
        self,
        registry: Registry,
        base_fingerprint: str,
        prepare: Callable[[AdapterMeta, Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]],
        work_dir: str | Path = "",
    ):
        self.registry = registry
        self.fingerprint = base_fingerprint
        self.prepare = prepare
        self._own_tmp = None
        if not work_dir:
            self._own_tmp = tempfile.TemporaryDirectory(prefix="bgp-adapters-")
            work_dir = self._own_tmp.name
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)

    def load(self, key: tuple[str, str]) -> PreparedAdapter:
        brand, version = key
        t0 = time.perf_counter()
        folder = self._fetch(brand, version)
        try:
            self._check_local(brand, version, folder)
            meta, tensors = load_adapter(folder, self.fingerprint)
            if meta.brand != brand:
                raise AdapterRefused(brand, version, "invalid", f"its adapter.json names brand {meta.brand!r}")
            if meta.base_fingerprint and meta.base_fingerprint != self.fingerprint:
                raise AdapterRefused(brand, version, "fingerprint", "adapter.json names another base")
            prepared = self.prepare(meta, tensors)
        except AdapterError as exc:
            reason = "fingerprint" if "trained on base" in str(exc) else "invalid"
            raise AdapterRefused(brand, version, reason, str(exc)) from None
        nbytes = sum(t.numel() * t.element_size() for t in prepared.values())
        metrics.LOAD_SECONDS.observe(time.perf_counter() - t0)
        return PreparedAdapter(brand, version, meta, prepared, nbytes)

    def _fetch(self, brand: str, version: str) -> Path:
        folder = self.work_dir / brand / version
        if (folder / METADATA).exists():
            return folder
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self._parent(brand)))
        try:
            self.registry.download(brand, version, tmp, expected_base_fingerprint=self.fingerprint)
            try:
                os.replace(tmp, folder)
            except OSError:
                if not (folder / METADATA).exists():  # not a concurrent download of the same version
                    raise
        except FingerprintMismatch as exc:
            raise AdapterRefused(brand, version, "fingerprint", str(exc)) from None
        except AdapterIntegrityError as exc:
            reason = "missing" if " is missing " in str(exc) else "checksum"
            raise AdapterRefused(brand, version, reason, str(exc)) from None
        except UnknownName as exc:
            raise AdapterRefused(brand, version, "missing", str(exc)) from None
        except RegistryError as exc:
            raise AdapterRefused(brand, version, "invalid", str(exc)) from None
        except OSError as exc:  # unreachable object store, full disk: worth another try later
            raise AdapterRefused(brand, version, "unavailable", f"{type(exc).__name__}: {exc}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder

    def _parent(self, brand: str) -> Path:
        parent = self.work_dir / brand
        parent.mkdir(parents=True, exist_ok=True)
        return parent

    def _check_local(self, brand: str, version: str, folder: Path) -> None:
        """The local copy still matches the sha256 recorded at publish (downloaded metadata.json)."""
        try:
            recorded = json.loads((folder / METADATA).read_text())["files"]
            for entry in recorded:
                actual = hashlib.sha256((folder / entry["name"]).read_bytes()).hexdigest()
                if actual != entry["sha256"]:
                    raise AdapterRefused(
                        brand, version, "checksum",
                        f"local copy {folder / entry['name']} has sha256 {actual}, recorded {entry['sha256']}; "
                        f"delete {folder} to download it again",
                    )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AdapterRefused(
                brand, version, "invalid", f"local copy {folder} is unreadable ({exc}); delete it to download again"
            ) from None

    def close(self) -> None:
        if self._own_tmp is not None:
            self._own_tmp.cleanup()
