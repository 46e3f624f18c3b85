"""`bgp validate [dataset] [--report-dir DIR] [--metrics FILE]`: the Great Expectations data gate."""

from __future__ import annotations

HELP = "validate a dataset folder (Great Expectations); exit 3 with a report naming each bad row"


def add_arguments(p) -> None:
    p.add_argument(
        "dataset", nargs="?", help="dataset folder or manifest.parquet (default: params dataset.dir)"
    )
    p.add_argument(
        "--report-dir",
        help="where report.md, gx_result.json, stats.parquet go (default: validate.report_dir)",
    )
    p.add_argument("--metrics", help="also write the dataset metrics JSON here (for `dvc metrics`)")


def run(args, params) -> int:
    from bg_platform.data import manifest
    from bg_platform.errors import ValidationFailed
    from bg_platform.validation import validate_dataset, write_metrics

    dataset = args.dataset or params.dataset.dir
    report_dir = args.report_dir or params.validate.report_dir
    result = validate_dataset(
        dataset, params.validate, params.imageio, _synth_categories(manifest, dataset, params), report_dir
    )
    if args.metrics:
        write_metrics(result.metrics, args.metrics)
    if not result.success:
        print(result.report)
        raise ValidationFailed(
            f"{len(result.failures)} rule(s) failed on {result.metrics['failed_rows']} row(s) of {dataset}; "
            f"report: {report_dir}/report.md"
        )
    print(result.summary)
    return 0


def _synth_categories(manifest, dataset, params) -> tuple[str, ...] | None:
    """BG-Synth data is checked against the configured category list; other sources against the
    category name pattern (ValidateConfig.known_categories, when set, overrides both)."""
    from bg_platform.errors import DataError

    try:
        sources = set(manifest.read(dataset)["source"])
    except DataError:  # validate_dataset reads it again and reports the problem itself
        return None
    return tuple(params.synth.categories) if sources == {"synth"} else None
