"""`bgp train-adapter --brand B`: a brand's LoRA adapter over the frozen base, from its references."""

from __future__ import annotations

HELP = "train a brand adapter (LoRA) over the frozen Category-Wise base from the brand's references"


def add_arguments(p) -> None:
    p.add_argument("--brand", required=True)
    p.add_argument("--dataset", help="dataset folder with the brand's references (default: dataset.dir)")
    p.add_argument("--base", help="base model folder (default: train_base.out_dir)")
    p.add_argument("--out", help="adapter folder (default: adapter.out_dir/<brand>)")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def run(args, params) -> int:
    import re
    from pathlib import Path

    from bg_platform.config import BRAND_PATTERN
    from bg_platform.errors import BgError
    from bg_platform.training.adapter import train_adapter

    if not re.match(BRAND_PATTERN, args.brand):
        raise BgError(f"--brand: {args.brand!r} is not a valid brand id (pattern {BRAND_PATTERN}: lowercase, digits, _ and -)")
    result = train_adapter(
        params, args.brand, args.dataset or params.dataset.dir, args.base or params.train_base.out_dir,
        args.out or Path(params.adapter.out_dir) / args.brand, resume=not args.no_resume, progress=not args.no_progress,
    )
    print(result)
    return 0
