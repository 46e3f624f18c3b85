"""`bgp import {bg60k,folder} [path] [--out DIR]`: turn a source layout into a dataset folder."""

from __future__ import annotations

HELP = "import the BG60k release layout or a plain images/masks/CSV folder into a dataset folder"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="source", required=True, metavar="{bg60k,folder}")
    bg = sub.add_parser("bg60k", help="BG60k release: bg60k_imgs_*/, bg60k_masks_*/, bg60k_info.txt")
    bg.add_argument("path", nargs="?", help="release folder (default: params bg60k.path)")
    bg.add_argument(
        "--subset", choices=("bg60k", "bg1k"), default="bg60k", help="bg1k = the release's test subset"
    )
    bg.add_argument(
        "--limit", type=int, default=None, help="import at most N samples (default: params bg60k.limit)"
    )
    folder = sub.add_parser("folder", help="folder with images/, masks/ and categories.csv")
    folder.add_argument("path", nargs="?", help="source folder (default: params folder.path)")
    for parser in (bg, folder):
        parser.add_argument("--out", help="dataset folder to write (default: params dataset.dir)")


def run(args, params) -> int:
    import dataclasses

    from bg_platform.data.importers import import_bg60k, import_folder
    from bg_platform.errors import DataError

    out = args.out or params.dataset.dir
    if args.source == "bg60k":
        cfg = params.bg60k
        if args.limit is not None:
            if args.limit < 0:
                raise DataError(f"--limit {args.limit}: must be >= 0 (0 = all samples)")
            cfg = dataclasses.replace(cfg, limit=args.limit)
        import_bg60k(args.path or cfg.path, out, cfg, params.imageio, subset=args.subset)
    else:
        import_folder(args.path or params.folder.path, out, params.folder, params.imageio)
    return 0
