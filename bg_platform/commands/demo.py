"""`bgp demo` (what `make demo` runs): the whole pipeline on the embedded default, then a tour of
the outputs. Each step is a DVC stage, so a second run only redoes what changed."""

from __future__ import annotations

HELP = "run the whole pipeline (dvc repro) on the embedded default and show where the outputs are"


def add_arguments(p) -> None:
    p.add_argument("--skip-serving", action="store_true", help="stop after dvc repro")
    p.add_argument("--force", action="store_true", help="dvc repro --force (redo every stage)")


def run(args, params) -> int:
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from bg_platform.errors import BgError

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # stages call `bgp`
    env.setdefault("DVC_NO_ANALYTICS", "1")
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "dvc", "repro", *(["--force"] if args.force else [])]
    print("$", " ".join(cmd[2:]), flush=True)
    if subprocess.call(cmd, env=env) != 0:
        raise BgError("dvc repro failed (see the stage output above); fix the cause and run `make demo` again")
    repro_min = (time.perf_counter() - start) / 60
    print(f"\npipeline done in {repro_min:.1f} min. Outputs:")
    outputs = [
        ("dataset", params.dataset.dir),
        ("dataset contact sheet", "reports/dataset/contact_sheet.png"),
        ("validation report", f"{params.validate.report_dir}/report.md"),
        ("judges", params.judges.out_dir),
        ("base model", params.train_base.out_dir),
        ("training loss curve", f"{params.train_base.plots_dir}/loss.png"),
        ("base sample grid", f"{params.evaluate_base.out_dir}/samples.png"),
        ("base metrics", params.evaluate_base.metrics),
    ]
    for name, path in outputs:
        mark = "" if Path(path).exists() else "  (missing)"
        print(f"  {name:24s} {path}{mark}")
    subprocess.call([sys.executable, "-m", "dvc", "metrics", "show"], env=env)
    return 0
