"""Publishing an evaluated adapter to the registry: the one code path used by the DVC adapter
stages and by the Airflow onboarding DAG. A version that fails the gate is still published (so
it can be inspected) but marked rejected with the gate's reasons, and production is untouched."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from bg_platform.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deployment:
    brand: str
    version: str
    promoted: bool
    rejected_reasons: tuple[str, ...]
    uri: str

    def __str__(self) -> str:
        state = "promoted to production" if self.promoted else (
            "rejected: " + "; ".join(self.rejected_reasons) if self.rejected_reasons else "published as candidate")
        return f"{self.brand}/{self.version} {state} ({self.uri})"


def publish_adapter(registry_root: str, brand: str, adapter_dir: str | Path, metrics: dict, *, promote: bool = True) -> Deployment:
    adapter_dir = Path(adapter_dir)
    meta = json.loads((adapter_dir / "adapter.json").read_text())
    training = json.loads((adapter_dir / "training.json").read_text()) if (adapter_dir / "training.json").exists() else {}
    reg = Registry(registry_root)
    info = reg.publish(
        brand,
        adapter_dir,
        base_fingerprint=meta["base_fingerprint"],
        data_hash=training.get("data_hash", "unknown"),
        params=training.get("params", {}),
        metrics=metrics,
        extra={"rank": meta["rank"], "alpha": meta["alpha"], "token": meta.get("token", "")},
    )
    version = info.metadata.version
    reg.set_alias(brand, "candidate", version)
    gate = metrics.get("gate", {"passed": True, "reasons": []})
    if not gate["passed"]:
        reg.reject(brand, version, list(gate["reasons"]))
        return Deployment(brand, version, False, tuple(gate["reasons"]), info.uri)
    if promote:
        reg.promote(brand, version)
    return Deployment(brand, version, promote, (), info.uri)
