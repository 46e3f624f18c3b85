"""Plain folder -> dataset folder.

    <src>/images/<name>.<ext>       any format imageio reads (EXIF orientation applied)
    <src>/masks/<name stem>.png     white = product, or alpha = product when the mask has one
    <src>/categories.csv            columns filename,category[,brand][,caption][,split]

`filename` is relative to images/. Rows without a split get a seeded one. Images in images/ that the
CSV does not list are imported with an empty category (validation then names them) rather than dropped.
"""

from __future__ import annotations

import csv
import glob
from pathlib import Path, PurePosixPath

from bg_platform.config import FolderConfig, ImageIOConfig
from bg_platform.data.importers import DatasetBuilder, load_mask, split_of
from bg_platform.errors import DataError

REQUIRED = ("filename", "category")
OPTIONAL = ("brand", "caption", "split")


def import_folder(src: str | Path, out: str | Path, cfg: FolderConfig, io: ImageIOConfig) -> Path:
    """Import a plain images/ + masks/ + categories.csv folder into the dataset folder `out`."""
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"folder {src} does not exist; set folder.path in params.yaml or pass the path")
    images_dir, masks_dir = src / cfg.images_dir, src / cfg.masks_dir
    if not images_dir.is_dir():
        raise DataError(f"{images_dir} is missing; put the product images there (or set folder.images_dir)")
    rows = _read_csv(src / cfg.categories_csv)
    listed = {row["filename"] for row in rows}
    on_disk = sorted(
        p.relative_to(images_dir).as_posix()
        for p in images_dir.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(images_dir).parts)
    )
    rows += [{"filename": name, "category": ""} for name in on_disk if name not in listed]

    with DatasetBuilder(Path(out), "folder", io) as builder:
        for row in rows:
            name = row["filename"]
            stem = PurePosixPath(name).stem
            builder.add(
                sample_id=builder.unique_id(stem),
                image_src=images_dir / name,
                mask_src=_mask_path(masks_dir, name),
                to_mask=lambda path: load_mask(path, io),
                category=row["category"],
                brand=row.get("brand", ""),
                caption=row.get("caption", ""),
                split=row.get("split") or split_of(name, cfg.seed, cfg.val_fraction, cfg.test_fraction),
            )
    print(builder.summary(src))
    return builder.out


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(
            f"{path} not found; create it with a header line 'filename,category' (optional: brand, caption, split) "
            "and one row per image"
        )
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: Excel writes a BOM
            reader = csv.DictReader(fh)
            header = [(h or "").strip() for h in (reader.fieldnames or [])]
            raw = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable UTF-8 CSV ({exc}); re-save it as CSV UTF-8") from None
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if missing or unknown:
        raise DataError(
            f"{path}: columns {header}: "
            + (f"missing required {missing}; " if missing else "")
            + (f"unknown {unknown} (a misspelt column would be silently ignored); " if unknown else "")
            + f"expected {list(REQUIRED)} plus any of {list(OPTIONAL)}"
        )
    rows, problems = [], []
    for line, record in enumerate(raw, start=2):
        if None in record:  # more cells than header names: the row would be misread
            problems.append(f"line {line}: {len(header) + len(record[None])} cells for {len(header)} columns")
            continue
        row = {k.strip(): (v or "").strip() for k, v in record.items() if k is not None}
        name = row["filename"]
        if not name:
            problems.append(f"line {line}: empty filename")
        elif PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts or "\\" in name:
            problems.append(
                f"line {line}: filename {name!r} must be a path inside images/ (no '..', '/' first, '\\')"
            )
        rows.append(row)
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise DataError(
            f"{path}: {len(problems)} malformed row(s): {shown}. Fix those rows and re-run the import"
        )
    return rows


def _mask_path(masks_dir: Path, name: str) -> Path:
    """masks/<stem>.png, or the one file with that stem in any format (a JPEG mask is still a mask)."""
    rel = PurePosixPath(name)
    expected = masks_dir / rel.parent / f"{rel.stem}.png"
    if expected.exists():
        return expected
    others = (
        sorted((masks_dir / rel.parent).glob(f"{glob.escape(rel.stem)}.*"))
        if (masks_dir / rel.parent).is_dir()
        else []
    )
    return others[0] if len(others) == 1 else expected
