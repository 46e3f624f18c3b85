"""What may be published: flat folders or file lists of safetensors weights plus small text configs.

Weights are never unpickled anywhere in the platform, so pickle-capable formats (`.bin`, `.pt`,
`.ckpt`, ...) are refused at publish time rather than discovered at load time, and every
`.safetensors` file's header is parsed here so a renamed pickle cannot slip through.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from bg_platform.registry.errors import RegistryError
from bg_platform.registry.ids import check_file_name

WEIGHT_SUFFIX = ".safetensors"
CONFIG_SUFFIXES = (".json", ".txt", ".md", ".yaml", ".yml")
RESERVED_NAMES = ("metadata.json",)
# Formats that can carry pickles or are other weight containers: named in the error so the fix is clear.
FOREIGN_WEIGHT_SUFFIXES = (
    ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".npz", ".h5", ".onnx", ".gguf",
    ".msgpack",
)  # fmt: skip


def collect(src: str | Path | Iterable[str | Path]) -> list[tuple[str, Path]]:
    """(name, path) of every file to publish, validated; sorted by name."""
    if isinstance(src, str | Path):
        root = Path(src)
        if root.is_dir():
            paths = sorted(root.iterdir())
            for path in paths:
                if path.is_dir():
                    raise RegistryError(
                        f"{path}: adapter folders must be flat, found the subfolder {path.name!r}; move its "
                        "files up or publish a list of files"
                    )
        else:
            paths = [root]
    else:
        paths = [Path(p) for p in src]
    if not paths:
        raise RegistryError(f"nothing to publish in {src!r}: expected at least one {WEIGHT_SUFFIX} file")

    files: dict[str, Path] = {}
    for path in paths:
        if not path.is_file():
            raise RegistryError(f"{path}: not a file (missing, or a folder inside a file list)")
        name = path.name
        if name in files:
            raise RegistryError(f"two files named {name!r} ({files[name]} and {path}); file names must be unique")
        check_file_name(name)
        _check_kind(path)
        files[name] = path
    if not any(name.endswith(WEIGHT_SUFFIX) for name in files):
        raise RegistryError(
            f"no {WEIGHT_SUFFIX} weights among {sorted(files)}: an adapter needs at least one weights file "
            "(save it with safetensors.torch.save_file)"
        )
    return sorted(files.items())


def _check_kind(path: Path) -> None:
    name, suffix = path.name, path.suffix.lower()
    if name in RESERVED_NAMES:
        raise RegistryError(f"{path}: {name!r} is reserved for the registry's own metadata; rename the file")
    if suffix == WEIGHT_SUFFIX:
        check_safetensors(path)
    elif suffix in FOREIGN_WEIGHT_SUFFIXES:
        raise RegistryError(
            f"{path}: {suffix} weights are refused (they may contain pickles); only {WEIGHT_SUFFIX} weights are "
            "accepted: convert with safetensors.torch.save_file(state_dict, 'adapter.safetensors')"
        )
    elif suffix not in CONFIG_SUFFIXES:
        raise RegistryError(
            f"{path}: file type {suffix or '(none)'!r} is not accepted in an adapter; allowed: {WEIGHT_SUFFIX} "
            f"weights and {', '.join(CONFIG_SUFFIXES)} configs"
        )
    elif suffix == ".json":
        try:
            json.loads(path.read_bytes())
        except ValueError as exc:
            raise RegistryError(f"{path}: not valid JSON ({exc}); fix or remove the file") from None


def check_safetensors(path: Path) -> None:
    """Parse the header (no tensor data is read, nothing is unpickled)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            keys = list(handle.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise RegistryError(
            f"{path}: not a valid safetensors file ({exc}); save weights with safetensors.torch.save_file"
        ) from None
    if not keys:
        raise RegistryError(f"{path}: the safetensors file holds no tensors; save the adapter's state dict in it")
