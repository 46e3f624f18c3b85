"""Evaluating a brand adapter on held-out products, with vs without it, and the deployment gate.

- brand style fidelity: the brand judge (trained on real references, never on generated images)
  on backgrounds generated for held-out products, with the adapter vs the bare base;
- judge-feature distance (brand judge space) between generated backgrounds and the brand's
  held-out references, with vs without the adapter;
- category fidelity of the same outputs (the category judge) vs the bare base: must not collapse;
- `gate(metrics, cfg)`: pass/fail with the reasons, thresholds from params.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from bg_platform.config import EvaluateAdapterConfig, GateConfig, JudgeConfig
from bg_platform.data.imageio import atomic_write_json
from bg_platform.errors import BgError, DataError
from bg_platform.evaluation.judge import Judge, accuracy_report, train_judge
from bg_platform.evaluation.judges import NO_BRAND
from bg_platform.grids import save_grid
from bg_platform.model.components import load
from bg_platform.model.lora import load_adapter
from bg_platform.model.pipeline import BgPipeline
from bg_platform.training.data import concat, load_set


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def gate(metrics: dict, cfg: GateConfig) -> GateResult:
    """Deployment gate: every failed rule is a reason (with the value and the threshold)."""
    reasons = []
    acc, base_acc = metrics["brand_accuracy_with_adapter"], metrics["brand_accuracy_without_adapter"]
    if acc < cfg.min_brand_accuracy:
        reasons.append(f"brand judge accuracy {acc:.3f} < required {cfg.min_brand_accuracy:.3f}")
    if acc - base_acc < cfg.min_brand_gain:
        reasons.append(f"brand accuracy gain {acc - base_acc:.3f} over the base < required {cfg.min_brand_gain:.3f}")
    # the brand's own style changes how a category looks (a recoloured marble is still marble, but
    # less obviously so): compare with the category judge on the brand's REAL references
    ceiling = metrics.get("category_fidelity_real_brand_refs", metrics["category_fidelity_without_adapter"])
    drop = ceiling - metrics["category_fidelity_with_adapter"]
    if drop > cfg.max_category_drop:
        reasons.append(
            f"category fidelity {metrics['category_fidelity_with_adapter']:.3f} is {drop:.3f} below the brand's real "
            f"references ({ceiling:.3f}) > allowed {cfg.max_category_drop:.3f}"
        )
    return GateResult(not reasons, reasons)


def _mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.mean(0) - b.mean(0)))


def _brand_judge(judges_dir: Path, brand: str, refs, products, judge_cfg: JudgeConfig | None, run_dir: Path) -> tuple[Judge, bool]:
    """The shared brand judge when it knows `brand`; otherwise one trained here, on real images
    only (the brand's references vs category-default samples), for a brand onboarded after the
    judges were trained."""
    judge = Judge.load(judges_dir / "brand") if (judges_dir / "brand" / "judge.json").exists() else None
    if judge is not None and brand in judge.classes:
        return judge, False
    if judge_cfg is None:
        raise BgError(f"the brand judge in {judges_dir} does not know brand {brand!r}; pass a judge config to train one")
    rng = np.random.default_rng(0)
    pick = rng.choice(len(products), size=min(len(products), max(8 * len(refs), 64)), replace=False).tolist()
    data = concat([refs, products.subset(pick)])
    labels = [brand] * len(refs) + [NO_BRAND] * len(pick)
    return train_judge(data, labels, [NO_BRAND, brand], judge_cfg, run_dir, f"brand-{brand}", progress=False), True


def evaluate_adapter(
    brand: str, adapter_dir: str | Path, base_dir: str | Path, dataset_dir: str | Path, judges_dir: str | Path,
    cfg: EvaluateAdapterConfig, *, products_dir: str | Path | None = None, judge_cfg: JudgeConfig | None = None,
    out_dir: str | Path | None = None, metrics_path: str | Path | None = None, progress: bool = False,
) -> dict:
    """`dataset_dir` holds the brand's references (train = what the adapter saw; val/test = held
    out); `products_dir` (default: the same) holds category-default test products never seen in
    training. A brand unknown to the shared brand judge gets a judge trained here (needs `judge_cfg`)."""
    comps = load(base_dir)
    meta, tensors = load_adapter(adapter_dir, comps.meta.fingerprint)
    pipe = BgPipeline(comps, lora_slots=1, max_rank=meta.rank, lora_targets=meta.targets)
    pipe.slots.activate("slot0", f"{brand}", pipe.slots.prepare(meta, tensors))
    res = comps.meta.resolution
    cat_judge = Judge.load(Path(judges_dir) / "category")
    refs = load_set(dataset_dir, res, splits=("train",), brand=brand)
    own = sorted(set(refs.categories) & set(comps.meta.categories))
    others = [c for c in comps.meta.categories if c not in own][: cfg.other_categories]
    try:
        held_refs, heldout = load_set(dataset_dir, res, splits=("val", "test"), brand=brand), True
    except DataError:  # e.g. a Label Studio brand with references only: compare to those, and say so
        held_refs, heldout = refs, False
    products = load_set(products_dir or dataset_dir, res, splits=("test",), brand="")  # never seen in training
    brand_judge, judge_trained_here = _brand_judge(
        Path(judges_dir), brand, refs, load_set(products_dir or dataset_dir, res, splits=("train",), brand=""),
        judge_cfg, Path(out_dir or ".") / "judge")

    rng = np.random.default_rng(cfg.seed)
    cats = own + others
    n = cfg.per_category * len(cats)
    idx = rng.choice(len(products), size=n, replace=n > len(products)).tolist()
    req = [cats[i % len(cats)] for i in range(n)]
    images = [products.images[i].numpy() for i in idx]
    masks = [products.masks[i].numpy() for i in idx]
    seeds = [cfg.seed + k for k in range(n)]
    s = cfg.sampling
    kw = dict(steps=s.steps, guidance=s.guidance, scheduler=s.scheduler, confine=s.confine, batch_size=s.batch_size, progress=progress)
    without = pipe.generate(images, masks, req, seeds, **kw).images
    with_ad = pipe.generate(images, masks, req, seeds, slots=["slot0"] * n, **kw).images
    m_u8 = torch.from_numpy(np.stack(masks))
    w_u8, wo_u8 = torch.from_numpy(np.stack(with_ad)), torch.from_numpy(np.stack(without))

    own_rows = [i for i, c in enumerate(req) if c in own]
    other_rows = [i for i, c in enumerate(req) if c not in own]
    pred_with, pred_without = brand_judge.predict(w_u8, m_u8), brand_judge.predict(wo_u8, m_u8)

    def brand_acc(pred, rows):
        return accuracy_report([pred[i] for i in rows], [brand] * len(rows), brand_judge.classes)

    brand_with, brand_without = brand_acc(pred_with, own_rows), brand_acc(pred_without, own_rows)
    brand_other = brand_acc(pred_with, other_rows) if other_rows else None
    cat_with = accuracy_report(cat_judge.predict(w_u8[own_rows], m_u8[own_rows]), [req[i] for i in own_rows], cat_judge.classes)
    cat_without = accuracy_report(cat_judge.predict(wo_u8[own_rows], m_u8[own_rows]), [req[i] for i in own_rows], cat_judge.classes)
    cat_real = cat_judge.accuracy(held_refs.images, held_refs.masks, held_refs.categories)
    f_ref = brand_judge.features(held_refs.images, held_refs.masks)
    d_with = _mean_distance(brand_judge.features(w_u8[own_rows], m_u8[own_rows]), f_ref)
    d_without = _mean_distance(brand_judge.features(wo_u8[own_rows], m_u8[own_rows]), f_ref)
    base_size = sum(f.stat().st_size for f in Path(base_dir).rglob("*.safetensors"))
    adapter_size = sum(f.stat().st_size for f in Path(adapter_dir).glob("*.safetensors"))
    metrics = {
        "brand": brand,
        "brand_categories": own,
        "brand_accuracy_with_adapter": brand_with["accuracy"],
        "brand_accuracy_without_adapter": brand_without["accuracy"],
        "brand_accuracy_other_categories": brand_other["accuracy"] if brand_other else None,
        "brand_chance_level": round(1 / len(brand_judge.classes), 4),
        "brand_judge_classes": list(brand_judge.classes),
        "brand_judge_real_heldout": brand_judge.accuracy(held_refs.images, held_refs.masks, [brand] * len(held_refs))["accuracy"],
        "brand_judge_trained_for_this_brand": judge_trained_here,
        "references_heldout": heldout,
        "feature_distance_with_adapter": round(d_with, 4),
        "feature_distance_without_adapter": round(d_without, 4),
        "category_fidelity_with_adapter": cat_with["accuracy"],
        "category_fidelity_without_adapter": cat_without["accuracy"],
        "category_fidelity_real_brand_refs": cat_real["accuracy"],
        "adapter_bytes": adapter_size,
        "adapter_share_of_base": round(adapter_size / max(base_size, 1), 5),
        "n_generated": n,
        "no_brand_label": NO_BRAND,
    }
    metrics["gate"] = gate(metrics, cfg.gate).to_dict()
    if out_dir:
        out = Path(out_dir)
        cols = min(4, len(products))
        rows, labels = [], []
        for c in cats:
            prod = [products.images[j].numpy() for j in range(cols)]
            pm = [products.masks[j].numpy() for j in range(cols)]
            base_imgs = pipe.generate(prod, pm, [c] * cols, list(range(cols)), **kw).images
            ad_imgs = pipe.generate(prod, pm, [c] * cols, list(range(cols)), slots=["slot0"] * cols, **kw).images
            rows.append([im for pair in zip(base_imgs, ad_imgs, strict=True) for im in pair])
            labels.append(c + ("" if c in own else " (other)"))
        save_grid(out / "samples.png", rows, row_labels=labels, col_labels=["base", f"+{brand}"] * cols, tile=96)
    if metrics_path:
        atomic_write_json(metrics_path, metrics)
    return metrics


def format_summary(m: dict) -> str:
    g = m["gate"]
    return (
        f"adapter {m['brand']}: brand judge {m['brand_accuracy_with_adapter']:.3f} with vs "
        f"{m['brand_accuracy_without_adapter']:.3f} without (chance {m['brand_chance_level']:.2f}); "
        f"feature distance {m['feature_distance_with_adapter']:.3f} vs {m['feature_distance_without_adapter']:.3f}; "
        f"category fidelity {m['category_fidelity_with_adapter']:.3f} vs {m['category_fidelity_without_adapter']:.3f} "
        f"(real brand references {m['category_fidelity_real_brand_refs']:.3f}); "
        f"size {m['adapter_share_of_base']:.2%} of the base; gate {'PASS' if g['passed'] else 'FAIL: ' + '; '.join(g['reasons'])}"
    )
