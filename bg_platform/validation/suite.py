"""The Great Expectations suite over the stats DataFrame: one expectation per rule, each rule with a
plain-words title and fix. GX is imported inside functions (it costs ~2 s), and one ephemeral
context is kept per process so repeated validations (tests, an Airflow worker) pay for it once.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bg_platform.config import ValidateConfig
from bg_platform.data.manifest import SPLITS

ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
SUITE_NAME = "bg_dataset"


@dataclass(frozen=True)
class Rule:
    name: str
    title: str  # what is wrong, in plain words
    fix: str  # str.format template over the ValidateConfig fields and {allowed}
    expectation: Callable[[ValidateConfig, Any], Any]  # (cfg, gx expectations module) -> Expectation
    found: Callable[[pd.Series], str]  # the value a failing row has, for the report


@dataclass
class Failure:
    rule: str
    title: str
    fix: str
    unexpected: int  # failing rows as GX counts them
    ids: list[str] = field(default_factory=list)  # every failing row id (report shows the first N)
    found: list[str] = field(default_factory=list)  # per id, what was found


def _between(column: str, lo: str | None = None, hi: str | None = None, lo_value: float | None = None):
    def build(cfg: ValidateConfig, gxe: Any) -> Any:
        low = getattr(cfg, lo) if lo else lo_value
        return gxe.ExpectColumnValuesToBeBetween(
            column=column, min_value=low, max_value=getattr(cfg, hi) if hi else None
        )

    return build


def _in_set(column: str, values: tuple[Any, ...]):
    return lambda cfg, gxe: gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(values))


def _size(r: pd.Series) -> str:
    return f"{r['width']:.0f}x{r['height']:.0f} px"


def _category(r: pd.Series) -> str:
    hint = " (empty: the file is not listed in the importer's category file?)" if r["category"] == "" else ""
    return f"category {r['category']!r}{hint}"


def _coverage(r: pd.Series) -> str:
    c, hint = r["coverage"], ""
    if c == 0:
        hint = " (empty mask: no product marked)"
    elif c == 1:
        hint = " (full mask: inverted, or the product was not cut out?)"
    return f"product covers {c:.1%} of the image{hint}"


RULES: tuple[Rule, ...] = (
    Rule("not_empty", "the manifest has no rows", "re-run the importer and check that the source folder has images",
         lambda cfg, gxe: gxe.ExpectTableRowCountToBeBetween(min_value=1), lambda r: "0 rows"),
    Rule("id_unique", "two or more rows share an id", "give every sample its own id (re-run the importer, or drop the repeated rows)",
         lambda cfg, gxe: gxe.ExpectColumnValuesToBeUnique(column="id"), lambda r: f"id {r['id']!r}"),
    Rule("id_format", "id has characters other than letters, digits, _ . -",
         "rename the sample: ids become file names, so only letters, digits, '_', '-' and '.' are allowed",
         lambda cfg, gxe: gxe.ExpectColumnValuesToMatchRegex(column="id", regex=ID_PATTERN), lambda r: f"id {r['id']!r}"),
    Rule("image_exists", "image file is missing", "restore the file, re-run the importer, or remove the row from the manifest",
         _in_set("image_exists", (True,)), lambda r: r["image_error"]),
    Rule("image_not_empty", "image file is empty (0 bytes)", "re-export or re-copy the image (an interrupted copy?), or remove the row",
         _between("image_bytes", lo_value=1), lambda r: f"{r['image']}: 0 bytes"),
    Rule("image_decodable", "image cannot be decoded", "re-export the image as PNG or JPEG; the error says why (truncated, not an image, too many pixels)",
         _in_set("image_decodable", (True,)), lambda r: r["image_error"]),
    Rule("image_min_side", "image is too small", "use images at least {min_side} px on each side, or lower validate.min_side",
         _between("short_side", lo="min_side"), _size),
    Rule("image_max_side", "image is too large", "downscale to at most {max_side} px on the long side, or raise validate.max_side",
         _between("long_side", hi="max_side"), _size),
    Rule("mask_exists", "mask file is missing", "add the product mask (white = product) with the image's file stem, then re-run the importer",
         _in_set("mask_exists", (True,)), lambda r: r["mask_error"]),
    Rule("mask_not_empty", "mask file is empty (0 bytes)", "re-export the mask, or remove the row",
         _between("mask_bytes", lo_value=1), lambda r: f"{r['mask']}: 0 bytes"),
    Rule("mask_decodable", "mask cannot be decoded", "re-export the mask as a PNG (white or opaque = product)",
         _in_set("mask_decodable", (True,)), lambda r: r["mask_error"]),
    Rule("mask_size_matches", "mask size differs from the image size", "re-export the mask at exactly the image's width and height",
         _in_set("mask_size_matches", (True,)),
         lambda r: f"image {r['width']:.0f}x{r['height']:.0f}, mask {r['mask_width']:.0f}x{r['mask_height']:.0f}"),
    Rule("mask_binary", "mask is not black and white",
         "save the mask as pure black/white PNG (product = 255, background = 0), not JPEG or anti-aliased; "
         "or lower validate.mask_binary_min ({mask_binary_min})",
         _between("mask_binary", lo="mask_binary_min", hi=None), lambda r: f"{r['mask_binary']:.1%} of pixels are ~0 or ~255"),
    Rule("coverage", "product share of the image is out of range",
         "the product must cover {coverage_min:.0%}-{coverage_max:.0%} of the image: fix the mask (empty = nothing "
         "marked, full = inverted), or change validate.coverage_min/coverage_max",
         _between("coverage", lo="coverage_min", hi="coverage_max"), _coverage),
    Rule("category_known", "category is not known", "{allowed}", _in_set("category_known", (True,)),
         _category),
    Rule("category_count", "category has too few samples",
         "add samples until each category has at least {min_per_category}, drop the category, or lower validate.min_per_category",
         _between("category_count", lo="min_per_category"), lambda r: f"category {r['category']!r}: {r['category_count']:.0f} samples"),
    Rule("brand_valid", "brand id is not a valid id",
         "use a brand id of lowercase letters, digits, '_' or '-' (e.g. 'acme_shoes'); no spaces, slashes or uppercase; '' for no brand",
         _in_set("brand_valid", (True,)), lambda r: f"brand {r['brand']!r}"),
    Rule("brand_count", "brand has too few samples",
         "add reference images until each brand has at least {min_per_brand}, or lower validate.min_per_brand",
         _between("brand_count", lo="min_per_brand"), lambda r: f"brand {r['brand']!r}: {r['brand_count']:.0f} samples"),
    Rule("split_valid", "split is not train, val or test", "set split to one of train, val, test (or leave it empty in the source so the importer assigns one)",
         _in_set("split", SPLITS), lambda r: f"split {r['split']!r}"),
    Rule("no_duplicates", "image bytes are identical to another row's",
         "keep one copy: duplicates inflate counts and leak between train and held-out splits",
         _in_set("duplicate", (False,)), lambda r: f"same bytes as {r['duplicate_of']}"),
    Rule("manifest_matches", "manifest does not describe the file on disk",
         "the file changed after import: re-run the importer so the manifest's sha256/size match",
         _in_set("manifest_matches", (True,)), lambda r: r["manifest_note"]),
    Rule("product_one_split", "one product appears in several splits",
         "keep every sample of a product in one split, so held-out metrics are not inflated by seen products",
         lambda cfg, gxe: gxe.ExpectColumnValuesToBeBetween(column="product_splits", max_value=1),
         lambda r: f"product {r['product']!r} in {r['product_splits']:.0f} splits"),
)  # fmt: skip
RULES_BY_NAME = {rule.name: rule for rule in RULES}


@functools.cache
def _gx() -> tuple[Any, Any, Any]:
    """(module, expectations module, context) - the context holds no data, so one is reused."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    # GX logs INFO chatter on import and pins one module logger to INFO; keep stderr for
    # problems unless the caller asked for DEBUG (-v).
    quiet = logging.getLogger().level > logging.DEBUG
    if quiet:
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if quiet:
        logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return gx, gxe, ctx


@functools.lru_cache(maxsize=8)
def _definition(cfg: ValidateConfig) -> Any:
    """The suite + validation definition for one config. Cached: (re)building a suite compares
    every expectation pairwise and costs about as much as running it."""
    gx, gxe, ctx = _gx()
    expectations = []
    for rule in RULES:
        exp = rule.expectation(cfg, gxe)
        exp.meta = {"rule": rule.name}
        expectations.append(exp)
    name = f"{SUITE_NAME}_{hashlib.sha256(repr(cfg).encode()).hexdigest()[:12]}"
    suite = ctx.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=expectations))
    try:
        source = ctx.data_sources.get("bg_stats")
    except (KeyError, ValueError):
        source = ctx.data_sources.add_pandas("bg_stats")
    asset = (
        source.get_asset("samples")
        if "samples" in source.get_asset_names()
        else source.add_dataframe_asset("samples")
    )
    existing = {bd.name: bd for bd in asset.batch_definitions}
    batch = existing.get(name) or asset.add_batch_definition_whole_dataframe(name)
    return ctx.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )


def run_suite(
    stats: pd.DataFrame, cfg: ValidateConfig, allowed: tuple[str, ...] | str
) -> tuple[list[Failure], dict[str, Any]]:
    """Validate `stats` (categories against `allowed`: a list, or a name pattern); returns the
    failures in rule order and the GX result as a JSON-able dict."""
    res = _definition(cfg).run(
        batch_parameters={"dataframe": stats},
        # "row" (the manifest row number) tells apart rows that share an id.
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["id", "row"]},
    )
    by_rule = {r.expectation_config.meta.get("rule"): r for r in res.results}
    failures = [_failure(rule, by_rule.get(rule.name), stats, cfg, allowed) for rule in RULES]
    return [f for f in failures if f is not None], res.describe_dict()


def _failure(
    rule: Rule, result: Any, stats: pd.DataFrame, cfg: ValidateConfig, allowed: tuple[str, ...] | str
) -> Failure | None:
    if result is not None and result.success:
        return None
    fix = rule.fix.format(
        **{k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, allowed=_allowed_text(allowed)
    )
    if result is None:
        return Failure(
            rule.name, rule.title, fix, 0, found=["GX returned no result for this rule (a GX bug?)"]
        )
    raised = (result.exception_info or {}).get("raised_exception")
    if raised:
        message = result.exception_info.get("exception_message", "")
        return Failure(rule.name, rule.title, fix, 0, found=[f"GX could not evaluate the rule: {message}"])
    rows = result.result.get("unexpected_index_list") or []
    unexpected = int(result.result.get("unexpected_count", len(rows)) or 0)
    if not rows:  # table-level rules (row count) have no rows to name
        return Failure(rule.name, rule.title, fix, unexpected, found=[rule.found(pd.Series(dtype=object))])
    picked = [stats.iloc[int(row["row"])] for row in rows]
    return Failure(
        rule.name,
        rule.title,
        fix,
        unexpected,
        ids=[str(r["id"]) for r in picked],
        found=[rule.found(r) for r in picked],
    )


def _allowed_text(allowed: tuple[str, ...] | str) -> str:
    if isinstance(allowed, tuple):
        return f"use one of {list(allowed)} (or add the category to validate.known_categories)"
    return (
        "use a lowercase category name: letters, digits, spaces, '_' or '-', starting with a letter or digit "
        "(e.g. 'fabric sofa'); or list the allowed ones in validate.known_categories"
    )
