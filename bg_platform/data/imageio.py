"""Safe image I/O: every image that enters the platform goes through `read_image` / `read_mask`.

- size guards before decoding: file bytes and pixel count (decompression bombs);
- mode normalisation: RGBA / LA / P / L / 1 / CMYK / I;16 / I / F  ->  RGB uint8 + optional alpha;
- EXIF orientation applied, so what the user saw is what the model gets;
- every failure is an `ImageError` that names the file, what is wrong and the fix.
Writes are atomic (temporary file + rename): a reader never sees half a PNG.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bg_platform.errors import ImageError

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 50_000_000
ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF", "MPO"})


@dataclass(frozen=True)
class LoadedImage:
    rgb: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray | None  # (H, W) uint8, None when the file has no transparency
    format: str
    mode: str  # the mode as stored in the file

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def _open(source: str | Path | bytes, max_pixels: int, max_bytes: int, what: str) -> tuple[Image.Image, str]:
    if isinstance(source, bytes):
        data, name = source, what
    else:
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise ImageError(f"{name}: file not found; check the path in the manifest or re-run the importer")
        size = path.stat().st_size
        if size == 0:
            raise ImageError(f"{name}: file is empty (0 bytes); re-export or remove it")
        if size > max_bytes:
            raise ImageError(f"{name}: {size} bytes exceeds the {max_bytes}-byte limit (imageio.max_bytes); shrink the file")
        data = path.read_bytes()
    if len(data) == 0:
        raise ImageError(f"{name}: empty upload (0 bytes); send a PNG or JPEG file")
    if len(data) > max_bytes:
        raise ImageError(f"{name}: {len(data)} bytes exceeds the {max_bytes}-byte limit; send a smaller image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            fmt = im.format or "?"
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(
                    f"{name}: {w}x{h} = {w * h} pixels exceeds the {max_pixels}-pixel limit "
                    f"(imageio.max_pixels); downscale the image"
                )
            if fmt not in ALLOWED_FORMATS:
                raise ImageError(f"{name}: format {fmt} is not accepted; use one of {sorted(ALLOWED_FORMATS)}")
            im.load()  # decode now so truncation surfaces here, not later
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({exc}); downscale the image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file PIL can read; export it as PNG or JPEG") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: cannot be decoded ({exc}); the file is truncated or corrupt, re-export it") from None
    return im, fmt


def _to_rgb_alpha(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.int64)
        hi = 65535 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
        g = np.clip(arr * 255.0 / hi, 0, 255).round().astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2), None
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        top = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0
        g = np.clip(arr / top * 255.0, 0, 255).round().astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2), None
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    elif mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "CMYK" or mode == "YCbCr" or mode == "LAB" or mode == "HSV" or mode in ("1", "L", "RGBX"):
        im = im.convert("RGB")
    if im.mode == "RGBA":
        arr = np.asarray(im, dtype=np.uint8)
        return np.ascontiguousarray(arr[..., :3]), np.ascontiguousarray(arr[..., 3])
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8).copy(), None


def read_image(
    source: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    what: str = "upload",
) -> LoadedImage:
    """Decode an image file (or bytes) into RGB uint8 plus alpha, with EXIF orientation applied."""
    im, fmt = _open(source, max_pixels, max_bytes, what)
    mode = im.mode
    try:
        im = ImageOps.exif_transpose(im)
    except Exception as exc:  # malformed EXIF must not crash ingestion; orientation is then as stored
        warnings.warn(f"{source if not isinstance(source, bytes) else what}: EXIF ignored ({exc})", stacklevel=2)
    rgb, alpha = _to_rgb_alpha(im)
    if alpha is not None and alpha.min() == 255:
        alpha = None  # fully opaque: no information in it
    return LoadedImage(rgb=rgb, alpha=alpha, format=fmt, mode=mode)


def mask_of(loaded: LoadedImage) -> np.ndarray:
    """A product mask (H, W) uint8, product = high: the alpha channel when the file has
    transparency (BG60k's RGBA cut-outs), otherwise the grey level (white = product)."""
    if loaded.alpha is not None:
        return loaded.alpha
    rgb = loaded.rgb.astype(np.uint32)
    return ((rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114 + 500) // 1000).astype(np.uint8)


def read_mask(
    source: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    what: str = "mask",
) -> np.ndarray:
    """Decode a product mask file (see `mask_of`)."""
    return mask_of(read_image(source, max_pixels=max_pixels, max_bytes=max_bytes, what=what))


def binarize(mask: np.ndarray, threshold: int = 128) -> np.ndarray:
    """product = 255, background = 0."""
    return np.where(mask >= threshold, 255, 0).astype(np.uint8)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these files are shared artifacts
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj) -> None:
    """Metrics and reports: a reader sees the old file or the new one, never half of one."""
    import json

    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def write_png(path: str | Path, array: np.ndarray) -> bytes:
    """Write uint8 (H, W) / (H, W, 3) / (H, W, 4) atomically; returns the PNG bytes."""
    if array.dtype != np.uint8:
        raise ValueError(f"write_png expects uint8, got {array.dtype}")
    data = encode_png(array)
    atomic_write_bytes(path, data)
    return data


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
