"""`bgp contact-sheet`: a PNG of a few samples per category and per brand, masks beside images."""

from __future__ import annotations

HELP = "PNG contact sheet of a dataset (samples per category and brand, masks beside images)"


def add_arguments(p) -> None:
    p.add_argument("dataset", nargs="?", help="dataset folder (default: dataset.dir)")
    p.add_argument("--out", default="reports/dataset_contact_sheet.png")
    p.add_argument("--per-group", type=int, default=4, help="samples per category / brand")


def run(args, params) -> int:
    from bg_platform.data.contact_sheet import dataset_contact_sheet

    path = dataset_contact_sheet(args.dataset or params.dataset.dir, args.out, per_group=args.per_group)
    print(f"contact sheet -> {path}")
    return 0
