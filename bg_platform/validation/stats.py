"""Per-sample stats: one row per manifest row, one column per fact a rule checks.

Each file is read once (bytes -> sha256 -> decode through bg_platform.data.imageio) and no exception
escapes: a problem becomes a value (False / an error string). A fact that cannot be known because an
earlier one failed (the size of a file that does not decode) is left missing (NA), and GX skips
missing values, so each bad sample is reported under the one rule that explains it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bg_platform.config import BRAND_PATTERN, CATEGORY_PATTERN, ImageIOConfig, ValidateConfig
from bg_platform.data import imageio
from bg_platform.errors import ImageError

# Mask pixels within this distance of 0 or 255 count as binary (JPEG ringing, resampling edges).
BINARY_TOLERANCE = 10


def compute_stats(
    frame: pd.DataFrame,
    root: Path,
    cfg: ValidateConfig,
    io: ImageIOConfig,
    known_categories: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The stats DataFrame for a manifest `frame` whose paths are relative to `root`."""
    rows = []
    for rec in frame.itertuples(index=False):
        image = _probe(root, rec.image, io, _decode_image)
        mask = _probe(root, rec.mask, io, _decode_mask)
        rows.append(_row(rec, image, mask))
    stats = pd.DataFrame(rows, columns=_COLUMNS)
    stats.insert(0, "row", np.arange(len(stats), dtype="int64"))
    for col in _BOOL_COLUMNS:
        stats[col] = stats[col].astype("boolean")
    for col in _FLOAT_COLUMNS:
        stats[col] = stats[col].astype("float64")
    _add_dataset_facts(stats, cfg, known_categories)
    return stats


def category_rule(cfg: ValidateConfig, known_categories: Sequence[str] | None) -> tuple[str, ...] | str:
    """The allowed categories, or the name pattern when no list is configured or given."""
    if cfg.known_categories:
        return tuple(cfg.known_categories)
    if known_categories:
        return tuple(known_categories)
    return CATEGORY_PATTERN


def _probe(root: Path, rel: str, io: ImageIOConfig, decode) -> dict[str, Any]:
    """exists / bytes / sha256 / decodable / error plus what `decode` measured."""
    out: dict[str, Any] = {"exists": False, "bytes": np.nan, "sha256": "", "ok": None, "error": ""}
    path = root / rel
    if not rel or not path.is_file():
        out["error"] = f"{rel or '(empty path)'}: file not found under {root}"
        return out
    try:
        size = path.stat().st_size
        out.update(exists=True, bytes=float(size))
        if size > io.max_bytes:
            # Hash without loading a file that is too large to decode anyway.
            out.update(sha256=imageio.sha256_file(path), ok=False)
            out["error"] = f"{rel}: {size} bytes exceeds imageio.max_bytes ({io.max_bytes})"
            return out
        data = path.read_bytes()
    except OSError as exc:  # unreadable (permissions, a directory race): a fact, not a crash
        out.update(ok=False, error=f"{rel}: cannot be read ({exc})")
        return out
    out["sha256"] = imageio.sha256_bytes(data)
    if size == 0:
        out["error"] = f"{rel}: file is empty (0 bytes)"
        return out  # decodable stays NA: the empty-file rule reports it
    try:
        out.update(decode(data, rel, io))
        out["ok"] = True
    except ImageError as exc:
        out.update(ok=False, error=str(exc))
    except (
        Exception
    ) as exc:  # PIL plugins raise assorted types (struct.error, IndexError...) on malformed files
        out.update(ok=False, error=f"{rel}: cannot be decoded ({type(exc).__name__}: {exc})")
    return out


def _decode_image(data: bytes, rel: str, io: ImageIOConfig) -> dict[str, Any]:
    loaded = imageio.read_image(data, max_pixels=io.max_pixels, max_bytes=io.max_bytes, what=rel)
    h, w = loaded.rgb.shape[:2]
    return {"width": w, "height": h}


def _decode_mask(data: bytes, rel: str, io: ImageIOConfig) -> dict[str, Any]:
    m = imageio.mask_of(imageio.read_image(data, max_pixels=io.max_pixels, max_bytes=io.max_bytes, what=rel))
    binary = np.count_nonzero((m <= BINARY_TOLERANCE) | (m >= 255 - BINARY_TOLERANCE))
    return {
        "width": m.shape[1],
        "height": m.shape[0],
        "binary": binary / m.size,
        "coverage": np.count_nonzero(m >= 128) / m.size,
    }


_COLUMNS = [
    "id", "image", "mask", "category", "brand", "split", "product",
    "image_exists", "image_bytes", "image_decodable", "image_error", "width", "height", "short_side", "long_side",
    "mask_exists", "mask_bytes", "mask_decodable", "mask_error", "mask_width", "mask_height",
    "mask_size_matches", "mask_binary", "coverage",
    "sha256", "manifest_matches", "manifest_note",
]  # fmt: skip
_BOOL_COLUMNS = [
    "image_exists",
    "image_decodable",
    "mask_exists",
    "mask_decodable",
    "mask_size_matches",
    "manifest_matches",
]
_FLOAT_COLUMNS = ["image_bytes", "width", "height", "short_side", "long_side", "mask_bytes", "mask_width",
                  "mask_height", "mask_binary", "coverage"]  # fmt: skip


def _row(rec: Any, image: dict[str, Any], mask: dict[str, Any]) -> list[Any]:
    w, h = image.get("width", np.nan), image.get("height", np.nan)
    mw, mh = mask.get("width", np.nan), mask.get("height", np.nan)
    both = image["ok"] is True and mask["ok"] is True
    matches, note = _manifest_check(rec, image)
    return [
        rec.id, rec.image, rec.mask, rec.category, rec.brand, rec.split, rec.product,
        image["exists"], image["bytes"], image["ok"], image["error"], w, h, min(w, h), max(w, h),
        mask["exists"], mask["bytes"], mask["ok"], mask["error"], mw, mh,
        ((w, h) == (mw, mh)) if both else None, mask.get("binary", np.nan), mask.get("coverage", np.nan),
        image["sha256"], matches, note,
    ]  # fmt: skip


def _manifest_check(rec: Any, image: dict[str, Any]) -> tuple[bool | None, str]:
    """Does the manifest still describe the file (sha256, and size when it decodes)?"""
    if not image["exists"] or not image["sha256"]:
        return None, ""
    problems = []
    if rec.sha256 != image["sha256"]:
        problems.append(
            f"sha256 {rec.sha256[:12] or '(empty)'}… in the manifest, {image['sha256'][:12]}… on disk"
        )
    if image["ok"] is True and (int(rec.width), int(rec.height)) != (image["width"], image["height"]):
        problems.append(
            f"size {rec.width}x{rec.height} in the manifest, {image['width']}x{image['height']} on disk"
        )
    return not problems, "; ".join(problems)


def _add_dataset_facts(
    stats: pd.DataFrame, cfg: ValidateConfig, known_categories: Sequence[str] | None
) -> None:
    """Facts about a row that depend on the other rows (counts, duplicates, leaks)."""
    allowed = category_rule(cfg, known_categories)
    if isinstance(allowed, str):
        pattern = re.compile(allowed)
        stats["category_known"] = [bool(pattern.fullmatch(c)) for c in stats["category"]]
    else:
        stats["category_known"] = stats["category"].isin(allowed)
    brand_re = re.compile(BRAND_PATTERN)
    stats["brand_valid"] = [b == "" or bool(brand_re.fullmatch(b)) for b in stats["brand"]]

    stats["category_count"] = stats.groupby("category")["id"].transform("size").astype("float64")
    branded = stats["brand"] != ""
    stats["brand_count"] = np.nan
    stats.loc[branded, "brand_count"] = (
        stats[branded].groupby("brand")["id"].transform("size").astype("float64")
    )

    hashed = (stats["sha256"] != "") & (stats["image_bytes"] > 0)  # every empty file shares one hash
    stats["duplicate"] = pd.array([None] * len(stats), dtype="boolean")
    stats["duplicate_of"] = ""
    groups = stats[hashed].groupby("sha256")["id"].agg(list)
    stats.loc[hashed, "duplicate"] = stats.loc[hashed, "sha256"].map(groups.map(len) > 1).astype(bool)
    for idx in stats.index[hashed & stats["duplicate"].fillna(False)]:
        others = [i for i in groups[stats.at[idx, "sha256"]] if i != stats.at[idx, "id"]] or [
            stats.at[idx, "id"]
        ]
        stats.at[idx, "duplicate_of"] = ", ".join(others[:5]) + (" …" if len(others) > 5 else "")

    has_product = stats["product"] != ""
    stats["product_splits"] = np.nan
    stats.loc[has_product, "product_splits"] = (
        stats[has_product].groupby("product")["split"].transform("nunique").astype("float64")
    )
