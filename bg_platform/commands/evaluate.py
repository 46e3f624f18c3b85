"""`bgp evaluate`: metrics, plots and a sample grid for the Category-Wise base."""

from __future__ import annotations

HELP = "evaluate the base on held-out products (fidelity, Fréchet distance, attention, preservation)"


def add_arguments(p) -> None:
    p.add_argument("--model", help="model folder (default: train_base.out_dir)")
    p.add_argument("--dataset", help="dataset folder (default: dataset.dir)")
    p.add_argument("--judges", help="judges folder (default: judges.out_dir)")
    p.add_argument("--out", help="report folder (default: evaluate_base.out_dir)")
    p.add_argument("--metrics", help="metrics JSON (default: evaluate_base.metrics)")
    p.add_argument("--no-confine", action="store_true", help="generate without inference-time confinement")
    p.add_argument("--no-progress", action="store_true")


def run(args, params) -> int:
    from pathlib import Path

    from bg_platform.evaluation.base import evaluate_base, format_summary

    cfg = params.evaluate_base
    metrics = evaluate_base(
        args.model or params.train_base.out_dir,
        args.dataset or params.dataset.dir,
        Path(args.judges or params.judges.out_dir) / "category",
        cfg,
        out_dir=args.out or cfg.out_dir,
        metrics_path=args.metrics or cfg.metrics,
        confine=False if args.no_confine else None,
        progress=not args.no_progress,
    )
    print(format_summary(metrics))
    print(f"grid -> {Path(args.out or cfg.out_dir) / 'samples.png'}; metrics -> {args.metrics or cfg.metrics}")
    return 0
