"""`bgp evaluate`: how good is the Category-Wise base, measured on held-out products.

- category fidelity: the category judge's accuracy on generated backgrounds vs the requested
  category (each held-out product is asked for every category in turn), printed beside the
  judge's accuracy on real held-out images and on codec reconstructions of them (the ceiling
  any latent model can reach through this codec);
- judge Fréchet distance, generated vs held-out real, beside the real-vs-real floor (val vs test);
- attention localisation: the category token's attention share on the background, as learned
  (no confinement) and as used in generation (confined);
- product preservation (share of product pixels unchanged, must be 1.0) and edge bleed.
Writes metrics.json (dvc metrics), a sample grid (rows = categories, columns = held-out
product + seed) and a per-category fidelity plot.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from bg_platform.config import EvaluateBaseConfig
from bg_platform.data.imageio import atomic_write_json
from bg_platform.evaluation.judge import Judge, accuracy_report
from bg_platform.evaluation.metrics import edge_bleed, frechet_distance, product_preservation
from bg_platform.grids import save_grid
from bg_platform.model.components import load
from bg_platform.model.inpaint import to_uint8
from bg_platform.model.pipeline import BgPipeline, probe_attention
from bg_platform.training.data import ImageSet, load_set, to_model_space

log = logging.getLogger(__name__)


def codec_reconstructions(codec, data: ImageSet) -> torch.Tensor:
    with torch.no_grad():
        x, _ = to_model_space(data.images, data.masks)
        return torch.from_numpy(to_uint8(codec.decode(codec.encode(x))))


def _requests(test: ImageSet, categories: list[str], per_category: int, seed: int) -> tuple[list[int], list[str]]:
    """Held-out products, each asked for a category in turn, per_category requests per category."""
    rng = np.random.default_rng(seed)
    n = per_category * len(categories)
    idx = rng.choice(len(test), size=n, replace=n > len(test)).tolist()
    return idx, [categories[i % len(categories)] for i in range(n)]


def _plot_fidelity(per_class: dict, real: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = sorted(per_class)
    xs = np.arange(len(cats))
    fig, ax = plt.subplots(figsize=(max(6, len(cats) * 0.8), 3.2))
    ax.bar(xs - 0.2, [real.get(c, 0) for c in cats], 0.4, label="judge on real held-out")
    ax.bar(xs + 0.2, [per_class[c] for c in cats], 0.4, label="judge on generated")
    ax.set_xticks(xs, cats, rotation=30)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.legend(loc="lower right")
    ax.set_title("category fidelity")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def evaluate_base(
    model_dir: str | Path,
    dataset_dir: str | Path,
    judge_dir: str | Path,
    cfg: EvaluateBaseConfig,
    *,
    out_dir: str | Path | None = None,
    metrics_path: str | Path | None = None,
    confine: bool | None = None,
    progress: bool = True,
) -> dict:
    t0 = time.perf_counter()
    out_dir = Path(out_dir or cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    comps = load(model_dir)
    pipe = BgPipeline(comps)
    categories = list(comps.meta.categories)
    judge = Judge.load(judge_dir)
    res = comps.meta.resolution
    test = load_set(dataset_dir, res, splits=("test",), brand="", categories=categories)
    val = load_set(dataset_dir, res, splits=("val",), brand="", categories=categories)
    s = cfg.sampling
    confine = s.confine if confine is None else confine

    # 1. generation on held-out products, every category requested
    idx, req = _requests(test, categories, cfg.per_category, cfg.seed)
    images = [test.images[i].numpy() for i in idx]
    masks = [test.masks[i].numpy() for i in idx]
    seeds = [cfg.seed + k for k in range(len(idx))]
    t_gen = time.perf_counter()
    gen = pipe.generate(images, masks, req, seeds, steps=s.steps, guidance=s.guidance, scheduler=s.scheduler,
                        confine=confine, batch_size=s.batch_size, progress=progress)
    gen_seconds = time.perf_counter() - t_gen
    gen_u8 = torch.from_numpy(np.stack(gen.images))
    mask_u8 = torch.from_numpy(np.stack(masks))

    # 2. fidelity, beside the judge on real images and on codec reconstructions (the ceiling)
    fidelity = accuracy_report(judge.predict(gen_u8, mask_u8), req, categories)
    real = judge.accuracy(test.images, test.masks, test.categories)
    recon = judge.accuracy(codec_reconstructions(comps.codec, test), test.masks, test.categories)

    # 3. judge Fréchet distance with the real-vs-real floor, equal sample sizes
    n = min(len(gen_u8), len(test), len(val))
    rng = np.random.default_rng(cfg.seed)
    f_gen = judge.features(gen_u8[:n], mask_u8[:n])
    t_sel = rng.choice(len(test), n, replace=False)
    v_sel = rng.choice(len(val), n, replace=False)
    f_test = judge.features(test.images[t_sel], test.masks[t_sel])
    f_val = judge.features(val.images[v_sel], val.masks[v_sel])
    fd_gen = frechet_distance(f_gen, f_test)
    fd_floor = frechet_distance(f_val, f_test)

    # 4. attention localisation on held-out real images with their own categories
    k = min(len(test), 256)
    a_img = [test.images[i].numpy() for i in range(k)]
    a_msk = [test.masks[i].numpy() for i in range(k)]
    learned = float(np.mean(probe_attention(pipe, a_img, a_msk, test.categories[:k], confine=False)))
    confined = float(np.mean(probe_attention(pipe, a_img, a_msk, test.categories[:k], confine=True)))

    # 5. product preservation and edge bleed
    preservation = product_preservation(gen.images, images, masks)
    bleed = edge_bleed(gen.raw, images, masks)

    metrics = {
        "category_fidelity": fidelity["accuracy"],
        "category_fidelity_per_class": fidelity["per_class"],
        "judge_accuracy_real_heldout": real["accuracy"],
        "judge_accuracy_codec_reconstruction": recon["accuracy"],
        "judge_fd_generated_vs_real": float(f"{fd_gen:.5g}"),
        "judge_fd_real_vs_real_floor": float(f"{fd_floor:.5g}"),
        "judge_fd_ratio": round(fd_gen / max(fd_floor, 1e-9), 3),
        "attention_background_mass_learned": round(learned, 4),
        "attention_background_mass_confined": round(confined, 4),
        "product_preservation": preservation,
        "edge_bleed": round(bleed, 4),
        "n_generated": len(req),
        "categories": len(categories),
        "sampling": {"steps": s.steps, "guidance": s.guidance, "scheduler": s.scheduler, "confine": confine},
        "seconds_per_image": round(gen_seconds / len(req), 4),
        "seconds_total": round(time.perf_counter() - t0, 1),
    }

    # grid: rows = categories, columns = held-out product j with seed j
    cols = min(cfg.grid_seeds, len(test))
    prod = [test.images[j].numpy() for j in range(cols)]
    pmask = [test.masks[j].numpy() for j in range(cols)]
    rows = []
    for cat in categories:
        g = pipe.generate(prod, pmask, [cat] * cols, list(range(cols)), steps=s.steps, guidance=s.guidance,
                          scheduler=s.scheduler, confine=confine, batch_size=s.batch_size)
        rows.append(g.images)
    save_grid(out_dir / "samples.png", [prod, *rows], row_labels=["input", *categories],
              col_labels=[f"seed {j}" for j in range(cols)], tile=96)
    _plot_fidelity(fidelity["per_class"], real["per_class"], out_dir / "fidelity.png")
    if metrics_path:
        atomic_write_json(metrics_path, metrics)
    return metrics


def format_summary(m: dict) -> str:
    return "\n".join(
        [
            f"category fidelity        {m['category_fidelity']:.3f}   (judge on real held-out {m['judge_accuracy_real_heldout']:.3f}, "
            f"on codec reconstructions {m['judge_accuracy_codec_reconstruction']:.3f})",
            f"judge Fréchet distance   {m['judge_fd_generated_vs_real']:.4g}   (real-vs-real floor "
            f"{m['judge_fd_real_vs_real_floor']:.4g}, ratio {m['judge_fd_ratio']:.2f})",
            f"attention on background  {m['attention_background_mass_learned']:.3f} learned, "
            f"{m['attention_background_mass_confined']:.3f} confined",
            f"product preservation     {m['product_preservation']:.4f}   edge bleed {m['edge_bleed']:.4f}",
            f"per category             {m['category_fidelity_per_class']}",
        ]
    )
