"""Training the judges from a dataset: a category judge (category-default samples) and, when the
dataset has brands, a brand judge (classes: "none" + each brand). Real images only."""

from __future__ import annotations

from pathlib import Path

from bg_platform.config import Params
from bg_platform.evaluation.judge import Judge, train_judge
from bg_platform.training.data import ImageSet, load_set

NO_BRAND = "none"


def brand_label(brand: str) -> str:
    return brand or NO_BRAND


def train_judges(params: Params, dataset_dir: str | Path, progress: bool = True) -> dict:
    cfg = params.judges
    res = params.model.resolution
    out = Path(cfg.out_dir)
    run_dir = Path(cfg.run_dir)
    metrics = {}

    train = load_set(dataset_dir, res, splits=("train",), brand="")
    test = load_set(dataset_dir, res, splits=("test",), brand="")
    classes = sorted(set(train.categories))
    judge = train_judge(train, train.categories, classes, cfg, run_dir, "category", progress)
    metrics["category"] = {"classes": classes, "heldout": judge.accuracy(test.images, test.masks, test.categories)}
    judge.save(out / "category", metrics["category"])

    all_train = load_set(dataset_dir, res, splits=("train",), brand=None)
    brands = sorted({b for b in all_train.brands if b})
    if brands:
        all_test = load_set(dataset_dir, res, splits=("test", "val"), brand=None)
        bclasses = [NO_BRAND, *brands]
        bj = train_judge(all_train, [brand_label(b) for b in all_train.brands], bclasses, cfg, run_dir, "brand", progress)
        metrics["brand"] = {
            "classes": bclasses,
            "heldout": bj.accuracy(all_test.images, all_test.masks, [brand_label(b) for b in all_test.brands]),
        }
        bj.save(out / "brand", metrics["brand"])
    return metrics


def load_judge(params: Params, name: str) -> Judge:
    return Judge.load(Path(params.judges.out_dir) / name)


__all__ = ["ImageSet", "brand_label", "load_judge", "train_judges"]
