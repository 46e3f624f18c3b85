"""`bgp generate`: product image + mask (or RGBA) + category [+ brand adapter] -> PNGs."""

from __future__ import annotations

HELP = "generate backgrounds for a product image (mask file or the image's alpha) and a category"


def add_arguments(p) -> None:
    p.add_argument("image", help="product image (PNG/JPEG/...; an RGBA image's alpha is used as the mask)")
    p.add_argument("--mask", help="product mask (white/opaque = product); default: the image's alpha")
    p.add_argument("--category", required=True)
    p.add_argument("--model", help="base model folder (default: train_base.out_dir)")
    p.add_argument("--adapter", help="brand adapter folder (LoRA safetensors + adapter.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-n", "--num-images", type=int, default=4)
    p.add_argument("--steps", type=int, help="denoising steps (default: evaluate_base.sampling.steps)")
    p.add_argument("--guidance", type=float, help="guidance scale (default: evaluate_base.sampling.guidance)")
    p.add_argument("--scheduler", choices=["ddim", "dpm", "euler", "ddpm"], help="sampler")
    p.add_argument("--no-confine", action="store_true", help="disable inference-time attention confinement")
    p.add_argument("--out", default="outputs", help="output folder")


def run(args, params) -> int:
    from pathlib import Path

    from bg_platform.data.imageio import read_image, read_mask, write_png
    from bg_platform.errors import ImageError
    from bg_platform.grids import save_grid
    from bg_platform.model.components import load
    from bg_platform.model.pipeline import BgPipeline, RequestError, check_request

    if args.num_images < 1:
        raise RequestError(f"--num-images: {args.num_images} is not a positive count")
    img = read_image(args.image, max_pixels=params.imageio.max_pixels, max_bytes=params.imageio.max_bytes)
    if args.mask:
        mask = read_mask(args.mask, max_pixels=params.imageio.max_pixels, max_bytes=params.imageio.max_bytes)
    elif img.alpha is not None:
        mask = img.alpha
    else:
        raise ImageError(f"{args.image} has no transparency; pass --mask PATH (white = product)")
    comps = load(args.model or params.train_base.out_dir)
    check_request(img.rgb, mask, args.category, comps.meta.categories)
    pipe = BgPipeline(comps)
    slot = None
    if args.adapter:
        from bg_platform.model.lora import attach_adapter_dir

        attach_adapter_dir(pipe, args.adapter)
        slot = "slot0"
    s = params.evaluate_base.sampling
    seeds = list(range(args.seed, args.seed + args.num_images))
    out = pipe.generate(
        [img.rgb] * len(seeds), [mask] * len(seeds), [args.category] * len(seeds), seeds,
        steps=args.steps or s.steps, guidance=args.guidance or s.guidance, scheduler=args.scheduler or s.scheduler,
        confine=not args.no_confine, slots=[slot] * len(seeds),
    )
    folder = Path(args.out)
    stem = Path(args.image).stem
    for seed, im in zip(seeds, out.images, strict=True):
        path = folder / f"{stem}-{args.category}-seed{seed}.png"
        write_png(path, im)
        print(path)
    print(save_grid(folder / f"{stem}-{args.category}-grid.png", [out.images], col_labels=[f"seed {s}" for s in seeds]))
    return 0
