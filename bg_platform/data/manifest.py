"""The dataset manifest: one row per sample, one schema for every source (BG-Synth, BG60k, folder,
Label Studio). Stored as Parquet next to the files it lists; paths are relative to the manifest's
folder, so a dataset folder can be moved, DVC-tracked or synced to object storage as a unit.

| column   | type   | meaning                                                              |
|----------|--------|----------------------------------------------------------------------|
| id       | string | unique sample id (letters, digits, `_`, `-`, `.`)                     |
| image    | string | image path relative to the dataset folder                            |
| mask     | string | mask path relative to the dataset folder; product = 255, background = 0 |
| category | string | background category (e.g. "marble", "fabric sofa")                   |
| brand    | string | brand id, or "" when the sample has no brand style                    |
| caption  | string | optional free text ("" when absent); never used as a per-product prompt |
| split    | string | "train", "val" or "test"                                              |
| width    | int32  | image width in pixels                                                 |
| height   | int32  | image height in pixels                                                |
| sha256   | string | sha256 of the image file's bytes                                      |
| product  | string | product instance id ("" if unknown); held-out splits never share one  |
| source   | string | which importer wrote the row (synth, bg60k, folder, labelstudio)      |
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bg_platform.errors import DataError

MANIFEST_NAME = "manifest.parquet"
SPLITS = ("train", "val", "test")

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("image", pa.string()),
        ("mask", pa.string()),
        ("category", pa.string()),
        ("brand", pa.string()),
        ("caption", pa.string()),
        ("split", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),
        ("product", pa.string()),
        ("source", pa.string()),
    ]
)
COLUMNS = tuple(SCHEMA.names)


@dataclass(frozen=True)
class Sample:
    id: str
    image: str
    mask: str
    category: str
    brand: str
    caption: str
    split: str
    width: int
    height: int
    sha256: str
    product: str = ""
    source: str = ""


assert tuple(f.name for f in fields(Sample)) == COLUMNS


def to_frame(samples: Iterable[Sample]) -> pd.DataFrame:
    rows = [asdict(s) for s in samples]
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype({"width": "int32", "height": "int32"})


def write(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write atomically; the frame must have exactly the schema's columns."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"manifest is missing columns {missing}; expected {list(COLUMNS)}")
    path = Path(path)
    if path.is_dir() or path.suffix != ".parquet":
        path = path / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame[list(COLUMNS)].reset_index(drop=True), schema=SCHEMA, preserve_index=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".manifest.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a dataset is shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read(path: str | Path) -> pd.DataFrame:
    """Read a manifest (a .parquet file or the dataset folder that holds one)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.exists():
        raise DataError(f"no manifest at {path}; run `bgp synth` / `bgp import` (or `dvc repro dataset`) first")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: not a readable Parquet manifest ({exc}); re-create the dataset") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; expected the schema in bg_platform/data/manifest.py")
    frame = table.to_pandas()
    for col in COLUMNS:
        if col not in ("width", "height"):
            frame[col] = frame[col].fillna("").astype(str)
    return frame[list(COLUMNS)]


def root_of(path: str | Path) -> Path:
    """The folder that manifest-relative paths resolve against."""
    path = Path(path)
    return path if path.is_dir() else path.parent
