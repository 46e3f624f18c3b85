"""Request validation at the edge: every bad input is a 4xx naming the field, never a 500."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bg_platform.serving.config import ServingConfig
from bg_platform.serving.errors import BadRequest, PayloadTooLarge, http_status
from bg_platform.serving.requests import check_brand, parse_generate

CATS = ("marble", "wood")
CFG = ServingConfig(base_dir="unused", max_upload_bytes=200_000, max_pixels=128 * 128, max_num_images=4, max_steps=50)


def png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def product(h: int = 64, w: int = 64, alpha: bool = True) -> np.ndarray:
    img = np.full((h, w, 4 if alpha else 3), 180, np.uint8)
    if alpha:
        img[..., 3] = 0
        img[h // 4: 3 * h // 4, w // 4: 3 * w // 4, 3] = 255
    return img


def mask(h: int = 64, w: int = 64) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
    return m


def parse(**kw):
    kw.setdefault("image", png(product()))
    kw.setdefault("category", "wood")
    return parse_generate(CFG, CATS, **kw)


def test_alpha_is_the_mask_and_defaults_apply():
    r = parse(seed=7, num_images=3)
    assert r.image.shape == (64, 64, 3) and r.mask.shape == (64, 64)
    assert r.mask[32, 32] == 255 and r.mask[0, 0] == 0
    assert r.seeds == (7, 8, 9) and r.steps == CFG.steps and r.guidance == CFG.guidance and r.brand is None


def test_mask_upload_wins_over_alpha_and_jpeg_is_accepted(tmp_path):
    image = tmp_path / "p.jpg"
    image.write_bytes(png(product(alpha=False), "JPEG"))  # a path, as BentoML hands uploads over
    m = mask()
    m[:, :] = 0
    m[0:8, 0:8] = 255
    r = parse(image=image, mask=png(m), brand="acme")
    assert r.mask[4, 4] == 255 and r.mask[32, 32] == 0 and r.brand == "acme"


def test_seed_is_random_when_not_given():
    seeds = {parse().seeds[0] for _ in range(5)}
    assert len(seeds) > 1


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"image": None}, 400, ["image: missing"]),
        ({"image": b"definitely not an image"}, 400, ["image:", "PNG or JPEG"]),
        ({"image": b""}, 400, ["image:", "empty"]),
        ({"image": b"\0" * 200_001}, 413, ["image:", "200000-byte limit"]),
        ({"image": png(product(200, 200))}, 400, ["image:", "pixel limit"]),
        ({"category": "kitchen"}, 400, ["category: unknown value 'kitchen'", "['marble', 'wood']"]),
        ({"category": None}, 400, ["category: missing", "['marble', 'wood']"]),
        ({"image": png(product(alpha=False))}, 400, ["mask: not given", "no transparency"]),
        ({"mask": png(mask(32, 32))}, 400, ["mask: size 32x32 differs", "64x64"]),
        ({"mask": png(np.zeros((64, 64), np.uint8))}, 400, ["mask: empty"]),
        ({"mask": png(np.full((64, 64), 255, np.uint8))}, 400, ["mask: covers"]),
        ({"mask": b"GIF89a broken"}, 400, ["mask:"]),
        ({"num_images": 0}, 400, ["num_images: 0", "1..4"]),
        ({"num_images": 5}, 400, ["num_images: 5", "1..4"]),
        ({"num_images": "2"}, 400, ["num_images: '2' is not an integer"]),
        ({"steps": 51}, 400, ["steps: 51", "1..50"]),
        ({"steps": 2.5}, 400, ["steps: 2.5 is not an integer"]),
        ({"guidance": 0.5}, 400, ["guidance: 0.5", "[1, 30]"]),
        ({"seed": -1}, 400, ["seed: -1"]),
        ({"seed": 2**32 - 1, "num_images": 2}, 400, ["seed:"]),
        ({"scheduler": "lms"}, 400, ["scheduler: unknown value 'lms'", "ddim"]),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(fields, status, words):
    with pytest.raises(BadRequest) as info:
        parse(**fields)
    assert http_status(info.value) == status
    assert isinstance(info.value, PayloadTooLarge) == (status == 413)
    for word in words:
        assert word in str(info.value)


def test_oversized_path_upload_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 300_000)
    with pytest.raises(PayloadTooLarge, match="image: 300000 bytes"):
        parse(image=big)


def test_unknown_brand_lists_the_served_brands():
    check_brand(None, [])
    check_brand("acme", ["acme"])
    with pytest.raises(BadRequest, match=r"brand: unknown value 'nope'; allowed values: \['acme', 'globex'\]"):
        check_brand("nope", ["globex", "acme"])


def test_config_from_env_with_clear_errors():
    from bg_platform.errors import ConfigError

    cfg = ServingConfig.from_env({"BGP_BASE_DIR": "/m", "BGP_SLOTS": "2", "BGP_CROSS_BRAND_BATCHING": "off",
                                  "BGP_POLL_INTERVAL_S": "0.5", "BGP_REGISTRY": ""}, cache_size=3)
    assert (cfg.base_dir, cfg.slots, cfg.cross_brand_batching, cfg.poll_interval_s, cfg.cache_size) == ("/m", 2, False, 0.5, 3)
    assert cfg.registry_root == "registry"  # empty variable = unset
    with pytest.raises(ConfigError, match="BGP_SLOTS='two' is not an integer"):
        ServingConfig.from_env({"BGP_BASE_DIR": "/m", "BGP_SLOTS": "two"})
    with pytest.raises(ConfigError, match="BGP_CROSS_BRAND_BATCHING='maybe' is not a boolean"):
        ServingConfig.from_env({"BGP_BASE_DIR": "/m", "BGP_CROSS_BRAND_BATCHING": "maybe"})
    with pytest.raises(ConfigError) as info:
        ServingConfig.from_env({}, slots=8, cache_size=4, scheduler="lms")
    text = str(info.value)
    assert "base_dir (BGP_BASE_DIR): '' is empty" in text and "cache_size (BGP_CACHE_SIZE): 4 must be >= slots" in text
    assert "scheduler (BGP_SCHEDULER): 'lms'" in text
    assert "BGP_MAX_RANK" in ServingConfig.explain()
    assert ServingConfig.env_value("max_upload_bytes", {"BGP_MAX_UPLOAD_BYTES": "123"}) == 123
    assert ServingConfig.env_value("max_upload_bytes", {}) == ServingConfig.max_upload_bytes
