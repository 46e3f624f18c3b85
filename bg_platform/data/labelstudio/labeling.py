"""The labeling config for brand references and the annotation result JSON (brush RLE through
the SDK's own converter)."""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from bg_platform.config import CATEGORY_PATTERN
from bg_platform.data.labelstudio.constants import BRAND, CATEGORY, IMAGE, MASK, PRODUCT_LABEL, STYLE
from bg_platform.errors import DataError

log = logging.getLogger(__name__)


def build_label_config(categories: Sequence[str]) -> str:
    """The brand-reference labeling interface: image, product brush mask, one category, style notes."""
    cats = list(categories)
    problems = [c for c in cats if not isinstance(c, str) or not re.match(CATEGORY_PATTERN, c)]
    if not cats or problems:
        raise DataError(
            f"categories: {problems or cats!r} invalid; give 1+ names matching {CATEGORY_PATTERN} "
            f"(lower-case letters, digits, space, _ or -)"
        )
    dupes = sorted({c for c in cats if cats.count(c) > 1})
    if dupes:
        raise DataError(f"categories: {dupes} listed more than once; list each category once")
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in cats)
    return (
        "<View>\n"
        f'  <Header value="Brand: ${BRAND}"/>\n'
        f'  <Text name="{BRAND}" value="${BRAND}"/>\n'
        f'  <Image name="{IMAGE}" value="${IMAGE}" zoom="true"/>\n'
        f'  <BrushLabels name="{MASK}" toName="{IMAGE}">\n'
        f'    <Label value="{PRODUCT_LABEL}" background="#ff0000"/>\n'
        "  </BrushLabels>\n"
        f'  <Choices name="{CATEGORY}" toName="{IMAGE}" choice="single" required="true" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        f'  <TextArea name="{STYLE}" toName="{IMAGE}" rows="2" maxSubmissions="1" '
        'placeholder="brand style: palette, materials, lighting, layout"/>\n'
        "</View>\n"
    )


def config_categories(label_config: str) -> list[str]:
    """The category choices of a labeling config built by `build_label_config`."""
    root = ET.fromstring(label_config)
    for choices in root.iter("Choices"):
        if choices.get("name") == CATEGORY:
            return [c.get("value", "") for c in choices.iter("Choice")]
    return []


def brush_result(mask: np.ndarray) -> dict[str, Any]:
    """A product mask (H, W) uint8, product = 255, as a Label Studio brush result (SDK RLE)."""
    from label_studio_sdk.converter.brush import mask2rle

    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise DataError(f"mask: expected a (H, W) uint8 array, got shape {mask.shape} dtype {mask.dtype}")
    h, w = mask.shape
    return {
        "from_name": MASK, "to_name": IMAGE, "type": "brushlabels", "original_width": w, "original_height": h,
        "image_rotation": 0, "value": {"format": "rle", "rle": mask2rle(mask), "brushlabels": [PRODUCT_LABEL]},
    }  # fmt: skip


def choice_result(category: str) -> dict[str, Any]:
    return {"from_name": CATEGORY, "to_name": IMAGE, "type": "choices", "value": {"choices": [category]}}


def text_result(text: str) -> dict[str, Any]:
    return {"from_name": STYLE, "to_name": IMAGE, "type": "textarea", "value": {"text": [text]}}


def decode_brush(result: dict[str, Any]) -> np.ndarray:
    """One brush result -> (H, W) uint8 alpha, decoded by the SDK's converter."""
    from label_studio_sdk.converter.brush import decode_rle

    value = result.get("value", {})
    w, h = int(result["original_width"]), int(result["original_height"])
    flat = decode_rle(value["rle"])
    if flat.size != w * h * 4:
        raise ValueError(f"RLE holds {flat.size} values, expected {w}x{h}x4 = {w * h * 4}")
    return flat.reshape(h, w, 4)[:, :, 3]
