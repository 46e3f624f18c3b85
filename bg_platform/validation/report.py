"""What a validation run leaves behind: a human report (markdown), the GX result (JSON), the stats
table, a metrics dict for `dvc metrics`, and `passed.json` - written only when every rule passed,
so a DVC stage that depends on it never runs after a failure. Every file is written atomically.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bg_platform.data.imageio import atomic_write_bytes
from bg_platform.data.manifest import SPLITS
from bg_platform.validation.suite import Failure

REPORT_ROWS = (
    20  # rows listed per failed rule in report.md (all of them are in stats.parquet / gx_result.json)
)
GX_LIST_CAP = 1000  # list items kept per field in gx_result.json, so a fully failing 60k-row set stays small
PASSED_NAME = "passed.json"


def dataset_metrics(stats: pd.DataFrame, failures: Sequence[Failure]) -> dict[str, Any]:
    """Counts for `dvc metrics`: samples, per split / category / brand, and rows per failed rule."""
    failed_ids = {i for f in failures for i in f.ids}
    brands = stats.loc[stats["brand"] != "", "brand"].value_counts()
    return {
        "passed": not failures,
        "samples": len(stats),
        "splits": {s: int((stats["split"] == s).sum()) for s in SPLITS},
        "categories": {str(k): int(v) for k, v in sorted(stats["category"].value_counts().items())},
        "brands": {str(k): int(v) for k, v in sorted(brands.items())},
        "failed_rules": {f.rule: (len(f.ids) or f.unexpected or 1) for f in failures},
        "failed_rows": len(failed_ids),
    }


def summary_line(dataset: str, metrics: dict[str, Any], rules: int) -> str:
    splits = ", ".join(f"{k} {v}" for k, v in metrics["splits"].items())
    if metrics["passed"]:
        return (
            f"validation passed: {dataset}: {metrics['samples']} samples ({splits}), "
            f"{len(metrics['categories'])} categories, {len(metrics['brands'])} brands, {rules} rules"
        )
    return (
        f"validation FAILED: {dataset}: {len(metrics['failed_rules'])} of {rules} rules failed on "
        f"{metrics['failed_rows']} of {metrics['samples']} rows"
    )


def render(dataset: str, failures: Sequence[Failure], metrics: dict[str, Any], rules: int) -> str:
    lines = [f"# Data validation: {dataset}", "", summary_line(dataset, metrics, rules), ""]
    for f in failures:
        lines += [f"## {f.rule}: {f.title} ({len(f.ids) or f.unexpected} row(s))", "", f"Fix: {f.fix}", ""]
        if not f.ids:
            lines += [f"Found: {'; '.join(f.found)}", ""]
            continue
        lines += ["| id | found |", "|---|---|"]
        lines += [
            f"| {_cell(i)} | {_cell(v)} |"
            for i, v in zip(f.ids[:REPORT_ROWS], f.found[:REPORT_ROWS], strict=True)
        ]
        if len(f.ids) > REPORT_ROWS:
            lines.append(f"| … | and {len(f.ids) - REPORT_ROWS} more rows (all of them in stats.parquet) |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def clear_passed(report_dir: Path) -> None:
    (report_dir / PASSED_NAME).unlink(missing_ok=True)


def write_reports(
    report_dir: Path,
    *,
    report: str,
    gx_result: dict[str, Any],
    stats: pd.DataFrame,
    metrics: dict[str, Any],
    passed: dict[str, Any] | None,
) -> None:
    """Write everything; `passed.json` last and only when `passed` is given."""
    report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(report_dir / "report.md", report.encode())
    atomic_write_bytes(report_dir / "gx_result.json", _json(_trim(gx_result)))
    buf = io.BytesIO()
    stats.to_parquet(buf, index=False)
    atomic_write_bytes(report_dir / "stats.parquet", buf.getvalue())
    atomic_write_bytes(report_dir / "metrics.json", _json(metrics))
    if passed is not None:
        atomic_write_bytes(report_dir / PASSED_NAME, _json(passed))


def write_metrics(metrics: dict[str, Any], path: str | Path) -> Path:
    """The metrics dict as a JSON file (a DVC `metrics:` output)."""
    path = Path(path)
    atomic_write_bytes(path, _json(metrics))
    return path


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()


def _trim(obj: Any) -> Any:
    """Cap long lists; drop GX's pandas index query (a list of every failing row index as text)."""
    if isinstance(obj, dict):
        return {k: _trim(v) for k, v in obj.items() if k != "unexpected_index_query"}
    if isinstance(obj, list):
        head = [_trim(v) for v in obj[:GX_LIST_CAP]]
        return head + (
            [f"... {len(obj) - GX_LIST_CAP} more (see stats.parquet)"] if len(obj) > GX_LIST_CAP else []
        )
    return obj
