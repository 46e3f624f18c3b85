"""`bgp train-judges`: the independent judges used by evaluation (trained on real images only)."""

from __future__ import annotations

HELP = "train the category (and brand) judges on real held-in images; report held-out accuracy"


def add_arguments(p) -> None:
    p.add_argument("--dataset", help="dataset folder (default: dataset.dir)")
    p.add_argument("--metrics", default="metrics/judges.json")
    p.add_argument("--no-progress", action="store_true")


def run(args, params) -> int:
    from bg_platform.data.imageio import atomic_write_json
    from bg_platform.evaluation.judges import train_judges

    metrics = train_judges(params, args.dataset or params.dataset.dir, progress=not args.no_progress)
    atomic_write_json(args.metrics, metrics)
    for name, m in metrics.items():
        print(f"judge {name}: held-out accuracy {m['heldout']['accuracy']:.3f} {m['heldout']['per_class']}")
    return 0
