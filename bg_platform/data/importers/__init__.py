"""Importers turn a source layout (BG60k release, plain folder) into a dataset folder:
`manifest.parquet` + `images/<id>.png` (RGB) + `masks/<id>.png` (L, product = 255).

Shared rules, so every importer behaves the same on bad input:
- a structural problem (missing folder, listing file, required column) is a `DataError`;
- a per-sample problem (missing, empty, truncated or undecodable file) never stops the import and
  never drops the sample: the row is written anyway (raw bytes copied as-is, width/height 0) so
  `bgp validate` reports every problem at once, with row ids;
- the dataset is built in a temporary sibling folder and renamed into place at the end, so an
  interrupted import never leaves a half-written dataset.

Public entry points: `import_bg60k` (bg60k.py) and `import_folder` (folder.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bg_platform.config import ImageIOConfig
from bg_platform.data import imageio, manifest
from bg_platform.errors import DataError, ImageError

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def split_of(key: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """Deterministic split from a hash of (seed, key): a sample keeps its split when the dataset
    grows or `limit` changes, so nothing moves from test into train between dataset versions."""
    u = _unit_hash(f"{seed}:split:{key}")
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def subset_order(key: str, seed: int) -> float:
    """Sort key for `limit`: a seeded, category-mixed subset that only grows as the limit grows
    (the first N lines of a listing are often a single category)."""
    return _unit_hash(f"{seed}:subset:{key}")


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


def describe_error(exc: Exception) -> str:
    return str(exc) if isinstance(exc, ImageError) else f"{type(exc).__name__}: {exc}"


def load_image(path: Path, io: ImageIOConfig, what: str) -> imageio.LoadedImage:
    """`imageio.read_image`, with decoder crashes folded into ImageError."""
    try:
        return imageio.read_image(path, max_pixels=io.max_pixels, max_bytes=io.max_bytes, what=what)
    except ImageError:
        raise
    except (
        Exception
    ) as exc:  # PIL plugins raise assorted types (struct.error, IndexError...) on malformed files
        raise ImageError(f"{path}: cannot be decoded ({describe_error(exc)}); re-export it as PNG") from None


def load_mask(path: Path, io: ImageIOConfig) -> np.ndarray:
    """A product mask (H, W) uint8, product = high: alpha when present, else the grey level."""
    return imageio.mask_of(load_image(path, io, what=str(path)))


@dataclass
class DatasetBuilder:
    """Collects samples into a temporary sibling of `out`; `commit()` renames it into place."""

    out: Path
    source: str
    io: ImageIOConfig
    samples: list[manifest.Sample] = field(default_factory=list)
    bad_images: int = 0
    bad_masks: int = 0
    _ids: set[str] = field(default_factory=set)
    _tmp: Path | None = None

    def __enter__(self) -> DatasetBuilder:
        self.out = Path(self.out).absolute()
        _check_replaceable(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.importing-"))
        (self._tmp / "images").mkdir()
        (self._tmp / "masks").mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._commit()
        elif self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def unique_id(self, stem: str) -> str:
        """A file-name-safe id; a clash gets a numeric suffix so neither sample overwrites the other
        (the duplicate bytes, if any, are then reported by validation)."""
        base = _ID_UNSAFE.sub("_", stem).lstrip(".") or "sample"
        candidate, n = base, 1
        while candidate in self._ids:
            n += 1
            candidate = f"{base}-{n}"
        self._ids.add(candidate)
        return candidate

    def add(
        self,
        *,
        sample_id: str,
        image_src: Path,
        mask_src: Path,
        to_mask: Callable[[Path], np.ndarray],
        category: str,
        brand: str = "",
        caption: str = "",
        split: str,
    ) -> manifest.Sample:
        assert self._tmp is not None, "use DatasetBuilder as a context manager"
        image_rel, mask_rel = f"images/{sample_id}.png", f"masks/{sample_id}.png"
        width = height = 0
        try:
            loaded = load_image(image_src, self.io, what=str(image_src))
            height, width = loaded.rgb.shape[:2]
            sha = imageio.sha256_bytes(imageio.write_png(self._tmp / image_rel, loaded.rgb))
        except ImageError:
            self.bad_images += 1
            sha = _copy_raw(image_src, self._tmp / image_rel)
        try:
            imageio.write_png(self._tmp / mask_rel, imageio.binarize(to_mask(mask_src)))
        except ImageError:
            self.bad_masks += 1
            _copy_raw(mask_src, self._tmp / mask_rel)
        sample = manifest.Sample(
            id=sample_id,
            image=image_rel,
            mask=mask_rel,
            category=category,
            brand=brand,
            caption=caption,
            split=split,
            width=width,
            height=height,
            sha256=sha,
            product="",
            source=self.source,
        )
        self.samples.append(sample)
        return sample

    def summary(self, src: Path) -> str:
        counts = {s: 0 for s in manifest.SPLITS}
        for sample in self.samples:
            counts[sample.split] = counts.get(sample.split, 0) + 1
        splits = ", ".join(f"{k} {v}" for k, v in counts.items())
        line = f"imported {len(self.samples)} samples ({splits}) from {src} into {self.out}"
        if self.bad_images or self.bad_masks:
            line += (
                f"; {self.bad_images} image(s) and {self.bad_masks} mask(s) could not be decoded "
                f"(copied as-is): run `bgp validate {self.out}` for the list"
            )
        else:
            line += "; every image and mask decoded"
        return line

    def _commit(self) -> None:
        assert self._tmp is not None
        manifest.write(manifest.to_frame(self.samples), self._tmp)
        if not self.out.exists():
            os.rename(self._tmp, self.out)
            return
        # A directory cannot be atomically replaced by another non-empty one: move the old one
        # aside first, so a failure at any point leaves either the old or the new dataset.
        old = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(self.out, old)
        try:
            os.rename(self._tmp, self.out)
        except BaseException:
            os.rename(old, self.out)
            raise
        shutil.rmtree(old, ignore_errors=True)


def _check_replaceable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; pass a folder path for the dataset")
    if out.is_dir() and any(out.iterdir()) and not (out / manifest.MANIFEST_NAME).exists():
        raise DataError(
            f"--out {out} is a non-empty folder without {manifest.MANIFEST_NAME}; refusing to replace "
            "something that is not a dataset. Pass an empty or new folder."
        )


def _copy_raw(src: Path, dst: Path) -> str:
    """Keep an undecodable file as-is so validation can name it; '' when there is nothing to copy."""
    if not src.is_file():
        return ""
    shutil.copyfile(src, dst)
    return imageio.sha256_file(dst)


# The importers use the helpers above, so they are imported last (bg60k/folder import this module).
from bg_platform.data.importers.bg60k import import_bg60k  # noqa: E402
from bg_platform.data.importers.folder import import_folder  # noqa: E402

__all__ = [
    "DatasetBuilder",
    "import_bg60k",
    "import_folder",
    "load_image",
    "load_mask",
    "split_of",
    "subset_order",
]
