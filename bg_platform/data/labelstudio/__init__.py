"""Label Studio as the brand teams' labeling front end: client, labeling config, project setup,
reference import, and the incremental pull of completed annotations into per-brand datasets.

A pulled brand dataset is a manifest folder (`<out_root>/<brand>/manifest.parquet`, images/, masks/)
holding references only (split "train", source "labelstudio"). Masks come from the brush RLE through
the SDK's own decoder. The SDK (~2.5 s to import) is only imported by the functions that talk to the
server; pass them a client from `connect()`.
"""

from bg_platform.data.labelstudio.client import base_url, call, connect, fetch_file, resolve_credentials
from bg_platform.data.labelstudio.constants import (
    BRAND,
    CATEGORY,
    FILES_SUBDIR,
    IMAGE,
    IMAGE_SUFFIXES,
    IMPORT_MODEL_VERSION,
    MASK,
    PRODUCT_LABEL,
    STATE_FORMAT,
    STYLE,
    LabelStudioError,
    LabelStudioUnavailable,
)
from bg_platform.data.labelstudio.labeling import (
    brush_result,
    build_label_config,
    choice_result,
    config_categories,
    decode_brush,
    text_result,
)
from bg_platform.data.labelstudio.project import (
    ImportResult,
    Reference,
    SetupResult,
    ensure_local_storage,
    find_project,
    find_references,
    import_references,
    setup_project,
)
from bg_platform.data.labelstudio.pull import BadAnnotation, PullResult, decode_annotation, pull_annotations

__all__ = [
    "BRAND",
    "BadAnnotation",
    "CATEGORY",
    "FILES_SUBDIR",
    "IMAGE",
    "IMAGE_SUFFIXES",
    "IMPORT_MODEL_VERSION",
    "ImportResult",
    "LabelStudioError",
    "LabelStudioUnavailable",
    "MASK",
    "PRODUCT_LABEL",
    "PullResult",
    "Reference",
    "STATE_FORMAT",
    "STYLE",
    "SetupResult",
    "base_url",
    "brush_result",
    "build_label_config",
    "call",
    "choice_result",
    "config_categories",
    "connect",
    "decode_annotation",
    "decode_brush",
    "ensure_local_storage",
    "fetch_file",
    "find_project",
    "find_references",
    "import_references",
    "pull_annotations",
    "resolve_credentials",
    "setup_project",
    "text_result",
]
