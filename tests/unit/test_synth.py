"""BG-Synth: deterministic, varied, exact masks, held-out products, brands with a style."""

from __future__ import annotations

import numpy as np
import pytest

from bg_platform.config import SynthConfig
from bg_platform.data import manifest
from bg_platform.data.imageio import read_image, read_mask
from bg_platform.data.synth import BRANDS, CATEGORIES, FAMILIES, generate, plan, render_sample
from bg_platform.errors import ConfigError

SMALL = SynthConfig(samples_per_category=12, samples_per_brand=9, products=36, workers=1)


def test_at_least_8_categories_5_families_3_brands():
    assert len(CATEGORIES) >= 8 and len(FAMILIES) >= 5 and len(BRANDS) >= 3


def test_generate_writes_a_manifest_dataset(tmp_path):
    out = generate(SMALL, tmp_path / "ds", progress=False)
    frame = manifest.read(out)
    assert len(frame) == 8 * 12 + 3 * 9
    assert set(frame.category) == set(CATEGORIES)
    assert set(frame.brand) == {"", *BRANDS}
    assert set(frame.split) == {"train", "val", "test"}
    rec = frame.iloc[0]
    img = read_image(out / rec.image)
    assert img.rgb.shape == (64, 64, 3) and img.alpha is None
    mask = read_mask(out / rec["mask"])
    assert set(np.unique(mask)) <= {0, 255}
    assert not list(tmp_path.glob(".ds.tmp-*")), "no temporary folder left behind"


def test_deterministic_by_seed_and_independent_of_workers(tmp_path):
    a = manifest.read(generate(SMALL, tmp_path / "a", progress=False))
    b = manifest.read(generate(SynthConfig(**{**SMALL.__dict__, "workers": 2}), tmp_path / "b", progress=False))
    assert list(a.sha256) == list(b.sha256)
    c = manifest.read(generate(SynthConfig(**{**SMALL.__dict__, "seed": 1}), tmp_path / "c", progress=False))
    assert set(a.sha256).isdisjoint(set(c.sha256))


def test_no_two_samples_alike():
    specs = plan(SynthConfig(samples_per_category=30, samples_per_brand=0, products=36))
    imgs = [render_sample(s, 64)[0] for s in specs]
    flat = np.stack(imgs).reshape(len(imgs), -1).astype(np.int16)
    for i in range(len(flat)):
        diffs = np.abs(flat[i + 1 :] - flat[i]).mean(1)
        assert (diffs > 1.0).all(), f"sample {specs[i].id} nearly identical to another"


def test_held_out_splits_never_share_a_product():
    specs = plan(SynthConfig(samples_per_category=40, samples_per_brand=20, products=60))
    by_split = {s: {x.product.id for x in specs if x.split == s} for s in ("train", "val", "test")}
    assert by_split["test"] and by_split["val"]
    assert by_split["train"].isdisjoint(by_split["test"]) and by_split["train"].isdisjoint(by_split["val"])
    assert by_split["val"].isdisjoint(by_split["test"])
    test_families = {x.product.family for x in specs if x.split == "test"}
    assert test_families == set(FAMILIES)


def test_masks_are_exact_product_pixels():
    """Outside the mask the image is the background layer, inside it is the product layer."""
    from bg_platform.data.synth.generator import render_layers, to_uint8

    for spec in plan(SMALL)[::7]:
        img, mask = render_sample(spec, 64)
        bg, rgb, inside = render_layers(spec, 64)
        assert ((mask == 255) == inside).all()
        assert (img[~inside] == to_uint8(bg)[~inside]).all()
        assert (img[inside] == to_uint8(rgb)[inside]).all()
        assert 0.02 < inside.mean() < 0.85


def _features(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    f = img.astype(np.float64) / 255
    bg = mask < 128
    dx = np.abs(np.diff(f, axis=1)).mean(2)[bg[:, 1:]].mean()
    dy = np.abs(np.diff(f, axis=0)).mean(2)[bg[1:, :]].mean()
    coarse = f.reshape(4, 16, 4, 16, 3).mean((1, 3)).ravel()
    return np.concatenate([f[bg].mean(0), f[bg].std(0), [dx, dy], coarse])


def test_categories_are_distinguishable_by_simple_statistics():
    """A nearest-centroid classifier on colour / gradient / layout statistics separates the
    category families on fresh samples: each category has its own look."""
    train = plan(SynthConfig(samples_per_category=40, samples_per_brand=0, products=60, seed=0))
    test = plan(SynthConfig(samples_per_category=15, samples_per_brand=0, products=60, seed=1))
    x_tr = np.stack([_features(*render_sample(s, 64)) for s in train])
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    cents = {c: ((x_tr[[i for i, s in enumerate(train) if s.category == c]] - mu) / sd).mean(0) for c in CATEGORIES}
    hits = 0
    for s in test:
        f = (_features(*render_sample(s, 64)) - mu) / sd
        hits += min(cents, key=lambda c: np.linalg.norm(f - cents[c])) == s.category
    assert hits / len(test) >= 0.8


@pytest.mark.parametrize("brand", sorted(BRANDS))
def test_brand_style_differs_visibly_from_the_category_default(brand):
    from dataclasses import replace

    specs = [s for s in plan(SynthConfig(samples_per_category=1, samples_per_brand=6, products=36)) if s.brand == brand]
    assert {s.category for s in specs} <= set(BRANDS[brand].categories)
    for s in specs:
        branded, mask = render_sample(s, 64)
        plain, _ = render_sample(replace(s, brand=""), 64)
        bg = mask < 128
        diff = np.abs(branded.astype(int) - plain.astype(int)).mean(2)[bg]
        assert (diff > 30).mean() > 0.15, "brand elements must change a visible share of the background"


def test_unknown_category_or_brand_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown 'granite'"):
        plan(SynthConfig(categories=("granite",)))
    with pytest.raises(ConfigError, match="unknown 'acme'"):
        plan(SynthConfig(brands=("acme",)))


def test_image_size_is_configurable(tmp_path):
    out = generate(SynthConfig(**{**SMALL.__dict__, "image_size": 96, "samples_per_brand": 0}), tmp_path / "d", progress=False)
    rec = manifest.read(out).iloc[0]
    assert read_image(out / rec.image).rgb.shape == (96, 96, 3)
