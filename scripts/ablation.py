"""Ablation of the Category-Wise Generator, all numbers from ONE run of this script:

  (a) full CG: identifier tokens + attention loss + inference-time confinement
  (b) without the attention loss
  (c) without inference-time confinement (model (a), generated unconfined)
  (d) the category named in plain words instead of an identifier token

plus a fidelity-vs-training-minutes curve of (a) (its checkpoints, evaluated on a smaller set).
Writes docs/RESULTS.md (the table, the command, the config) and docs/fidelity_curve.png.

    .venv/bin/python scripts/ablation.py [--profile profiles/X.yaml] [--workdir runs/ablation]

Uses the dataset and judges of the DVC pipeline (run `dvc repro train_judges` first, or
`make demo`); trains three models of the configured size (about 3 x the train_base time).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def variant(params, override: dict):
    from bg_platform import config

    return config.parse(config.deep_merge(config.to_dict(params), override))


def load_checkpoint_weights(components, ckpt: Path) -> None:
    """accelerate saves the prepared models in order: unet -> model.safetensors, text encoder -> model_1."""
    from safetensors.torch import load_file

    components.unet.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    components.text_encoder.load_state_dict(load_file(str(ckpt / "model_1.safetensors")))


def fidelity_curve(params, work: Path, model_dir: Path, dataset: str, judges: Path) -> list[dict]:
    from dataclasses import replace

    from bg_platform.evaluation.base import evaluate_base
    from bg_platform.model.components import load, save

    rows = []
    seconds = {}
    with open(work / "a" / "plots" / "loss.csv") as fh:
        for r in csv.DictReader(fh):
            seconds[int(float(r["step"]))] = float(r["seconds"])
    ckpts = sorted((work / "a" / "run" / "checkpoints").glob("step-*"), key=lambda p: int(p.name[5:]))
    # The same number of generations as the table: the Fréchet distance of 96-dim judge features is
    # biased by sample size (a smaller n inflates the real-vs-real floor and squeezes every ratio
    # towards 1), so FD ratios are only comparable at equal n.
    cfg = replace(params.evaluate_base, grid_seeds=1)
    for ck in ckpts:
        step = int(ck.name[5:])
        comps = load(model_dir)
        load_checkpoint_weights(comps, ck)
        tmp = work / "curve_model"
        save(comps, tmp)
        m = evaluate_base(tmp, dataset, judges / "category", cfg, out_dir=work / "curve", progress=False)
        near = min(seconds, key=lambda s: abs(s - step)) if seconds else step
        rows.append({"step": step, "minutes": round(seconds.get(near, 0) / 60, 2), "fidelity": m["category_fidelity"],
                     "fd_ratio": m["judge_fd_ratio"]})
        print(f"curve: step {step} ({rows[-1]['minutes']} min) fidelity {m['category_fidelity']:.3f}", flush=True)
    return rows


def training_minutes(loss_csv: Path) -> float:
    """Minutes the training loop logged (its own clock; a resumed, finished run keeps its rows)."""
    with open(loss_csv) as fh:
        rows = list(csv.DictReader(fh))
    return float(rows[-1]["seconds"]) / 60 if rows else float("nan")


def plot_curve(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    minutes = [r["minutes"] for r in rows]
    ax.plot(minutes, [r["fidelity"] for r in rows], marker="o", label="category fidelity")
    ax.set_xlabel("training minutes (2-core CPU)")
    ax.set_ylabel("category fidelity")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(minutes, [r["fd_ratio"] for r in rows], marker="s", color="tab:red", label="judge FD / floor")
    ax2.axhline(2.0, color="tab:red", linestyle=":", linewidth=1)
    ax2.set_ylabel("judge FD / real-vs-real floor (target <= 2)")
    fig.legend(loc="center right", fontsize=8)
    ax.set_title("Category-Wise base: fidelity vs training time")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--profile", action="append", default=[])
    ap.add_argument("--workdir", default="runs/ablation")
    ap.add_argument("--out", default=str(ROOT / "docs" / "RESULTS.md"))
    ap.add_argument("--curve-points", type=int, default=6)
    args = ap.parse_args(argv)

    from bg_platform import config
    from bg_platform.evaluation.base import evaluate_base
    from bg_platform.training.base import train_base

    params = config.load(args.params, args.profile)
    dataset = params.dataset.dir
    judges = Path(params.judges.out_dir)
    if not (judges / "category" / "judge.json").exists():
        print(f"no judges at {judges}: run `dvc repro train_judges` (or `make demo`) first", file=sys.stderr)
        return 2
    work = Path(args.workdir)
    steps = params.train_base.loop.steps
    every = max(1, steps // args.curve_points)
    variants = {
        "a": {"train_base": {"loop": {"checkpoint_every": every, "keep_checkpoints": 1000}}},
        "b": {"train_base": {"loss": {"attention_loss": False}}},
        "d": {"model": {"prompt": {"mode": "words"}}},
    }
    trained = {}
    for name, override in variants.items():
        p = variant(params, config.deep_merge(override, {"train_base": {
            "run_dir": str(work / name / "run"), "plots_dir": str(work / name / "plots")}}))
        res = train_base(p, dataset, work / name / "model", resume=True, progress=False)
        trained[name] = (res, training_minutes(work / name / "plots" / "loss.csv"))
        print(f"trained ({name}): {res}", flush=True)
    evals = {
        "a": ("full CG (identifier + attention loss + confinement)", "a", True),
        "b": ("without the attention loss", "b", True),
        "c": ("without inference-time confinement", "a", False),
        "d": ("category in plain words instead of an identifier", "d", True),
    }
    results = {}
    for key, (label, model, confine) in evals.items():
        m = evaluate_base(work / model / "model", dataset, judges / "category", params.evaluate_base,
                          out_dir=work / f"eval_{key}", confine=confine, progress=False)
        results[key] = (label, model, m)
        print(f"({key}) {label}: fidelity {m['category_fidelity']:.3f}", flush=True)
    curve = fidelity_curve(params, work, work / "a" / "model", dataset, judges)
    docs = Path(args.out).parent
    docs.mkdir(parents=True, exist_ok=True)
    plot_curve(curve, docs / "fidelity_curve.png")
    (work / "results.json").write_text(json.dumps({k: v[2] for k, v in results.items()} | {"curve": curve}, indent=2))
    write_markdown(Path(args.out), params, results, trained, curve, argv or sys.argv[1:])
    print(f"-> {args.out}")
    return 0


def write_markdown(path: Path, params, results, trained, curve, argv) -> None:
    from bg_platform import config

    any_m = next(iter(results.values()))[2]
    lines = [
        "# Results: Category-Wise Generator ablation",
        "",
        "Produced by one run of `.venv/bin/python scripts/ablation.py " + " ".join(argv) + "` on the embedded "
        "default (BG-Synth, 64 px, 8 categories; held-out products), on this 2-core CPU. "
        "All numbers below come from that run.",
        "",
        f"Judge (independent CNN, real images only): accuracy on real held-out backgrounds "
        f"**{any_m['judge_accuracy_real_heldout']:.3f}**, on codec reconstructions of them "
        f"**{any_m['judge_accuracy_codec_reconstruction']:.3f}** (the ceiling any model can reach through this codec).",
        "",
        "| variant | category fidelity | judge FD (gen vs real) | FD floor (real vs real) | FD ratio | "
        "attention on background (learned) | (confined) | product preservation | edge bleed | train min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, (label, model, m) in results.items():
        lines.append(
            f"| ({key}) {label} | {m['category_fidelity']:.3f} | {m['judge_fd_generated_vs_real']:.4g} | "
            f"{m['judge_fd_real_vs_real_floor']:.4g} | {m['judge_fd_ratio']:.2f} | "
            f"{m['attention_background_mass_learned']:.3f} | {m['attention_background_mass_confined']:.3f} | "
            f"{m['product_preservation']:.4f} | {m['edge_bleed']:.4f} | {trained[model][1]:.1f} |"
        )
    lines += ["", "Per-category fidelity:", "", "| variant | " + " | ".join(sorted(any_m["category_fidelity_per_class"])) + " |",
              "|---|" + "---|" * len(any_m["category_fidelity_per_class"])]
    for key, (_label, _, m) in results.items():
        per = m["category_fidelity_per_class"]
        lines.append(f"| ({key}) | " + " | ".join(f"{per[c]:.2f}" for c in sorted(per)) + " |")
    lines += ["", "## Fidelity vs training minutes (variant a, its checkpoints)", "",
              "Each point is a checkpoint's raw weights (the final model is their EMA), evaluated exactly like the "
              "table (same products, seeds and number of generations: FD ratios are only comparable at equal n).",
              "", "![curve](fidelity_curve.png)", "",
              "| step | minutes | fidelity | FD ratio |", "|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['minutes']} | {r['fidelity']:.3f} | {r['fd_ratio']:.2f} |" for r in curve]
    lines += ["", "## Configuration", "", "```json", json.dumps({"model": config.to_dict(params.model),
              "train_base": config.to_dict(params.train_base), "evaluate_base": config.to_dict(params.evaluate_base)},
              indent=1), "```", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
