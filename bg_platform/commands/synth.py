"""`bgp synth`: generate BG-Synth, the embedded procedural dataset."""

from __future__ import annotations

HELP = "generate the BG-Synth dataset (the embedded default)"


def add_arguments(p) -> None:
    p.add_argument("--out", help="output folder (default: dataset.dir)")
    p.add_argument("--no-progress", action="store_true")


def run(args, params) -> int:
    import time

    from bg_platform.data import manifest
    from bg_platform.data.synth import generate

    start = time.perf_counter()
    out = generate(params.synth, args.out or params.dataset.dir, progress=not args.no_progress)
    frame = manifest.read(out)
    counts = frame.groupby("split").size().to_dict()
    print(f"bg-synth: {len(frame)} samples {counts} -> {out} in {time.perf_counter() - start:.1f}s")
    return 0
