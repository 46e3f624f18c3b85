"""`bgp evaluate-adapter --brand B [--publish]`: brand fidelity with vs without, the gate, and
(optionally) publishing to the registry: promoted if it passes, recorded as rejected if not."""

from __future__ import annotations

HELP = "evaluate a brand adapter (with vs without), apply the gate, optionally publish to the registry"


def add_arguments(p) -> None:
    p.add_argument("--brand", required=True)
    p.add_argument("--adapter", help="adapter folder (default: adapter.out_dir/<brand>)")
    p.add_argument("--base", help="base model folder (default: train_base.out_dir)")
    p.add_argument("--dataset", help="dataset folder with the brand's references (default: dataset.dir)")
    p.add_argument("--products", help="dataset folder with held-out category-default products (default: dataset.dir)")
    p.add_argument("--metrics", help="metrics JSON (default: evaluate_adapter.metrics_dir/<brand>.json)")
    p.add_argument("--report-dir", help="sample grid folder (default: evaluate_adapter.out_dir/<brand>)")
    p.add_argument("--judges", help="judges folder (default: judges.out_dir)")
    p.add_argument("--publish", action="store_true", help="publish to registry.root (promote if the gate passes)")
    p.add_argument("--registry", help="registry root (default: registry.root)")


def run(args, params) -> int:
    from pathlib import Path

    from bg_platform.evaluation.adapter import evaluate_adapter, format_summary

    cfg = params.evaluate_adapter
    adapter_dir = args.adapter or Path(params.adapter.out_dir) / args.brand
    metrics = evaluate_adapter(
        args.brand, adapter_dir, args.base or params.train_base.out_dir, args.dataset or params.dataset.dir,
        args.judges or params.judges.out_dir, cfg, products_dir=args.products or params.dataset.dir,
        judge_cfg=params.judges, out_dir=args.report_dir or Path(cfg.out_dir) / args.brand,
        metrics_path=args.metrics or Path(cfg.metrics_dir) / f"{args.brand}.json",
    )
    print(format_summary(metrics))
    if args.publish and params.registry.publish:
        from bg_platform.orchestration.adapters import publish_adapter

        dep = publish_adapter(args.registry or params.registry.root, args.brand, adapter_dir, metrics,
                              promote=params.registry.promote)
        print(dep)
    return 0
