"""Importers on small fixtures written in each source layout (BG60k release, plain folder)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bg_platform import cli
from bg_platform.config import Bg60kConfig, FolderConfig, ImageIOConfig, ValidateConfig
from bg_platform.data import imageio, manifest
from bg_platform.data.importers import import_bg60k, import_folder, split_of
from bg_platform.errors import DataError

IO = ImageIOConfig()
H, W = 40, 48
CATEGORIES = ("fabric sofa", "wooden table")


def _alpha() -> np.ndarray:
    """Product rectangle at 255, plus one pixel above (200) and one below (100) the 128 threshold."""
    a = np.zeros((H, W), np.uint8)
    a[10:30, 12:36] = 255
    a[0, 0], a[0, 1] = 200, 100
    return a


def _rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def make_bg60k(root: Path, n: int = 12, prefix: str = "bg60k", sharded: bool = True) -> Path:
    lines = []
    for k in range(n):
        shard = f"_{k % 10}" if sharded else ""
        imageio.write_png(root / f"{prefix}_imgs{shard}" / f"{k}.png", _rgb(k))
        cutout = np.dstack([_rgb(100 + k), _alpha()])  # RGBA: RGB = product pixels, alpha = product
        imageio.write_png(root / f"{prefix}_masks{shard}" / f"{k}_mask.png", cutout)
        lines.append(f"{k}.png\t{CATEGORIES[k % 2]}")
    (root / f"{prefix}_info.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def bg60k_src(tmp_path) -> Path:
    return make_bg60k(tmp_path / "release")


def _read(path: Path) -> tuple[np.ndarray, str]:
    with Image.open(path) as im:
        return np.asarray(im).copy(), im.mode


# --- BG60k ---------------------------------------------------------------------------------------


def test_bg60k_rows_images_and_binarised_masks(bg60k_src, tmp_path, capsys):
    out = import_bg60k(bg60k_src, tmp_path / "ds", Bg60kConfig(), IO)
    frame = manifest.read(out)
    assert list(frame["id"]) == [str(k) for k in range(12)]
    assert list(frame["category"]) == [CATEGORIES[k % 2] for k in range(12)]
    assert set(frame["brand"]) == {""} and set(frame["source"]) == {"bg60k"}
    assert set(frame["split"]) <= set(manifest.SPLITS)
    assert (frame["width"] == W).all() and (frame["height"] == H).all()
    for row in frame.itertuples():
        assert row.image == f"images/{row.id}.png" and row.mask == f"masks/{row.id}.png"
        assert row.sha256 == imageio.sha256_file(out / row.image)
        rgb, mode = _read(out / row.image)
        assert mode == "RGB" and np.array_equal(rgb, _rgb(int(row.id)))
        mask, mode = _read(out / row.mask)
        assert mode == "L" and set(np.unique(mask)) == {0, 255}
        assert np.array_equal(mask, np.where(_alpha() >= 128, 255, 0))
    assert "imported 12 samples" in capsys.readouterr().out


def test_bg60k_alpha_threshold_is_honoured(bg60k_src, tmp_path):
    out = import_bg60k(bg60k_src, tmp_path / "ds", Bg60kConfig(alpha_threshold=250), IO)
    mask, _ = _read(out / "masks/0.png")
    assert mask[0, 0] == 0 and mask[15, 20] == 255  # alpha 200 is background at threshold 250


def test_bg60k_split_and_limit_are_deterministic(bg60k_src, tmp_path):
    cfg = Bg60kConfig(val_fraction=0.3, test_fraction=0.3, seed=3)
    full = manifest.read(import_bg60k(bg60k_src, tmp_path / "a", cfg, IO)).set_index("id")
    again = manifest.read(import_bg60k(bg60k_src, tmp_path / "b", cfg, IO)).set_index("id")
    assert full["split"].equals(again["split"])
    assert all(full.loc[str(k), "split"] == split_of(f"{k}.png", 3, 0.3, 0.3) for k in range(12))
    other_cfg = Bg60kConfig(seed=4, val_fraction=0.3, test_fraction=0.3)
    other_seed = manifest.read(import_bg60k(bg60k_src, tmp_path / "c", other_cfg, IO))
    assert list(other_seed.set_index("id")["split"]) != list(full["split"])

    small = manifest.read(import_bg60k(bg60k_src, tmp_path / "d", dataclasses.replace(cfg, limit=5), IO))
    larger = manifest.read(import_bg60k(bg60k_src, tmp_path / "e", dataclasses.replace(cfg, limit=8), IO))
    assert len(small) == 5 and len(larger) == 8
    assert set(small["id"]) <= set(larger["id"])  # a growing limit only adds samples
    for row in small.itertuples():  # and a sample keeps its split
        assert row.split == full.loc[row.id, "split"]
    assert split_of("7.png", 3, 0.3, 0.3) == full.loc["7", "split"]


def test_split_fractions():
    splits = [split_of(f"{k}.png", 0, 0.1, 0.2) for k in range(4000)]
    assert abs(splits.count("val") / 4000 - 0.1) < 0.02 and abs(splits.count("test") / 4000 - 0.2) < 0.02
    assert set(split_of(f"{k}.png", 0, 0.0, 0.0) for k in range(100)) == {"train"}


def test_bg1k_subset(tmp_path):
    src = make_bg60k(tmp_path / "release", n=4, prefix="bg1k", sharded=False)
    with pytest.raises(DataError, match="bg60k_info.txt"):
        import_bg60k(src, tmp_path / "x", Bg60kConfig(), IO)
    frame = manifest.read(import_bg60k(src, tmp_path / "ds", Bg60kConfig(), IO, subset="bg1k"))
    assert list(frame["id"]) == ["0", "1", "2", "3"] and set(frame["source"]) == {"bg60k"}


def test_bg60k_bad_samples_are_kept_for_validation(bg60k_src, tmp_path, capsys):
    (bg60k_src / "bg60k_imgs_1/101.png").write_bytes(b"")
    good = (bg60k_src / "bg60k_imgs_0/0.png").read_bytes()
    (bg60k_src / "bg60k_imgs_2/102.png").write_bytes(good[: len(good) // 2])
    (bg60k_src / "bg60k_imgs_3/103.png").write_bytes(b"not an image at all")
    (bg60k_src / "bg60k_masks_3/3_mask.png").write_bytes(b"\x89PNG broken")
    (bg60k_src / "bg60k_imgs_4/104.png").write_bytes(good[:-1] + b"\x00")  # unlisted, so no category
    with (bg60k_src / "bg60k_info.txt").open("a") as fh:
        fh.write("100.png\tfabric sofa\n101.png\tfabric sofa\n102.png\tfabric sofa\n103.png\tfabric sofa\n")
    out = import_bg60k(bg60k_src, tmp_path / "ds", Bg60kConfig(), IO)
    frame = manifest.read(out).set_index("id")
    assert len(frame) == 17  # 12 good + 4 listed bad + 1 unlisted: nothing dropped
    for sid in ("100", "101", "102", "103"):
        assert frame.loc[sid, "width"] == 0 and frame.loc[sid, "height"] == 0
    assert not (out / "images/100.png").exists() and frame.loc["100", "sha256"] == ""
    assert (out / "images/102.png").read_bytes() == good[: len(good) // 2]  # raw copy, as-is
    assert frame.loc["102", "sha256"] == imageio.sha256_bytes(good[: len(good) // 2])
    assert (out / "images/103.png").read_bytes() == b"not an image at all"
    assert (out / "masks/3.png").read_bytes() == b"\x89PNG broken"
    assert frame.loc["104", "category"] == "" and frame.loc["104", "width"] == W
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and "4 image(s) and 6 mask(s) could not be decoded" in summary[0]


def test_bg60k_import_then_validate_names_every_bad_row(bg60k_src, tmp_path):
    from bg_platform.validation import validate_dataset

    (bg60k_src / "bg60k_imgs_5/5.png").write_bytes(b"")
    (bg60k_src / "bg60k_masks_6/6_mask.png").unlink()
    out = import_bg60k(bg60k_src, tmp_path / "ds", Bg60kConfig(), IO)
    result = validate_dataset(out, ValidateConfig(min_per_category=2), IO, None, tmp_path / "r")
    failed = {f.rule: set(f.ids) for f in result.failures}
    assert failed == {"image_not_empty": {"5"}, "mask_exists": {"6"}}, result.report


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda src: (src / "bg60k_info.txt").unlink(), "bg60k_info.txt not found"),
        (
            lambda src: (src / "bg60k_info.txt").write_text("0.png fabric sofa\n1.png wooden table\n"),
            "no tab",
        ),
        (lambda src: [p.rename(src / f"x{p.name}") for p in src.glob("bg60k_imgs_*")], "no bg60k_imgs"),
        (lambda src: (src / "bg60k_info.txt").write_bytes(b"0.png\t\xff\xfe sofa\n"), "not UTF-8"),
    ],
    ids=["missing_info", "not_tab_separated", "no_image_folders", "not_utf8"],
)
def test_bg60k_structural_errors(bg60k_src, tmp_path, breakage, message):
    breakage(bg60k_src)
    with pytest.raises(DataError, match=message):
        import_bg60k(bg60k_src, tmp_path / "ds", Bg60kConfig(), IO)
    assert not (tmp_path / "ds").exists()


def test_bg60k_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"does not exist; set bg60k.path"):
        import_bg60k(tmp_path / "nope", tmp_path / "ds", Bg60kConfig(), IO)


# --- atomic writes ---------------------------------------------------------------------------------


def test_interrupted_import_keeps_the_old_dataset(bg60k_src, tmp_path, monkeypatch):
    out = import_bg60k(bg60k_src, tmp_path / "ds", Bg60kConfig(limit=3), IO)
    before = (out / manifest.MANIFEST_NAME).read_bytes()
    calls = {"n": 0}
    real = imageio.write_png

    def interrupted(path, array):  # fault injection: Ctrl-C half-way through the next import
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(path, array)

    monkeypatch.setattr(imageio, "write_png", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_bg60k(bg60k_src, out, Bg60kConfig(), IO)
    assert (out / manifest.MANIFEST_NAME).read_bytes() == before
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        f"{i}.png" for i in manifest.read(out)["id"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "release"]  # no half-built folder left

    monkeypatch.setattr(imageio, "write_png", real)
    import_bg60k(bg60k_src, out, Bg60kConfig(), IO)  # a finished re-import replaces it, leaving no debris
    assert len(manifest.read(out)) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "release"]


def test_refuses_to_replace_a_folder_that_is_not_a_dataset(bg60k_src, tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match="not a dataset"):
        import_bg60k(bg60k_src, precious, Bg60kConfig(), IO)
    assert (precious / "thesis.tex").read_text() == "years of work"


# --- plain folder ----------------------------------------------------------------------------------


def _save(path: Path, im: Image.Image, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)


def _mask_png(path: Path, h: int, w: int) -> None:
    m = np.zeros((h, w), np.uint8)
    m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 200  # grey-ish white: binarised to 255
    m[0, 0] = 50  # dark grey: binarised to 0
    _save(path, Image.fromarray(m))


@pytest.fixture
def folder_src(tmp_path) -> Path:
    src = tmp_path / "src"
    # EXIF orientation 6 = "rotate 90° clockwise to display": stored 60x40, displayed 40x60.
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:16, :16] = (255, 0, 0)  # red block at the stored top-left -> displayed top-right
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(src / "images/rotated.jpg", Image.fromarray(stored), exif=exif.tobytes(), quality=95)
    _mask_png(src / "masks/rotated.png", 60, 40)
    _save(src / "images/cmyk.jpg", Image.fromarray(_rgb(1, 32, 32)).convert("CMYK"), quality=95)
    _mask_png(src / "masks/cmyk.png", 32, 32)
    deep = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64).astype(np.uint16)
    _save(src / "images/deep.png", Image.fromarray(deep))  # 16-bit grey
    _mask_png(src / "masks/deep.png", 32, 32)
    _save(src / "images/palette.png", Image.fromarray(_rgb(2, 32, 32)).convert("P"))
    alpha_mask = np.zeros((32, 32, 4), np.uint8)  # black RGB, product only in the alpha channel
    alpha_mask[8:24, 8:24, 3] = 255
    _save(src / "masks/palette.png", Image.fromarray(alpha_mask))
    (src / "categories.csv").write_text(
        "filename,category,brand,caption,split\n"
        "rotated.jpg,marble,acme,a red mug,val\n"
        "cmyk.jpg,wood,,,\n"
        "deep.png,wood,acme,,test\n"
        "palette.png,marble,,,\n"
    )
    return src


def test_folder_import_normalises_images(folder_src, tmp_path):
    out = import_folder(folder_src, tmp_path / "ds", FolderConfig(), IO)
    frame = manifest.read(out).set_index("id")
    assert list(frame.index) == ["rotated", "cmyk", "deep", "palette"]
    assert frame.loc["rotated", ["width", "height"]].tolist() == [40, 60]  # EXIF orientation applied
    rot, mode = _read(out / "images/rotated.png")
    assert mode == "RGB" and rot.shape == (60, 40, 3)
    assert rot[4, 36, 0] > 200 and rot[4, 36, 1] < 60  # red block moved to the top-right
    assert rot[4, 4, 0] < 60
    for sid in ("cmyk", "deep", "palette"):
        arr, mode = _read(out / f"images/{sid}.png")
        assert mode == "RGB" and arr.shape == (32, 32, 3), sid
    cmyk, _ = _read(out / "images/cmyk.png")
    assert np.abs(cmyk.astype(int) - _rgb(1, 32, 32)).mean() < 40  # CMYK round trip, not garbage
    deep, _ = _read(out / "images/deep.png")
    assert deep[-1, -1, 0] > 200 and deep[0, 0, 0] == 0  # 16-bit scaled to 8 bits, not clipped
    palette, _ = _read(out / "images/palette.png")
    assert np.array_equal(palette, np.asarray(Image.fromarray(_rgb(2, 32, 32)).convert("P").convert("RGB")))

    mask, mode = _read(out / "masks/rotated.png")
    assert mode == "L" and set(np.unique(mask)) == {0, 255} and mask[0, 0] == 0 and mask[30, 20] == 255
    amask, _ = _read(out / "masks/palette.png")
    assert amask[16, 16] == 255 and amask[2, 2] == 0  # alpha, not the black RGB, is the mask

    assert frame.loc["rotated", ["category", "brand", "caption", "split"]].tolist() == [
        "marble",
        "acme",
        "a red mug",
        "val",
    ]
    assert frame.loc["deep", "split"] == "test"
    assert frame.loc["cmyk", "split"] == split_of(
        "cmyk.jpg", 0, 0.1, 0.1
    )  # seeded when the CSV leaves it empty
    assert set(frame["source"]) == {"folder"}


def test_folder_unlisted_and_missing_files_are_kept(folder_src, tmp_path, capsys):
    _save(folder_src / "images/extra.png", Image.fromarray(_rgb(9, 32, 32)))
    _mask_png(folder_src / "masks/extra.png", 32, 32)
    with (folder_src / "categories.csv").open("a") as fh:
        fh.write("ghost.png,wood,,,\n")
    frame = manifest.read(import_folder(folder_src, tmp_path / "ds", FolderConfig(), IO)).set_index("id")
    assert frame.loc["extra", "category"] == "" and frame.loc["extra", "width"] == 32
    assert frame.loc["ghost", "width"] == 0 and frame.loc["ghost", "category"] == "wood"
    assert "1 image(s) and 1 mask(s) could not be decoded" in capsys.readouterr().out


@pytest.mark.parametrize(
    "csv_text, message",
    [
        ("filename,brand\na.png,acme\n", r"missing required \['category'\]"),
        ("filename,category,brnad\na.png,wood,acme\n", r"unknown \['brnad'\]"),
        ("filename,category\n../../etc/passwd,wood\n", "line 2: filename '../../etc/passwd'"),
        ("filename,category\na.png,wood,extra\n", "line 2: 3 cells for 2 columns"),
        ("filename,category\n,wood\n", "line 2: empty filename"),
    ],
    ids=["missing_column", "unknown_column", "path_traversal", "extra_cells", "empty_filename"],
)
def test_folder_csv_errors_name_file_problem_and_fix(folder_src, tmp_path, csv_text, message):
    (folder_src / "categories.csv").write_text(csv_text)
    with pytest.raises(DataError, match=message) as err:
        import_folder(folder_src, tmp_path / "ds", FolderConfig(), IO)
    assert "categories.csv" in str(err.value)
    assert not (tmp_path / "ds").exists()


def test_folder_structural_errors(folder_src, tmp_path):
    with pytest.raises(DataError, match="does not exist; set folder.path"):
        import_folder(tmp_path / "nope", tmp_path / "ds", FolderConfig(), IO)
    (folder_src / "categories.csv").unlink()
    with pytest.raises(DataError, match="categories.csv not found; create it with a header line"):
        import_folder(folder_src, tmp_path / "ds", FolderConfig(), IO)


def test_cli_import_folder_and_errors(folder_src, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(f"dataset:\n  dir: {tmp_path / 'default_out'}\n")
    assert cli.main(["--params", str(params), "import", "folder", str(folder_src)]) == 0
    assert len(manifest.read(tmp_path / "default_out")) == 4
    assert (
        cli.main(
            [
                "--params",
                str(params),
                "import",
                "bg60k",
                str(tmp_path / "missing"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and "Traceback" not in err
