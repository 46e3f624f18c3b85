"""Names shared by the Label Studio modules."""

from bg_platform.errors import BgError

# Control and object names in the labeling config = keys in the annotation result JSON.
IMAGE, MASK, CATEGORY, STYLE, BRAND = "image", "mask", "category", "style", "brand"
PRODUCT_LABEL = "product"
IMPORT_MODEL_VERSION = "bgp-import"
FILES_SUBDIR = "brands"  # Local Files storage path = <files_root>/brands (it may not be the root itself)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
STATE_FORMAT = 1


class LabelStudioError(BgError):
    pass


class LabelStudioUnavailable(LabelStudioError):
    pass
