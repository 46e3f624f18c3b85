"""Following the registry's production aliases with no restart and no failed request.

`reload()` reads {brand: production version} (one listing + one small read per brand), loads and
verifies every version that changed, and only then swaps the whole brand -> version mapping in
one assignment. Requests take the mapping once (`snapshot()`), so each one is produced by one
adapter version even while a swap happens. A version that cannot be trusted (checksum, base
fingerprint, missing file, bad adapter.json) is refused: the brand keeps its previous version,
and the refusal is logged, counted and listed in `refused` until the alias moves again.
A poller thread calls `reload()` every `interval_s`; the admin endpoint calls it directly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from bg_platform.registry import Registry, RegistryError
from bg_platform.serving import metrics
from bg_platform.serving.adapters import AdapterRefused

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    version: str
    reason: str
    message: str

    def to_dict(self) -> dict:
        return {"version": self.version, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class ReloadReport:
    brands: Mapping[str, str]  # what is served after this reload
    refused: Mapping[str, Refusal]
    changed: Mapping[str, tuple[str | None, str | None]]  # brand -> (old version, new version)
    error: str = ""  # the registry could not be read: nothing changed

    def to_dict(self) -> dict:
        return {"brands": dict(self.brands), "refused": {b: r.to_dict() for b, r in self.refused.items()},
                "changed": {b: list(v) for b, v in self.changed.items()}, "error": self.error}


class RegistryFollower:
    def __init__(self, registry: Registry, load: Callable[[str, str], object], interval_s: float = 10.0):
        """`load(brand, version)` must verify and prepare the version (raising AdapterRefused)."""
        self.registry = registry
        self._load = load
        self.interval_s = interval_s
        self._mapping: Mapping[str, str] = MappingProxyType({})
        self._refused: dict[str, Refusal] = {}
        self._reload_lock = threading.Lock()  # one reload at a time (poller and admin)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_report: ReloadReport | None = None

    def snapshot(self) -> Mapping[str, str]:
        """The current brand -> version mapping; never mutated, replaced as a whole by reload()."""
        return self._mapping

    @property
    def refused(self) -> Mapping[str, Refusal]:
        return MappingProxyType(dict(self._refused))

    def reload(self, retry_refused: bool = True) -> ReloadReport:
        with self._reload_lock:
            report = self._reload(retry_refused)
            self.last_report = report
            return report

    def _reload(self, retry_refused: bool) -> ReloadReport:
        current = self._mapping
        try:
            wanted = self.registry.production_versions()
        except (RegistryError, OSError) as exc:
            metrics.POLLS.labels("error").inc()
            log.error("registry %s unreadable, keeping %d brand(s) as they are: %s", self.registry.root, len(current), exc)
            return ReloadReport(current, self.refused, {}, f"registry unreadable: {exc}")
        if current and not wanted:
            # a missing local root lists as empty: an unmounted volume or a wrong path must not unserve every brand
            metrics.POLLS.labels("error").inc()
            log.error("registry %s lists no production brand while %d are served; keeping them (restart the service "
                      "if the registry was really emptied)", self.registry.root, len(current))
            return ReloadReport(current, self.refused, {}, f"registry {self.registry.root} lists no production brand")
        new: dict[str, str] = {}
        changed: dict[str, tuple[str | None, str | None]] = {}
        for brand, version in wanted.items():
            old = current.get(brand)
            if old == version:
                new[brand] = version
                self._clear_refusal(brand)
                continue
            known = self._refused.get(brand)
            if known and known.version == version and known.reason != "unavailable" and not retry_refused:
                if old is not None:
                    new[brand] = old
                continue
            try:
                self._load(brand, version)
            except AdapterRefused as exc:
                self._refuse(brand, exc, old)
                if old is not None:
                    new[brand] = old  # the previous version keeps serving
                continue
            new[brand] = version
            changed[brand] = (old, version)
            self._clear_refusal(brand)
        for brand in current.keys() - wanted.keys():
            log.warning("brand %s has no production version in %s any more; no longer served", brand, self.registry.root)
            changed[brand] = (current[brand], None)
            self._clear_refusal(brand)
        self._mapping = MappingProxyType(dict(sorted(new.items())))  # the atomic swap
        for brand, (old, version) in changed.items():
            if old is not None:
                metrics.LOADED.labels(brand, old).set(0)
            if version is not None:
                metrics.LOADED.labels(brand, version).set(1)
                log.info("brand %s: now serving %s (was %s)", brand, version, old or "nothing")
        metrics.POLLS.labels("ok").inc()
        metrics.LAST_POLL.set(time.time())
        return ReloadReport(self._mapping, self.refused, changed)

    def _refuse(self, brand: str, exc: AdapterRefused, old: str | None) -> None:
        previous = self._refused.get(brand)
        refusal = Refusal(exc.version, exc.reason, exc.detail)
        if previous != refusal:
            if previous is not None:
                metrics.REFUSED_NOW.labels(brand, previous.version, previous.reason).set(0)
            metrics.REFUSED.labels(brand, exc.version, exc.reason).inc()
            metrics.REFUSED_NOW.labels(brand, exc.version, exc.reason).set(1)
            log.error("brand %s: refused %s (%s), still serving %s: %s", brand, exc.version, exc.reason,
                      old or "nothing", exc.detail)
        self._refused[brand] = refusal

    def _clear_refusal(self, brand: str) -> None:
        previous = self._refused.pop(brand, None)
        if previous is not None:
            metrics.REFUSED_NOW.labels(brand, previous.version, previous.reason).set(0)

    # -- poller ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll, name="bgp-registry-follower", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                # a refused version is immutable: only an unreachable registry is retried by the poller
                self.reload(retry_refused=False)
            except Exception:  # the poller must outlive any single bad poll; the error is logged
                log.exception("registry poll failed; retrying in %.0f s", self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
