"""`bgp train-base`: train the Category-Wise base (one model, every category)."""

from __future__ import annotations

HELP = "train the Category-Wise Generator base on the dataset (resumable)"


def add_arguments(p) -> None:
    p.add_argument("--dataset", help="dataset folder (default: dataset.dir)")
    p.add_argument("--out", help="model folder (default: train_base.out_dir)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", metavar="CHECKPOINT", help="resume from this checkpoint folder")
    g.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints and start over")
    p.add_argument("--no-progress", action="store_true")


def run(args, params) -> int:
    from bg_platform.training.base import train_base

    result = train_base(
        params,
        dataset_dir=args.dataset or params.dataset.dir,
        out_dir=args.out or params.train_base.out_dir,
        resume=False if args.no_resume else (args.resume or True),
        progress=not args.no_progress,
    )
    print(result)
    return 0
