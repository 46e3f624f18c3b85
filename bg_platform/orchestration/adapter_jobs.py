"""Training, evaluation and publishing of a brand adapter, each done at most once per input.

- `train_keyed`: `bgp train-adapter` in `<brand>/adapters/<key>/`, key = (data version, base
  fingerprint, adapter config); a finished adapter there is re-used, a crashed one resumes from its
  checkpoints (`run/`), and a second run of the same key waits on the folder's lock.
- `evaluate_keyed`: `bgp evaluate-adapter` in `<brand>/evaluations/<key>/`, key = (adapter files,
  data, judges, products, base, evaluation + judge config incl. the gate thresholds).
- `publish`: `adapters.publish_adapter`, except that weights already published for the brand are
  re-used instead of uploaded again.
The onboarding steps (onboarding.py) record what these return.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from bg_platform.orchestration.runs import Settings, locked, run_bgp

log = logging.getLogger(__name__)


def key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def dir_sha(path: Path, pattern: str = "*") -> dict[str, str]:
    from bg_platform.data.imageio import sha256_file

    return {str(p.relative_to(path)): sha256_file(p) for p in sorted(path.rglob(pattern)) if p.is_file()}


def write_overlay(path: Path, overlay: dict[str, Any]) -> Path:
    """A params profile for the `bgp` subprocesses (atomic: runs may share the path)."""
    from bg_platform.data.imageio import atomic_write_bytes

    atomic_write_bytes(path, yaml.safe_dump(overlay, sort_keys=True).encode())
    return path


def _adapter_cfg(settings: Settings, overlay: dict[str, Any]) -> dict[str, Any]:
    from bg_platform import config

    path = write_overlay(settings.work_dir / "tmp" / f"overlay-{key(overlay)}.yaml", overlay)
    cfg = config.to_dict(settings.load_params((path,)).adapter)
    for k in ("out_dir", "run_dir", "plots_dir"):  # where things go, not what is trained
        cfg.pop(k, None)
    return cfg


def train_keyed(
    settings: Settings, brand_dir: Path, brand: str, *, dataset_dir: str, base_dir: str, data_version: str,
    base_fingerprint: str, overlay: dict[str, Any], run_id: str, timeout: float, details: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    k = key({"data": data_version, "base": base_fingerprint, "adapter": _adapter_cfg(settings, overlay)})
    kdir = brand_dir / "adapters" / k
    details["adapter_key_dir"] = str(kdir)
    final = kdir / "adapter"
    with locked(kdir / ".lock", f"adapter training {brand}/{k}"):
        reused = (kdir / "done.json").exists() and (final / "adapter.json").exists()
        if not reused:
            adapter = {**overlay.get("adapter", {}), "run_dir": str(kdir / "run"), "plots_dir": str(kdir / "plots")}
            ov = write_overlay(kdir / "overlay.yaml", {**overlay, "adapter": adapter})
            partial = kdir / "adapter.partial"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(final, ignore_errors=True)
            t0 = time.monotonic()
            run_bgp(settings, (ov,), ["train-adapter", "--brand", brand, "--dataset", dataset_dir, "--base", base_dir,
                                      "--out", str(partial), "--no-progress"],
                    cwd=kdir, log_path=kdir / "train.log", timeout=timeout, what=f"train-adapter {brand}")  # fmt: skip
            partial.rename(final)
            done = {"run_id": run_id, "seconds": round(time.monotonic() - t0, 1), "data_version": data_version}
            (kdir / "done.json").write_text(json.dumps(done) + "\n")
        training = json.loads((final / "training.json").read_text())
    return {"adapter_dir": str(final), "key": k, "reused": reused, "log": str(kdir / "train.log"),
            "references": len(training.get("references", [])), "steps": training.get("steps"),
            "final_loss": training.get("final_loss"), "data_hash": training.get("data_hash")}  # fmt: skip


def evaluate_keyed(
    settings: Settings, brand_dir: Path, brand: str, *, adapter_dir: str, dataset_dir: str, base_dir: str,
    products: Path, judges: Path, data_version: str, base_fingerprint: str, overlay_path: Path, timeout: float,
    details: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    from bg_platform import config

    p = settings.load_params((overlay_path,))
    k = key({
        "adapter": dir_sha(Path(adapter_dir), "*.safetensors"), "data": data_version, "judges": dir_sha(judges),
        "products": dir_sha(products, "manifest.parquet"), "base": base_fingerprint,
        "eval": config.to_dict(p.evaluate_adapter), "judge_cfg": config.to_dict(p.judges),
    })  # fmt: skip
    kdir = brand_dir / "evaluations" / k
    details["evaluation_dir"] = str(kdir)
    metrics_path = kdir / "metrics.json"
    with locked(kdir / ".lock", f"adapter evaluation {brand}/{k}"):
        reused = metrics_path.exists()
        if not reused:
            partial = kdir / "metrics.partial.json"
            run_bgp(settings, (overlay_path,), [
                "evaluate-adapter", "--brand", brand, "--adapter", adapter_dir, "--base", base_dir,
                "--dataset", dataset_dir, "--products", str(products), "--judges", str(judges),
                "--metrics", str(partial), "--report-dir", str(kdir / "report"),
            ], cwd=kdir, log_path=kdir / "evaluate.log", timeout=timeout, what=f"evaluate-adapter {brand}")  # fmt: skip
            partial.rename(metrics_path)
    metrics = json.loads(metrics_path.read_text())
    return {"metrics_path": str(metrics_path), "reused": reused, "gate": metrics["gate"],
            "samples": str(kdir / "report" / "samples.png"),
            "metrics": {n: v for n, v in metrics.items() if isinstance(v, int | float | bool) and n != "gate"}}  # fmt: skip


def publish(registry_root: str, brand: str, adapter_dir: Path, metrics: dict, *, promote: bool) -> dict[str, Any]:
    """adapters.publish_adapter, except that an adapter whose files are already published for the
    brand is not uploaded again: a rerun on the same data re-uses (and, if needed, promotes) it."""
    from bg_platform.orchestration.adapters import publish_adapter
    from bg_platform.registry import Registry, UnknownName

    reg = Registry(registry_root)
    passed = bool(metrics["gate"]["passed"])
    local = dir_sha(adapter_dir, "*.safetensors")
    before = _production(reg, brand)
    same = None
    try:
        versions = reg.list_versions(brand)
    except UnknownName:
        versions = []
    for v in reversed(versions):
        info = reg.get(brand, v)
        if {e.name: e.sha256 for e in info.metadata.weight_files} == local:
            same = info
            break
    action = "published"
    if same is not None and (same.rejected != passed):  # same weights, same verdict as recorded: re-use
        version, action = same.version, "reused"
        if passed and promote and before != version:
            reg.set_alias(brand, "candidate", version)
            reg.promote(brand, version)
            action = "reused, promoted"
        promoted = passed and promote
        rejected = list(same.reasons) if same.rejected else []
        uri = same.uri
    else:
        dep = publish_adapter(registry_root, brand, adapter_dir, metrics, promote=promote)
        version, promoted, rejected, uri = dep.version, dep.promoted, list(dep.rejected_reasons), dep.uri
    log.info("registry %s: %s/%s %s (%s)", registry_root, brand, version, action,
             "production" if promoted else ("rejected" if rejected else "candidate"))  # fmt: skip
    return {"version": version, "action": action, "promoted": promoted, "rejected_reasons": rejected, "uri": uri,
            "production_before": before, "production": _production(reg, brand)}  # fmt: skip


def _production(reg, brand: str) -> str | None:
    return reg.aliases(brand).get("production")
