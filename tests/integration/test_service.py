"""The BentoML service over real HTTP: a `bentoml serve` subprocess reading the BentoML model store
and a real adapter registry (fixtures: tests/integration/service_fixtures.py)."""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from bg_platform.model.components import read_meta
from bg_platform.orchestration.adapters import publish_adapter
from bg_platform.registry import Registry

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PASSED = {"gate": {"passed": True, "reasons": []}}


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def product(h: int = 48, w: int = 80, alpha: bool = True, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 4 if alpha else 3), dtype=np.uint8)
    if alpha:
        img[..., 3] = 0
        img[h // 4: 3 * h // 4, w // 3: 2 * w // 3, 3] = 255
    return img


def mask_of(img: np.ndarray) -> np.ndarray:
    return img[..., 3]


def generate(svc, image: bytes, mask: bytes | None = None, path: str = "/generate", client=None, **fields) -> httpx.Response:
    files = {"image": ("product.png", image, "image/png")}
    if mask is not None:
        files["mask"] = ("mask.png", mask, "image/png")
    data = {k: str(v) for k, v in fields.items() if v is not None}
    return (client or httpx).post(f"{svc.url}{path}", files=files, data=data, timeout=120)


def decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in Prometheus text (label order does not matter)."""
    for line in text.splitlines():
        m = re.fullmatch(rf"{re.escape(name)}\{{(.*)\}} (\S+)", line)
        if m and dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))) == labels:
            return float(m.group(2))
    return None


def test_readyz_brands_and_categories(bg_service, serving_artifacts):
    assert httpx.get(f"{bg_service.url}/readyz", timeout=10).status_code == 200
    production = Registry(serving_artifacts.registry).production_versions()
    for method in ("GET", "POST"):
        body = httpx.request(method, f"{bg_service.url}/brands", timeout=10).json()
        assert body["brands"] == production and body["base_fingerprint"] == serving_artifacts.fingerprint
        cats = httpx.request(method, f"{bg_service.url}/categories", timeout=10).json()["categories"]
        assert cats == list(read_meta(serving_artifacts.base).categories)


def test_generate_for_every_category_and_brand(bg_service, serving_artifacts):
    img = product()
    served = httpx.get(f"{bg_service.url}/brands", timeout=10).json()["brands"]
    assert sorted(served) == ["aurora", "kinetic", "verdant"]
    keep = mask_of(img) >= 128
    for cat in read_meta(serving_artifacts.base).categories:
        r = generate(bg_service, png(img), category=cat, seed=1)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["brand"], body["adapter_version"], body["seeds"]) == (None, None, [1])
        out = decode(body["images"][0])
        assert out.shape == (48, 80, 3)  # the input's size, not the model's 64 px
        assert np.array_equal(out[keep], img[..., :3][keep])  # product pixels are the input's
    for brand, version in served.items():
        r = generate(bg_service, png(img[..., :3]), mask=png(mask_of(img)), category="wood", brand=brand, seed=4,
                     num_images=2, steps=2, guidance=2.5)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["brand"], body["adapter_version"], body["seeds"]) == (brand, version, [4, 5])
        assert body["base_fingerprint"] == serving_artifacts.fingerprint and len(body["images"]) == 2


def test_generate_png_names_the_versions_in_headers(bg_service):
    served = httpx.get(f"{bg_service.url}/brands", timeout=10).json()["brands"]
    r = generate(bg_service, png(product()), path="/generate_png", category="marble", brand="verdant", seed=7)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-bgp-adapter-version"] == served["verdant"] and r.headers["x-bgp-seed"] == "7"
    assert Image.open(io.BytesIO(r.content)).size == (80, 48)


BAD = [
    ("not an image", {"image": b"hello, not a picture"}, 400, "image: not an image"),
    ("too many pixels", {"image": png(np.full((400, 400, 4), 200, np.uint8))}, 400, "pixel limit"),
    ("too many bytes", {"image": bytes(310_000)}, 413, "image: 310000 bytes exceeds the 300000-byte limit"),
    ("body over the limit", {"image": bytes(700_000)}, 413, "request body"),
    ("unknown category", {"category": "kitchen"}, 400, "category: unknown value 'kitchen'; allowed values: ['bokeh'"),
    ("missing category", {"category": None}, 400, "category: missing"),
    ("unknown brand", {"brand": "acme"}, 400, "brand: unknown value 'acme'; allowed values: ['aurora', 'kinetic', 'verdant']"),
    ("mask size mismatch", {"mask": png(np.full((10, 10), 255, np.uint8))}, 400, "mask: size 10x10 differs"),
    ("empty mask", {"mask": png(np.zeros((48, 80), np.uint8))}, 400, "mask: empty"),
    ("no mask, no alpha", {"image": png(product(alpha=False))}, 400, "mask: not given"),
    ("too many images", {"num_images": 99}, 400, "num_images: 99"),
    ("too many steps", {"steps": 1000}, 400, "steps: 1000"),
    ("seed not a number", {"seed": "abc"}, 400, "validation error"),
]


@pytest.mark.parametrize(("fields", "status", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_with_a_message(bg_service, fields, status, words):
    fields = {"image": png(product()), "category": "wood", **fields}
    r = generate(bg_service, fields.pop("image"), mask=fields.pop("mask", None), **fields)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_reload_requires_the_admin_token(bg_service):
    url = f"{bg_service.url}/reload"
    r = httpx.post(url, timeout=30)
    assert r.status_code == 401 and "Bearer" in r.json()["error"] and r.headers["www-authenticate"].startswith("Bearer")
    assert httpx.post(url, headers={"Authorization": "Bearer nope"}, timeout=30).status_code == 403
    r = httpx.post(url, headers={"Authorization": f"Bearer {bg_service.token}"}, timeout=30)
    assert r.status_code == 200 and set(r.json()["brands"]) == {"aurora", "kinetic", "verdant"}
    assert r.json()["refused"] == {}


def test_promotion_and_rollback_under_load_fail_no_request(bg_service, serving_artifacts):
    reg = Registry(serving_artifacts.registry)
    v1 = reg.resolve("aurora", "production").version
    results: list[tuple[float, float, int, str | None]] = []  # (sent, answered, status, version)
    stop = threading.Event()

    def client(seed: int) -> None:
        with httpx.Client(timeout=120) as c:
            while not stop.is_set():
                sent = time.monotonic()
                r = generate(bg_service, png(product()), client=c, category="wood", brand="aurora", seed=seed, steps=1)
                version = r.json().get("adapter_version") if r.status_code == 200 else None
                results.append((sent, time.monotonic(), r.status_code, version))

    def first_answer(version: str, after: float, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [answered for sent, answered, _, v in list(results) if v == version and sent > after]
            if hits:
                return min(hits)
            time.sleep(0.05)
        raise AssertionError(f"no response carried {version} within {timeout} s")

    threads = [threading.Thread(target=client, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    try:
        first_answer(v1, 0)
        promoted_at = time.monotonic()
        v2 = publish_adapter(serving_artifacts.registry, "aurora", serving_artifacts.adapters["aurora-v2"], PASSED).version
        seen_v2 = first_answer(v2, promoted_at)
        time.sleep(1.0)
        rolled_back_at = time.monotonic()
        assert reg.rollback("aurora").version == v1
        seen_v1 = first_answer(v1, rolled_back_at)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert results and all(status == 200 for _, _, status, _ in results), [r for r in results if r[2] != 200][:3]
    assert {v for *_, v in results} == {v1, v2}
    # once a response carried the new version, every request sent later carries it too (atomic swap)
    assert all(v == v2 for sent, _, _, v in results if seen_v2 < sent and sent < rolled_back_at)
    assert all(v == v1 for sent, _, _, v in results if sent > seen_v1)


def test_corrupt_version_is_refused_and_the_old_one_keeps_serving(bg_service, serving_artifacts):
    reg = Registry(serving_artifacts.registry)
    old = reg.resolve("kinetic", "production").version
    bad = publish_adapter(serving_artifacts.registry, "kinetic", serving_artifacts.adapters["kinetic"], PASSED,
                          promote=False).version
    stored = Path(serving_artifacts.registry) / "kinetic" / "versions" / bad / "adapter.safetensors"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    reg.promote("kinetic", bad)
    auth = {"Authorization": f"Bearer {bg_service.token}"}
    try:
        r = httpx.post(f"{bg_service.url}/reload", headers=auth, timeout=60)
        assert r.status_code == 200
        body = r.json()
        assert body["brands"]["kinetic"] == old
        assert body["refused"]["kinetic"]["version"] == bad and body["refused"]["kinetic"]["reason"] == "checksum"
        assert "sha256" in body["refused"]["kinetic"]["message"]
        g = generate(bg_service, png(product()), category="tiles", brand="kinetic")
        assert g.status_code == 200 and g.json()["adapter_version"] == old
        metrics = httpx.get(f"{bg_service.url}/metrics", timeout=30).text
        labels = {"brand": "kinetic", "version": bad, "reason": "checksum"}
        assert metric(metrics, "bgp_adapter_refused_total", **labels) >= 1
        assert metric(metrics, "bgp_adapter_refused_current", **labels) == 1
    finally:
        reg.rollback("kinetic")
        r = httpx.post(f"{bg_service.url}/reload", headers=auth, timeout=60).json()
        assert r["brands"]["kinetic"] == old and "kinetic" not in r["refused"]


def test_metrics_expose_the_serving_series(bg_service):
    assert generate(bg_service, png(product()), category="paper", brand="verdant").status_code == 200
    text = httpx.get(f"{bg_service.url}/metrics", timeout=30).text
    for series in ("bgp_requests_total{endpoint=\"generate\",status=\"200\"}", "bgp_request_latency_seconds_bucket",
                   "bgp_adapter_activations_total", "bgp_adapter_cache_hits_total", "bgp_adapter_cache_misses_total",
                   "bgp_adapter_cache_evictions_total", "bgp_adapter_cache_entries", "bgp_batch_images_bucket",
                   "bgp_base_loaded{fingerprint=", "bgp_registry_polls_total{outcome=\"ok\"}", "bentoml_service_request_total"):
        assert series in text, series
    served = httpx.get(f"{bg_service.url}/brands", timeout=10).json()["brands"]
    for brand, version in served.items():
        assert metric(text, "bgp_adapter_loaded", brand=brand, version=version) == 1


@pytest.mark.slow
def test_built_bento_serves(bento_home, serving_artifacts, tmp_path):
    from service_fixtures import BIN, start_bento_server, stop_server

    env = {**os.environ, "BENTOML_HOME": str(bento_home), "BENTOML_DO_NOT_TRACK": "True", "HF_HUB_OFFLINE": "1"}
    build = subprocess.run([str(BIN / "bentoml"), "build", "-f", "bentofile.yaml", "../.."], cwd=ROOT / "bentos" / "bg_service",
                           env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    tag = re.search(r'Successfully built Bento\(tag="([^"]+)"\)', build.stdout).group(1)
    src = bento_home / "bentos" / tag.replace(":", "/") / "src"
    assert (src / "bg_platform" / "serving" / "engine.py").is_file() and (src / "bentos" / "bg_service" / "service.py").is_file()
    server = start_bento_server(tag, bento_home, serving_artifacts.registry, tmp_path / "server.log", cwd=tmp_path)
    try:
        r = generate(server, png(product()), category="wood", brand="aurora")
        assert r.status_code == 200 and r.json()["adapter_version"] == Registry(serving_artifacts.registry).resolve(
            "aurora", "production").version
    finally:
        stop_server(server.process)
