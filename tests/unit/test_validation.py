"""Data validation: good data passes; each kind of bad input fails with a report that names the row,
the rule and a fix, and nothing ends in a traceback. One GX context serves the whole module
(bg_platform.validation.suite caches it per process)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bg_platform.config import ImageIOConfig, ValidateConfig
from bg_platform.data import imageio, manifest
from bg_platform.errors import DataError
from bg_platform.validation import PASSED_NAME, RULES, validate_dataset, write_metrics

CFG = ValidateConfig(min_per_category=3, min_per_brand=2)
IO = ImageIOConfig()
SIZE = 64


def _mask(h: int = SIZE, w: int = SIZE) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255  # 25 % product
    return m


def _png(array: np.ndarray) -> bytes:
    return imageio.encode_png(array)


def make_dataset(root: Path, per_category: int = 4, brand_rows: int = 2) -> pd.DataFrame:
    """A small dataset that passes CFG: two categories, one brand, distinct random images."""
    rng = np.random.default_rng(7)
    samples = []
    n = 0
    for category in ("marble", "wood"):
        for k in range(per_category):
            sid = f"{category}{k}"
            data = imageio.write_png(
                root / "images" / f"{sid}.png", rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)
            )
            imageio.write_png(root / "masks" / f"{sid}.png", _mask())
            samples.append(
                manifest.Sample(
                    id=sid,
                    image=f"images/{sid}.png",
                    mask=f"masks/{sid}.png",
                    category=category,
                    brand="acme" if n < brand_rows else "",
                    caption="",
                    split=("train", "val", "test", "train")[k % 4],
                    width=SIZE,
                    height=SIZE,
                    sha256=imageio.sha256_bytes(data),
                    source="folder",
                )
            )
            n += 1
    frame = manifest.to_frame(samples)
    manifest.write(frame, root)
    return frame


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good")
    make_dataset(root)
    return root


@pytest.fixture
def ds(good_dir, tmp_path) -> Path:
    """A private copy of the good dataset for a test to break."""
    shutil.copytree(good_dir, tmp_path / "ds")
    return tmp_path / "ds"


def _set(root: Path, frame: pd.DataFrame, sid: str, **values) -> pd.DataFrame:
    idx = frame.index[frame["id"] == sid][0]
    for key, value in values.items():
        frame.loc[idx, key] = value
    return frame


def _write_file(root: Path, frame: pd.DataFrame, sid: str, data: bytes, column: str = "image") -> None:
    """Replace a sample's file and keep the manifest's sha256 honest (as an importer would)."""
    rel = frame.loc[frame["id"] == sid, column].iloc[0]
    (root / rel).write_bytes(data)
    if column == "image":
        _set(root, frame, sid, sha256=imageio.sha256_bytes(data))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb costs nothing to make."""
    data = bytearray(_png(np.zeros((8, 8), np.uint8)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# --- the bad inputs: (mutation, row ids that must be reported, rules that must fail) -------------------


def truncated(root, f):
    good = (root / "images/marble0.png").read_bytes()
    _write_file(root, f, "marble0", good[: len(good) // 2])
    return {"marble0"}, {"image_decodable"}


def zero_bytes(root, f):
    _write_file(root, f, "marble0", b"")
    return {"marble0"}, {"image_not_empty"}


def not_an_image(root, f):
    _write_file(root, f, "marble0", b"%PDF-1.4 this is not an image\n" * 20)
    return {"marble0"}, {"image_decodable"}


def one_pixel(root, f):
    _write_file(root, f, "marble0", _png(np.zeros((1, 1, 3), np.uint8)))
    (root / "masks/marble0.png").write_bytes(_png(np.full((1, 1), 255, np.uint8)))
    _set(root, f, "marble0", width=1, height=1)
    return {"marble0"}, {"image_min_side"}


def beyond_max_side(root, f):
    _write_file(root, f, "marble0", _png(np.full((40, 4100, 3), 90, np.uint8)))
    (root / "masks/marble0.png").write_bytes(_png(_mask(40, 4100)))
    _set(root, f, "marble0", width=4100, height=40)
    return {"marble0"}, {"image_max_side"}


def decompression_bomb(root, f):
    _write_file(root, f, "marble0", _png_claiming(8000, 8000))  # 64 Mpx > imageio.max_pixels (40 Mpx)
    _write_file(root, f, "marble1", _png_claiming(50_000, 50_000))  # beyond Pillow's own bomb guard
    return {"marble0", "marble1"}, {"image_decodable"}


def empty_mask(root, f):
    (root / "masks/marble0.png").write_bytes(_png(np.zeros((SIZE, SIZE), np.uint8)))
    return {"marble0"}, {"coverage"}


def full_mask(root, f):
    (root / "masks/marble0.png").write_bytes(_png(np.full((SIZE, SIZE), 255, np.uint8)))
    return {"marble0"}, {"coverage"}


def mask_size_mismatch(root, f):
    (root / "masks/marble0.png").write_bytes(_png(_mask(32, 32)))
    return {"marble0"}, {"mask_size_matches"}


def grey_mask(root, f):
    (root / "masks/marble0.png").write_bytes(_png(np.tile(np.arange(SIZE, dtype=np.uint8) * 4, (SIZE, 1))))
    return {"marble0"}, {"mask_binary"}


def undecodable_mask(root, f):
    (root / "masks/marble0.png").write_bytes(b"GIF89a but not really")
    return {"marble0"}, {"mask_decodable"}


def missing_mask(root, f):
    (root / "masks/marble0.png").unlink()
    return {"marble0"}, {"mask_exists"}


def unknown_category(root, f):
    _set(root, f, "marble0", category="Granite/Stone!")
    return {"marble0"}, {"category_known"}


def brand_with_separator(root, f):
    _set(root, f, "wood0", brand="acme/../etc")  # wood0 has no brand: acme keeps its 2 rows
    return {"wood0"}, {"brand_valid"}


def brand_with_space(root, f):
    _set(root, f, "wood0", brand="Acme Shoes")
    return {"wood0"}, {"brand_valid"}


def duplicate_images(root, f):
    _write_file(root, f, "wood1", (root / "images/marble1.png").read_bytes())
    return {"marble1", "wood1"}, {"no_duplicates"}


def missing_file(root, f):
    (root / "images/wood2.png").unlink()
    return {"wood2"}, {"image_exists"}


def few_per_category(root, f):
    _set(root, f, "wood3", category="tiles")
    return {"wood3"}, {"category_count"}


def few_per_brand(root, f):
    _set(root, f, "wood3", brand="solo")
    return {"wood3"}, {"brand_count"}


def bad_split(root, f):
    _set(root, f, "wood3", split="training")
    return {"wood3"}, {"split_valid"}


def duplicate_id(root, f):
    _set(root, f, "wood3", id="wood2")
    return {"wood2"}, {"id_unique"}


def bad_id(root, f):
    _set(root, f, "wood3", id="wood 3/x")
    return {"wood 3/x"}, {"id_format"}


def stale_manifest(root, f):
    _set(root, f, "wood3", sha256="0" * 64)
    return {"wood3"}, {"manifest_matches"}


def product_leak(root, f):
    _set(root, f, "wood0", product="mug7")  # train
    _set(root, f, "wood2", product="mug7")  # test
    return {"wood0", "wood2"}, {"product_one_split"}


CASES: list[Callable] = [
    truncated, zero_bytes, not_an_image, one_pixel, beyond_max_side, decompression_bomb, empty_mask,
    full_mask, mask_size_mismatch, grey_mask, undecodable_mask, missing_mask, unknown_category,
    brand_with_separator, brand_with_space, duplicate_images, missing_file, few_per_category,
    few_per_brand, bad_split, duplicate_id, bad_id, stale_manifest, product_leak,
]  # fmt: skip


def _break(root: Path, case: Callable) -> tuple[set[str], set[str]]:
    frame = manifest.read(root)
    ids, rules = case(root, frame)
    manifest.write(frame, root)
    return ids, rules


def test_good_data_passes_and_writes_the_gate(good_dir, tmp_path):
    reports = tmp_path / "reports"
    result = validate_dataset(good_dir, CFG, IO, None, reports)
    assert result.success, result.report
    assert result.failures == []
    assert result.summary.startswith("validation passed") and "\n" not in result.summary
    assert result.metrics["samples"] == 8
    assert result.metrics["splits"] == {"train": 4, "val": 2, "test": 2}
    assert result.metrics["categories"] == {"marble": 4, "wood": 4}
    assert result.metrics["brands"] == {"acme": 2}
    assert result.metrics["failed_rules"] == {} and result.metrics["passed"] is True
    for name in ("report.md", "gx_result.json", "stats.parquet", "metrics.json", PASSED_NAME):
        assert (reports / name).is_file(), name
    assert json.loads((reports / "gx_result.json").read_text())["statistics"][
        "evaluated_expectations"
    ] == len(RULES)
    stats = pd.read_parquet(reports / "stats.parquet")
    assert len(stats) == 8 and stats["coverage"].tolist() == [0.25] * 8
    # Deterministic gate file, so DVC does not re-run downstream stages for nothing.
    first = (reports / PASSED_NAME).read_bytes()
    validate_dataset(good_dir / manifest.MANIFEST_NAME, CFG, IO, None, reports)
    assert (reports / PASSED_NAME).read_bytes() == first
    assert not [p for p in reports.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_fails_with_row_rule_and_fix(ds, tmp_path, case):
    bad_ids, rules = _break(ds, case)
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / PASSED_NAME).write_text("{}")  # stale marker from an earlier good run
    result = validate_dataset(ds, CFG, IO, ("marble", "wood", "tiles"), reports)

    assert not result.success
    failed = {f.rule: f for f in result.failures}
    assert rules <= set(failed), result.report
    for rule in rules:
        assert set(failed[rule].ids) == bad_ids, (rule, failed[rule].ids)
        assert failed[rule].fix and failed[rule].found
    # Only the broken rows are blamed (each problem is reported where it belongs).
    assert {i for f in result.failures for i in f.ids} <= bad_ids, result.report
    for rule in rules:
        section = result.report.split(f"## {rule}:")[1].split("\n## ")[0]
        assert "Fix: " in section
        for sid in bad_ids:
            assert f"| {sid} |" in section
    assert (reports / "report.md").read_text() == result.report
    assert (reports / "gx_result.json").is_file() and (reports / "stats.parquet").is_file()
    assert not (reports / PASSED_NAME).exists()
    assert "Traceback" not in result.report
    assert result.metrics["passed"] is False and set(result.metrics["failed_rules"]) >= rules


def test_found_values_say_what_is_wrong(ds, tmp_path):
    frame = manifest.read(ds)
    decompression_bomb(ds, frame)
    _set(ds, frame, "wood3", brand="Acme Shoes")
    manifest.write(frame, ds)
    result = validate_dataset(ds, CFG, IO, None, tmp_path / "r")
    failed = {f.rule: dict(zip(f.ids, f.found, strict=True)) for f in result.failures}
    assert "40000000-pixel limit" in failed["image_decodable"]["marble0"]
    assert "decompression bomb" in failed["image_decodable"]["marble1"]
    assert failed["brand_valid"]["wood3"] == "brand 'Acme Shoes'"


def test_every_problem_is_reported_at_once(ds, tmp_path):
    frame = manifest.read(ds)
    expected: dict[str, set[str]] = {}
    # Rows that don't collide: each case breaks its own row(s).
    for case in (truncated, missing_file, bad_split, empty_mask):
        ids, rules = case(ds, frame)
        for rule in rules:
            expected.setdefault(rule, set()).update(ids)
    _set(ds, frame, "wood1", category="Bad/Category")
    expected["category_known"] = {"wood1"}
    manifest.write(frame, ds)
    result = validate_dataset(ds, CFG, IO, None, tmp_path / "r")
    got = {f.rule: set(f.ids) for f in result.failures}
    for rule, ids in expected.items():
        assert got.get(rule, set()) >= ids, (rule, got)


def test_empty_manifest_fails(tmp_path):
    manifest.write(manifest.to_frame([]), tmp_path / "ds")
    result = validate_dataset(tmp_path / "ds", CFG, IO, None, tmp_path / "r")
    assert [f.rule for f in result.failures] == ["not_empty"]
    assert "0 rows" in result.report


def test_known_categories_config_wins_over_caller_list(ds, tmp_path):
    cfg = ValidateConfig(min_per_category=3, min_per_brand=2, known_categories=("marble",))
    result = validate_dataset(ds, cfg, IO, ("marble", "wood"), tmp_path / "r")
    failed = {f.rule: f for f in result.failures}
    assert set(failed) == {"category_known"}
    assert sorted(failed["category_known"].ids) == [f"wood{i}" for i in range(4)]
    assert "['marble']" in failed["category_known"].fix


def test_missing_manifest_is_a_data_error_and_clears_the_gate(tmp_path):
    reports = tmp_path / "r"
    reports.mkdir()
    (reports / PASSED_NAME).write_text("{}")
    with pytest.raises(DataError, match="no manifest"):
        validate_dataset(tmp_path / "nowhere", CFG, IO, None, reports)
    assert not (reports / PASSED_NAME).exists()


def test_stats_decode_each_kind_without_raising(ds):
    from bg_platform.validation.stats import compute_stats

    frame = manifest.read(ds)
    for case in (truncated, missing_file, undecodable_mask):
        case(ds, frame)
    stats = compute_stats(frame, ds, CFG, IO)
    row = stats.set_index("id")
    assert row.loc["marble0", "image_decodable"] is not pd.NA and not row.loc["marble0", "image_decodable"]
    assert pd.isna(row.loc["wood2", "image_decodable"]) and not row.loc["wood2", "image_exists"]
    assert "truncated" in row.loc["marble0", "image_error"] or "decoded" in row.loc["marble0", "image_error"]
    assert row.loc["wood1", "mask_binary"] == 1.0 and row.loc["wood1", "coverage"] == 0.25


def test_metrics_file(tmp_path, good_dir):
    result = validate_dataset(good_dir, CFG, IO, None, tmp_path / "r")
    path = write_metrics(result.metrics, tmp_path / "metrics" / "data.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(result.metrics))


def test_cli_failure_exit_3_without_traceback(ds, tmp_path):
    _break(ds, missing_file)
    _break(ds, brand_with_space)
    params = tmp_path / "params.yaml"
    params.write_text("validate:\n  min_per_category: 3\n  min_per_brand: 1\n")
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / PASSED_NAME).write_text("{}")
    bgp = Path(sys.executable).with_name("bgp")
    proc = subprocess.run(
        [str(bgp), "--params", str(params), "validate", str(ds), "--report-dir", str(reports),
         "--metrics", str(tmp_path / "m.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "| wood2 |" in proc.stdout and "image_exists" in proc.stdout and "brand_valid" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "report.md" in proc.stderr
    assert "INFO great_expectations" not in proc.stderr  # GX chatter is kept off stderr
    assert (reports / "report.md").is_file() and (reports / "gx_result.json").is_file()
    assert not (reports / PASSED_NAME).exists()
    assert json.loads((tmp_path / "m.json").read_text())["failed_rules"]["image_exists"] == 1


def test_gx_result_json_is_capped():
    from bg_platform.validation.report import GX_LIST_CAP, _trim

    trimmed = _trim(
        {"unexpected_list": list(range(GX_LIST_CAP + 5)), "unexpected_index_query": "df.filter(...)"}
    )
    assert len(trimmed["unexpected_list"]) == GX_LIST_CAP + 1 and "unexpected_index_query" not in trimmed
