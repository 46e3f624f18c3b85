"""The only reader of params.yaml: one frozen dataclass per stage section.

Every problem in a params file (unknown key, wrong type, out-of-range value) is reported at once, in
one message, with the YAML key path, the value found and what is expected. Overlay files (profiles)
are deep-merged over the base file, so a profile only lists what it changes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from bg_platform.errors import ConfigError

_STRICT = ConfigDict(extra="forbid", strict=True)
BRAND_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
CATEGORY_PATTERN = r"^[a-z0-9][a-z0-9_ -]{0,59}$"


def F(default: Any, help: str, **constraints: Any) -> Any:  # noqa: A002 - `help` reads best here
    """A field with its help string (shown by `bgp config --explain`) and pydantic constraints."""
    if isinstance(default, list | dict | tuple) or dataclasses.is_dataclass(default):
        value = default
        return Field(default_factory=lambda: value, description=help, **constraints)
    return Field(default, description=help, **constraints)


@dataclass(frozen=True, config=_STRICT)
class DatasetConfig:
    source: Literal["synth", "bg60k", "folder"] = F("synth", "which importer feeds the pipeline")
    dir: str = F("data/dataset", "output folder: manifest.parquet + images/ + masks/")


@dataclass(frozen=True, config=_STRICT)
class SynthConfig:
    seed: int = F(0, "master seed; the same seed gives byte-identical data")
    image_size: int = F(64, "square image side in pixels", ge=32, le=1024)
    categories: tuple[str, ...] = F(
        ("marble", "wood", "studio", "fabric", "outdoor", "tiles", "bokeh", "paper"),
        "background categories to generate (a subset of bg_platform.data.synth.CATEGORIES)",
        min_length=1,
    )
    samples_per_category: int = F(500, "category-default samples per category", ge=1)
    brands: tuple[str, ...] = F(
        ("aurora", "kinetic", "verdant"), "brands to generate (subset of bg_platform.data.synth.BRANDS)"
    )
    samples_per_brand: int = F(80, "brand-style samples per brand (references + held-out)", ge=0)
    products: int = F(400, "distinct parametric product instances", ge=10)
    val_fraction: float = F(0.1, "share of products held out for validation", ge=0.0, lt=0.5)
    test_fraction: float = F(0.15, "share of products held out for test", gt=0.0, lt=0.5)
    workers: int = F(0, "processes for generation (0 = all cores)", ge=0)


@dataclass(frozen=True, config=_STRICT)
class Bg60kConfig:
    path: str = F("data/raw/bg60k", "folder with bg60k_imgs_*/, bg60k_masks_*/ and bg60k_info.txt")
    info_file: str = F("bg60k_info.txt", "tab-separated filename<TAB>category listing")
    limit: int = F(0, "import at most this many samples (0 = all)", ge=0)
    seed: int = F(0, "seed of the train/val/test split", ge=0)
    val_fraction: float = F(0.05, "share held out for validation", ge=0.0, lt=0.5)
    test_fraction: float = F(0.05, "share held out for test", ge=0.0, lt=0.5)
    alpha_threshold: int = F(128, "mask alpha >= this is product", ge=1, le=255)


@dataclass(frozen=True, config=_STRICT)
class FolderConfig:
    path: str = F("data/raw/folder", "folder with images/, masks/ and categories.csv")
    images_dir: str = F("images", "image subfolder")
    masks_dir: str = F("masks", "mask subfolder (same stem as the image; white or alpha = product)")
    categories_csv: str = F("categories.csv", "CSV with columns filename,category[,brand][,caption][,split]")
    seed: int = F(0, "seed of the split for rows without one", ge=0)
    val_fraction: float = F(0.1, "share held out for validation (rows without a split)", ge=0.0, lt=0.5)
    test_fraction: float = F(0.1, "share held out for test (rows without a split)", ge=0.0, lt=0.5)


@dataclass(frozen=True, config=_STRICT)
class ImageIOConfig:
    max_pixels: int = F(40_000_000, "refuse images with more pixels (decompression-bomb guard)", ge=1)
    max_bytes: int = F(50_000_000, "refuse image files larger than this", ge=1)


@dataclass(frozen=True, config=_STRICT)
class ValidateConfig:
    min_side: int = F(32, "smallest allowed image side", ge=1)
    max_side: int = F(4096, "largest allowed image side", ge=1)
    coverage_min: float = F(0.02, "smallest product share of the image", ge=0.0, le=1.0)
    coverage_max: float = F(0.85, "largest product share of the image", ge=0.0, le=1.0)
    mask_binary_min: float = F(0.98, "share of mask pixels that must be ~0 or ~255", ge=0.0, le=1.0)
    min_per_category: int = F(20, "fewest samples a category may have", ge=1)
    min_per_brand: int = F(3, "fewest samples a brand may have", ge=1)
    known_categories: tuple[str, ...] = F(
        (), "allowed categories; empty = the dataset's own source list (synth) or any name matching the pattern"
    )
    report_dir: str = F("reports/validation", "where report.md and gx_result.json go")


@dataclass(frozen=True, config=_STRICT)
class CodecConfig:
    type: Literal["pca"] = F("pca", "tiny codec: patch PCA (fitted in seconds, nothing pretrained)")
    patch_size: int = F(4, "patch side = latent downsampling factor", ge=1, le=16)
    latent_channels: int = F(8, "principal components kept per patch", ge=1)
    whiten: bool = F(True, "scale each component to unit variance")
    fit_images: int = F(2000, "training images used to fit the codec", ge=16)


@dataclass(frozen=True, config=_STRICT)
class UNetConfig:
    block_out_channels: tuple[int, ...] = F((32, 64, 64), "channels per UNet level", min_length=1)
    cross_attention: tuple[bool, ...] = F((True, True, False), "which levels have (cross-)attention blocks")
    layers_per_block: int = F(1, "resnets per level", ge=1)
    attention_heads: tuple[int, ...] = F(
        (1, 2, 2), "attention heads per level (passed as diffusers' misnamed `attention_head_dim`)", min_length=1
    )
    only_cross_attention: bool = F(True, "attention blocks attend to the prompt only (no spatial self-attention)")
    norm_num_groups: int = F(16, "GroupNorm groups (must divide every channel count)", ge=1)


@dataclass(frozen=True, config=_STRICT)
class TextConfig:
    hidden_size: int = F(64, "text encoder width = UNet cross_attention_dim", ge=8)
    layers: int = F(2, "transformer layers", ge=1)
    heads: int = F(4, "attention heads", ge=1)
    intermediate_size: int = F(128, "MLP width", ge=8)
    max_length: int = F(32, "prompt length in tokens (77 for Stable Diffusion)", ge=8, le=77)


@dataclass(frozen=True, config=_STRICT)
class PromptConfig:
    template: str = F("{category} background{brand}", "fixed prompt template; {category} and {brand} are filled in")
    mode: Literal["identifier", "words"] = F(
        "identifier", "identifier: one added token per category; words: the category's name (ablation)"
    )


@dataclass(frozen=True, config=_STRICT)
class ModelConfig:
    kind: Literal["tiny", "pretrained"] = F("tiny", "tiny: random-init components built here; pretrained: load a local dir")
    pretrained_path: str = F("", "local diffusers-format Stable Diffusion inpainting directory (kind: pretrained)")
    resolution: int = F(64, "training / generation resolution in pixels", ge=16)
    prediction_type: Literal["epsilon", "v_prediction"] = F("v_prediction", "what the UNet predicts")
    beta_schedule: Literal["scaled_linear", "linear", "squaredcos_cap_v2"] = F("scaled_linear", "noise schedule")
    num_train_timesteps: int = F(1000, "diffusion steps in training", ge=10)
    seed: int = F(0, "seed of the random initialisation")
    codec: CodecConfig = F(CodecConfig(), "tiny latent codec")
    unet: UNetConfig = F(UNetConfig(), "tiny UNet")
    text: TextConfig = F(TextConfig(), "tiny CLIP text encoder")
    prompt: PromptConfig = F(PromptConfig(), "prompt template and identifier mode")


@dataclass(frozen=True, config=_STRICT)
class LoopConfig:
    seed: int = F(0, "seed of data order, noise and dropout")
    steps: int = F(2000, "optimizer steps", ge=1)
    batch_size: int = F(32, "samples per step (per process)", ge=1)
    lr: float = F(1e-3, "peak learning rate", gt=0)
    warmup_steps: int = F(100, "linear warm-up steps", ge=0)
    schedule: Literal["cosine", "constant"] = F("cosine", "learning-rate schedule after warm-up")
    weight_decay: float = F(0.0, "AdamW weight decay", ge=0)
    grad_clip: float = F(1.0, "max gradient norm (0 = off)", ge=0)
    ema_decay: float = F(0.0, "EMA of trainable weights (0 = off)", ge=0, lt=1)
    mixed_precision: Literal["no", "fp16", "bf16"] = F("no", "accelerate mixed precision (GPU)")
    checkpoint_every: int = F(500, "steps between resumable checkpoints", ge=1)
    keep_checkpoints: int = F(2, "newest checkpoints kept", ge=1)
    log_every: int = F(25, "steps between loss-curve rows", ge=1)
    sample_every: int = F(0, "steps between sample grids (0 = only at the end)", ge=0)


@dataclass(frozen=True, config=_STRICT)
class DiffusionLossConfig:
    attention_loss: bool = F(True, "train with the mask-guided attention loss")
    attention_loss_weight: float = F(0.01, "lambda of the attention loss", ge=0)
    cfg_dropout: float = F(0.1, "share of steps with an empty prompt (classifier-free guidance)", ge=0, lt=1)
    min_snr_gamma: float = F(5.0, "min-SNR loss weighting gamma (0 = off)", ge=0)
    product_loss_weight: float = F(0.1, "loss weight of latent cells that are all product", ge=0, le=1)
    train_text: Literal["tokens", "all", "none"] = F(
        "tokens", "text encoder training: only the added identifier rows, everything, or nothing"
    )
    flip: bool = F(True, "random horizontal flips")


@dataclass(frozen=True, config=_STRICT)
class TrainBaseConfig:
    out_dir: str = F("models/base", "the trained Category-Wise base (diffusers layout)")
    run_dir: str = F("runs/base", "checkpoints and samples of the run")
    plots_dir: str = F("plots/base", "loss curve CSV + PNG, and a sample grid after training")
    sample_steps: int = F(20, "denoising steps of the post-training sample grid", ge=1)
    loop: LoopConfig = F(LoopConfig(ema_decay=0.999), "the training loop")
    loss: DiffusionLossConfig = F(DiffusionLossConfig(), "losses")


@dataclass(frozen=True, config=_STRICT)
class JudgeConfig:
    out_dir: str = F("models/judges", "trained judge classifiers")
    run_dir: str = F("runs/judges", "loss curves of judge training")
    width: int = F(24, "channels of the first judge level", ge=4)
    loop: LoopConfig = F(
        LoopConfig(steps=400, batch_size=32, lr=2e-3, warmup_steps=25, weight_decay=1e-4, checkpoint_every=10_000),
        "judge training loop",
    )


@dataclass(frozen=True, config=_STRICT)
class SamplingConfig:
    steps: int = F(25, "denoising steps", ge=1, le=1000)
    guidance: float = F(3.0, "classifier-free guidance scale (1 = off)", ge=1.0, le=30.0)
    scheduler: Literal["ddim", "dpm", "euler", "ddpm"] = F("ddim", "sampler")
    confine: bool = F(True, "inference-time confinement of the category token to the background")
    batch_size: int = F(64, "images per UNet batch", ge=1)


@dataclass(frozen=True, config=_STRICT)
class EvaluateBaseConfig:
    per_category: int = F(40, "held-out products generated per category", ge=1)
    grid_seeds: int = F(4, "columns of the sample grid", ge=1)
    seed: int = F(1234, "seed of product choice and noise")
    sampling: SamplingConfig = F(SamplingConfig(), "how images are generated")
    out_dir: str = F("reports/base", "grid and plots")
    metrics: str = F("metrics/base.json", "metrics file (dvc metrics)")


@dataclass(frozen=True, config=_STRICT)
class AdapterConfig:
    rank: int = F(8, "LoRA rank (alpha = rank)", ge=1, le=128)
    targets: tuple[str, ...] = F(
        ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"),
        "UNet modules that get LoRA: attention projections + resnet convs (serving slots cover the same set)",
    )
    brand_token: bool = F(False, "also learn a brand identifier token (prompt: '... by <brand:x>')")
    references: int = F(12, "reference images used per brand (the brand's train split, in id order)", ge=1)
    min_references: int = F(3, "fewest references an adapter may be trained from", ge=1)
    max_references: int = F(20, "most references an adapter may be trained from", ge=1)
    augment: Literal["replace", "flip", "none"] = F("replace", "product re-placement + scale + flip, flip only, or none")
    out_dir: str = F("models/adapters", "one folder per brand")
    run_dir: str = F("runs/adapters", "checkpoints per brand")
    plots_dir: str = F("plots/adapters", "loss curves and sample grids per brand")
    loop: LoopConfig = F(
        LoopConfig(steps=900, batch_size=8, lr=1e-3, warmup_steps=30, checkpoint_every=300, log_every=20),
        "the training loop (the same loop as the base)",
    )
    loss: DiffusionLossConfig = F(DiffusionLossConfig(cfg_dropout=0.1), "losses")


@dataclass(frozen=True, config=_STRICT)
class GateConfig:
    min_brand_accuracy: float = F(0.9, "brand judge accuracy with the adapter must reach this", ge=0, le=1)
    max_category_drop: float = F(
        0.3, "category fidelity of adapter outputs may fall at most this far below the category judge's "
        "accuracy on the brand's real references", ge=0, le=1)
    min_brand_gain: float = F(0.3, "brand accuracy gain over the base that an adapter must bring", ge=0, le=1)


@dataclass(frozen=True, config=_STRICT)
class EvaluateAdapterConfig:
    per_category: int = F(12, "held-out products generated per category of the brand", ge=1)
    other_categories: int = F(2, "categories outside the brand's own also evaluated", ge=0)
    seed: int = F(4321, "seed of product choice and noise")
    sampling: SamplingConfig = F(SamplingConfig(), "how images are generated")
    out_dir: str = F("reports/adapters", "grids and plots per brand")
    metrics_dir: str = F("metrics/adapters", "metrics JSON per brand (dvc metrics)")
    gate: GateConfig = F(GateConfig(), "pass/fail thresholds for deployment")


@dataclass(frozen=True, config=_STRICT)
class RegistryConfig:
    root: str = F("registry", "adapter registry root: a folder or any fsspec URL (s3://, gs://, ...)")
    publish: bool = F(True, "publish adapters that pass the gate (DVC adapter stages)")
    promote: bool = F(True, "promote published adapters to production when they pass the gate")


@dataclass(frozen=True, config=_STRICT)
class Params:
    dataset: DatasetConfig = F(DatasetConfig(), "which dataset feeds the pipeline")
    synth: SynthConfig = F(SynthConfig(), "BG-Synth, the embedded procedural dataset")
    bg60k: Bg60kConfig = F(Bg60kConfig(), "importer for the public BG60k release layout")
    folder: FolderConfig = F(FolderConfig(), "importer for a plain images + masks + CSV folder")
    imageio: ImageIOConfig = F(ImageIOConfig(), "safe image reading limits")
    validate: ValidateConfig = F(ValidateConfig(), "Great Expectations data validation")
    model: ModelConfig = F(ModelConfig(), "Category-Wise Generator architecture")
    train_base: TrainBaseConfig = F(TrainBaseConfig(), "training of the Category-Wise base")
    judges: JudgeConfig = F(JudgeConfig(), "independent judge classifiers (evaluation only)")
    evaluate_base: EvaluateBaseConfig = F(EvaluateBaseConfig(), "evaluation of the base")
    adapter: AdapterConfig = F(AdapterConfig(), "brand adapters (Personality-Wise Generator)")
    evaluate_adapter: EvaluateAdapterConfig = F(EvaluateAdapterConfig(), "evaluation and gate of brand adapters")
    registry: RegistryConfig = F(RegistryConfig(), "where adapters are published")
    brands: tuple[str, ...] = F(("aurora", "kinetic", "verdant"), "brands the DVC adapter stages train (foreach)")


_ADAPTER = TypeAdapter(Params)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """A duplicated key would silently override the first one: make it an error."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (delete or merge one of them)", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path} (run from the repository root or pass --params)") from None
    except IsADirectoryError:
        raise ConfigError(f"params file {str(path)!r} is a directory: pass the YAML file (--params / BGP_PARAMS)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _describe(errors: Iterable[dict[str, Any]], source: str) -> str:
    lines = []
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"])
        value = err.get("input")
        if err["type"] == "unexpected_keyword_argument":
            lines.append(f"  {loc}: unknown key (value {value!r}); remove it or fix its spelling")
        else:
            lines.append(f"  {loc}: {err['msg']} (got {value!r})")
    return f"{source}: {len(lines)} problem(s) in params:\n" + "\n".join(lines)


def parse(data: Mapping[str, Any], source: str = "params") -> Params:
    """Validate a params mapping; every problem is reported in one ConfigError."""
    try:
        return _ADAPTER.validate_json(json.dumps(data))
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors(), source)) from None


def load(path: str | Path = "params.yaml", overlays: Iterable[str | Path] = ()) -> Params:
    """Read params.yaml (and optional profile overlays merged over it) into frozen dataclasses."""
    path = Path(path)
    data = _read_yaml(path)
    names = [str(path)]
    for overlay in overlays:
        data = deep_merge(data, _read_yaml(Path(overlay)))
        names.append(str(overlay))
    params = parse(data, " + ".join(names))
    _cross_check(params, " + ".join(names))
    return params


def _cross_check(p: Params, source: str) -> None:
    problems = []
    if p.validate.coverage_min >= p.validate.coverage_max:
        problems.append(
            f"  validate.coverage_min ({p.validate.coverage_min}) must be below validate.coverage_max "
            f"({p.validate.coverage_max})"
        )
    if p.validate.min_side > p.validate.max_side:
        problems.append(f"  validate.min_side ({p.validate.min_side}) exceeds validate.max_side ({p.validate.max_side})")
    if not p.adapter.min_references <= p.adapter.references <= p.adapter.max_references:
        problems.append(
            f"  adapter.references ({p.adapter.references}) must lie within adapter.min_references "
            f"({p.adapter.min_references}) and adapter.max_references ({p.adapter.max_references})"
        )
    if len(p.model.unet.cross_attention) != len(p.model.unet.block_out_channels):
        problems.append("  model.unet.cross_attention needs one entry per model.unet.block_out_channels level")
    if len(p.model.unet.attention_heads) != len(p.model.unet.block_out_channels):
        problems.append("  model.unet.attention_heads needs one entry per model.unet.block_out_channels level")
    bad_groups = [c for c in p.model.unet.block_out_channels if c % p.model.unet.norm_num_groups]
    if bad_groups:
        problems.append(f"  model.unet.norm_num_groups ({p.model.unet.norm_num_groups}) must divide every channel count; not {bad_groups}")
    bad_brands = [b for b in p.brands if not re.match(BRAND_PATTERN, b)]
    if bad_brands:
        problems.append(f"  brands: {bad_brands} do not match {BRAND_PATTERN} (lowercase letters, digits, _ and -)")
    if p.synth.val_fraction + p.synth.test_fraction >= 0.8:
        problems.append("  synth.val_fraction + synth.test_fraction must leave at least 20% of products for training")
    if problems:
        raise ConfigError(f"{source}: {len(problems)} problem(s) in params:\n" + "\n".join(problems))


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-dict form of a config (for metadata files and reports)."""
    return json.loads(TypeAdapter(type(obj)).dump_json(obj))


def dump_yaml(params: Params | None = None) -> str:
    """params as YAML with each key's help string as a comment (`bgp config --dump`)."""

    def walk(obj, cls, indent: str) -> list[str]:
        out = []
        for name, info in cls.__pydantic_fields__.items():
            value = getattr(obj, name)
            if dataclasses.is_dataclass(value):
                out.append(f"{indent}{name}:  # {info.description or ''}")
                out.extend(walk(value, type(value), indent + "  "))
            else:
                text = yaml.safe_dump(list(value) if isinstance(value, tuple) else value, default_flow_style=True, width=1000).strip()
                text = text.removesuffix("...").strip()
                out.append(f"{indent}{name}: {text}  # {info.description or ''}")
        return out

    params = params or parse({})
    return "\n".join(walk(params, Params, "")) + "\n"


def explain(cls: type = Params, prefix: str = "") -> list[str]:
    """One line per key: dotted name, default and help string."""
    lines = []
    for name, info in cls.__pydantic_fields__.items():
        default = info.get_default(call_default_factory=True)
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(default):
            lines.append(f"{key}:  # {info.description or ''}")
            lines.extend(explain(type(default), prefix=key + "."))
        else:
            lines.append(f"{key} = {default!r}  # {info.description or ''}")
    return lines
