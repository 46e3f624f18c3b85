"""`bgp demo` (what `make demo` runs): the whole pipeline on the embedded default (`dvc repro`),
then the service: start `bentoml serve`, call it for every category and brand, stop it, and put
everything into one contact sheet. Each pipeline step is a DVC stage, so a second run only redoes
what changed."""

from __future__ import annotations

HELP = "run the whole pipeline (dvc repro) on the embedded default, call the service, show the outputs"


def add_arguments(p) -> None:
    p.add_argument("--skip-serving", action="store_true", help="stop after dvc repro")
    p.add_argument("--force", action="store_true", help="dvc repro --force (redo every stage)")
    p.add_argument("--sheet", default="reports/contact_sheet.png", help="the contact sheet PNG")


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
    print("$ dvc repro", flush=True)
    if subprocess.call(cmd, env=env) != 0:
        raise BgError("dvc repro failed (see the stage output above); fix the cause and run `make demo` again")
    print(f"\npipeline done in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    service_rows = [] if args.skip_serving else call_service(params)
    from bg_platform.evaluation.contact_sheet import demo_contact_sheet

    adapters = {b: Path(params.adapter.out_dir) / b for b in params.brands if (Path(params.adapter.out_dir) / b).exists()}
    sheet = demo_contact_sheet(params.train_base.out_dir, params.dataset.dir, adapters, args.sheet,
                               service_rows=service_rows, steps=params.evaluate_base.sampling.steps,
                               guidance=params.evaluate_base.sampling.guidance)
    print(f"\nmake demo done in {(time.perf_counter() - start) / 60:.1f} min. Outputs:")
    outputs = [
        ("contact sheet", str(sheet)),
        ("dataset", params.dataset.dir),
        ("dataset contact sheet", "reports/dataset/contact_sheet.png"),
        ("validation report", f"{params.validate.report_dir}/report.md"),
        ("base model", params.train_base.out_dir),
        ("base loss curve", f"{params.train_base.plots_dir}/loss.png"),
        ("base sample grid", f"{params.evaluate_base.out_dir}/samples.png"),
        ("base metrics", params.evaluate_base.metrics),
        ("adapters", params.adapter.out_dir),
        ("adapter grids", f"{params.evaluate_adapter.out_dir}/<brand>/samples.png"),
        ("adapter metrics", f"{params.evaluate_adapter.metrics_dir}/<brand>.json"),
        ("adapter registry", params.registry.root),
    ]
    for name, path in outputs:
        missing = "" if "<" in path or Path(path).exists() else "  (missing)"
        print(f"  {name:24s} {path}{missing}")
    print_results(params)
    print("\nall metrics: .venv/bin/dvc metrics show   (or `dvc metrics diff` after a change)")
    return 0


def print_results(params) -> None:
    """The headline numbers of this run (the full set is in the metrics files)."""
    import json
    from pathlib import Path

    from bg_platform.evaluation import adapter, base

    base_metrics = Path(params.evaluate_base.metrics)
    if base_metrics.exists():
        print("\nCategory-Wise base (held-out products):")
        print(base.format_summary(json.loads(base_metrics.read_text())))
    for brand in params.brands:
        path = Path(params.evaluate_adapter.metrics_dir) / f"{brand}.json"
        if path.exists():
            print(adapter.format_summary(json.loads(path.read_text())))


def call_service(params) -> list[tuple[str, list]]:
    """Start the service on the pipeline's base + registry, generate once per category and per
    brand (a held-out product, seed 0), stop it. Returns contact-sheet rows."""
    import base64
    import io
    from pathlib import Path

    import httpx
    import numpy as np
    from PIL import Image

    from bg_platform.data.imageio import encode_png
    from bg_platform.serving.launcher import start_service
    from bg_platform.training.data import load_set

    test = load_set(params.dataset.dir, params.model.resolution, splits=("test",), brand="")
    image = encode_png(test.images[0].numpy())
    mask = encode_png(test.masks[0].numpy())
    env = {
        "BGP_BASE_DIR": str(Path(params.train_base.out_dir).resolve()),
        "BGP_REGISTRY": params.registry.root if "://" in params.registry.root else str(Path(params.registry.root).resolve()),
        "BENTOML_HOME": str(Path(".bentoml").resolve()),
        "BGP_WORK_DIR": str(Path("runs/service").resolve()),
        "BGP_STEPS": str(params.evaluate_base.sampling.steps),
        "BGP_GUIDANCE": str(params.evaluate_base.sampling.guidance),
    }
    print("\nstarting the service (bentoml serve) ...", flush=True)
    rows = []
    with start_service(env, Path("runs/service/server.log")) as svc, httpx.Client(base_url=svc.url, timeout=300) as http:
        brands = http.get("/brands").json()["brands"]
        print(f"service ready at {svc.url}; production adapters: {brands}")
        requests = [(c, c, None) for c in http.get("/categories").json()["categories"]]
        for brand in sorted(brands):
            refs = load_set(params.dataset.dir, params.model.resolution, splits=("train",), brand=brand)
            requests.append((f"{brand}", refs.categories[0], brand))
        for label, category, brand in requests:
            data = {"category": category, "seed": "0", "num_images": "2"} | ({"brand": brand} if brand else {})
            r = http.post("/generate", files={"image": ("p.png", image, "image/png"), "mask": ("m.png", mask, "image/png")},
                          data=data)
            if r.status_code != 200:
                raise RuntimeError(f"service answered {r.status_code} for {label}: {r.text[:300]}")
            body = r.json()
            imgs = [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")) for b in body["images"]]
            version = body.get("adapter_version") or "base"
            print(f"  {label:10s} -> {len(imgs)} image(s), adapter version {version}")
            rows.append((label, imgs))
    print("service stopped")
    return rows
