"""Data validation: per-sample stats (stats.py) -> Great Expectations suite (suite.py) -> report,
metrics and the `passed.json` gate (report.py). Entry point: `validate_dataset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bg_platform.config import ImageIOConfig, ValidateConfig
from bg_platform.data import imageio, manifest
from bg_platform.validation.report import (
    PASSED_NAME,
    clear_passed,
    dataset_metrics,
    render,
    summary_line,
    write_metrics,
    write_reports,
)
from bg_platform.validation.stats import category_rule, compute_stats
from bg_platform.validation.suite import RULES, Failure, run_suite


@dataclass
class ValidationResult:
    success: bool
    failures: list[Failure]
    report: str  # markdown, also written as <report_dir>/report.md
    metrics: dict[str, Any]  # see report.dataset_metrics
    summary: str  # one line
    stats: pd.DataFrame = field(repr=False)


def validate_dataset(
    dataset_dir: str | Path,
    cfg: ValidateConfig,
    io: ImageIOConfig,
    known_categories: Sequence[str] | None = None,
    report_dir: str | Path | None = None,
) -> ValidationResult:
    """Validate a dataset folder (or its manifest.parquet) and write the reports to `report_dir`
    (default: cfg.report_dir). `known_categories` is used when cfg.known_categories is empty;
    with neither, a category only has to match config.CATEGORY_PATTERN."""
    report_dir = Path(report_dir if report_dir is not None else cfg.report_dir)
    clear_passed(report_dir)  # first, so a crash below can never leave a stale "passed"
    frame = manifest.read(dataset_dir)
    root = manifest.root_of(dataset_dir)
    allowed = category_rule(cfg, known_categories)
    stats = compute_stats(frame, root, cfg, io, known_categories)
    failures, gx_result = run_suite(stats, cfg, allowed)
    metrics = dataset_metrics(stats, failures)
    name = str(dataset_dir)
    report = render(name, failures, metrics, len(RULES))
    passed = None
    if not failures:
        manifest_file = root / manifest.MANIFEST_NAME if Path(dataset_dir).is_dir() else Path(dataset_dir)
        # Deterministic content (no paths, no times): DVC re-runs downstream stages only on change.
        passed = {
            "passed": True,
            "samples": len(stats),
            "rules": len(RULES),
            "manifest_sha256": imageio.sha256_file(manifest_file),
        }
    write_reports(report_dir, report=report, gx_result=gx_result, stats=stats, metrics=metrics, passed=passed)
    return ValidationResult(
        success=not failures,
        failures=failures,
        report=report,
        metrics=metrics,
        summary=summary_line(name, metrics, len(RULES)),
        stats=stats,
    )


__all__ = [
    "PASSED_NAME",
    "RULES",
    "Failure",
    "ValidationResult",
    "dataset_metrics",
    "validate_dataset",
    "write_metrics",
]
