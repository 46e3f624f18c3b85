"""BG60k public release layout -> dataset folder.

    <src>/bg60k_imgs_{k}/{N}.png          k = N % 10 (ten shards)
    <src>/bg60k_masks_{k}/{N}_mask.png    RGBA product cut-out: alpha >= alpha_threshold is product
    <src>/bg60k_info.txt                  filename<TAB>category, no header ("123.png<TAB>fabric sofa")

The test subset (`subset="bg1k"`) has the same format in bg1k_imgs/, bg1k_masks/, bg1k_info.txt.
Files are found by name in any shard, so a file in an unexpected shard is still imported. Images
present in the shards but absent from the info file are imported with an empty category (validation
then names them) rather than dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bg_platform.config import Bg60kConfig, ImageIOConfig
from bg_platform.data import imageio
from bg_platform.data.importers import DatasetBuilder, load_image, split_of, subset_order
from bg_platform.errors import DataError

SUBSETS = ("bg60k", "bg1k")
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})


def import_bg60k(
    src: str | Path, out: str | Path, cfg: Bg60kConfig, io: ImageIOConfig, *, subset: str = "bg60k"
) -> Path:
    """Import the BG60k (or bg1k) release at `src` into the dataset folder `out`; returns `out`."""
    src = Path(src)
    if subset not in SUBSETS:
        raise DataError(
            f"subset {subset!r} is not one of {list(SUBSETS)}; use bg60k (train release) or bg1k (test)"
        )
    if not src.is_dir():
        raise DataError(f"BG60k folder {src} does not exist; set bg60k.path in params.yaml or pass the path")
    info = src / (cfg.info_file if subset == "bg60k" else "bg1k_info.txt")
    listed = _read_info(info)
    images = _index(src, f"{subset}_imgs")
    masks = _index(src, f"{subset}_masks")
    if not images:
        raise DataError(
            f"{src}: no {subset}_imgs* folders with files; expected the release layout "
            f"{subset}_imgs_<k>/<N>.png + {subset}_masks_<k>/<N>_mask.png (is bg60k.path the unpacked release?)"
        )
    seen = {name for name, _ in listed}
    rows = listed + [(name, "") for name in sorted(images) if name not in seen]
    if cfg.limit:
        keep = set(sorted(range(len(rows)), key=lambda i: subset_order(rows[i][0], cfg.seed))[: cfg.limit])
        rows = [row for i, row in enumerate(rows) if i in keep]

    def to_mask(path: Path) -> np.ndarray:
        return imageio.binarize(_alpha_mask(path, io), cfg.alpha_threshold)

    with DatasetBuilder(Path(out), "bg60k", io) as builder:
        for name, category in rows:
            stem = Path(name).stem
            builder.add(
                sample_id=builder.unique_id(stem),
                image_src=images.get(name) or _expected(src, f"{subset}_imgs", stem, name, subset),
                mask_src=masks.get(f"{stem}_mask.png")
                or _expected(src, f"{subset}_masks", stem, f"{stem}_mask.png", subset),
                to_mask=to_mask,
                category=category,
                split=split_of(name, cfg.seed, cfg.val_fraction, cfg.test_fraction),
            )
    print(builder.summary(src))
    return builder.out


def _read_info(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise DataError(
            f"{path} not found: the BG60k listing (filename<TAB>category per line) is required; "
            "copy it from the release or set bg60k.info_file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}); re-save it as UTF-8") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and not any("\t" in line for line in lines):
        raise DataError(
            f"{path}: no tab-separated line in {len(lines)} lines (first: {lines[0][:60]!r}); "
            "expected filename<TAB>category, e.g. '123.png\\tfabric sofa'"
        )
    rows = []
    for line in lines:
        # A line without a tab keeps its sample (empty category), so validation names it.
        name, _, category = line.partition("\t")
        rows.append((Path(name.strip()).name, category.strip()))
    return rows


def _index(src: Path, prefix: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in sorted(p for p in src.glob(f"{prefix}*") if p.is_dir()):
        for path in _files(folder.iterdir()):
            found.setdefault(path.name, path)
    return found


def _files(paths: Iterable[Path]) -> list[Path]:
    return [p for p in paths if p.is_file() and not p.name.startswith(".")]


def _expected(src: Path, prefix: str, stem: str, name: str, subset: str) -> Path:
    """Where the release would keep a missing file, so the error names a useful path."""
    if subset == "bg60k" and stem.isdigit():
        return src / f"{prefix}_{int(stem) % 10}" / name
    return src / prefix / name


def _alpha_mask(path: Path, io: ImageIOConfig) -> np.ndarray:
    loaded = load_image(path, io, what=str(path))
    if loaded.alpha is None and loaded.mode in _ALPHA_MODES:
        # read_image drops an all-opaque alpha; for a cut-out that means "all product".
        return np.full(loaded.rgb.shape[:2], 255, np.uint8)
    return imageio.mask_of(loaded)  # the alpha, or (no alpha channel at all) the grey level
