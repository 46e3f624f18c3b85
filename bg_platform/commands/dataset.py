"""`bgp dataset`: build the dataset named by `dataset.source` (the first DVC stage)."""

from __future__ import annotations

HELP = "build the dataset named by dataset.source (synth | bg60k | folder) into dataset.dir"


def add_arguments(p) -> None:
    p.add_argument("--out", help="output folder (default: dataset.dir)")
    p.add_argument("--contact-sheet", default="reports/dataset_contact_sheet.png", help="PNG written after the build")


def run(args, params) -> int:
    import time
    from pathlib import Path

    from bg_platform.data import manifest
    from bg_platform.data.contact_sheet import dataset_contact_sheet

    out = Path(args.out or params.dataset.dir)
    start = time.perf_counter()
    source = params.dataset.source
    if source == "synth":
        from bg_platform.data.synth import generate

        generate(params.synth, out)
    elif source == "bg60k":
        from bg_platform.data.importers.bg60k import import_bg60k

        import_bg60k(params.bg60k.path, out, params.bg60k, params.imageio)
    else:
        from bg_platform.data.importers.folder import import_folder

        import_folder(params.folder.path, out, params.folder, params.imageio)
    frame = manifest.read(out)
    print(f"dataset ({source}): {len(frame)} samples {frame.groupby('split').size().to_dict()} -> {out} "
          f"in {time.perf_counter() - start:.1f}s")
    if args.contact_sheet:
        print(f"contact sheet -> {dataset_contact_sheet(out, args.contact_sheet)}")
    return 0
