"""Model components: tiny build, save/load round trip (ours and a real SD-inpainting layout),
the mask-guided attention processor, and generation edge checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bg_platform.model import attention
from bg_platform.model.codec import PatchPCACodec
from bg_platform.model.components import ModelLoadError, add_brand_token, fingerprint, load, save
from bg_platform.model.pipeline import BgPipeline, RequestError
from bg_platform.model.tokens import category_token


def test_codec_is_the_optimal_linear_patch_code():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 32, 32, generator=g) * 2 - 1
    full = PatchPCACodec(patch_size=4, latent_channels=48).fit(x)
    assert torch.allclose(full.decode(full.encode(x)), x, atol=1e-4), "all components = lossless"
    small = PatchPCACodec(patch_size=4, latent_channels=8).fit(x)
    z = small.encode(x)
    assert z.shape == (16, 8, 8, 8)
    assert torch.allclose(z.std((0, 2, 3)), torch.ones(8), atol=0.05), "whitened latents"
    err8 = (small.decode(z) - x).pow(2).mean()
    err4 = (PatchPCACodec(patch_size=4, latent_channels=4).fit(x).decode(PatchPCACodec(patch_size=4, latent_channels=4).fit(x).encode(x)) - x).pow(2).mean()
    assert err8 < err4


def test_identifier_tokens_are_single_tokens(tiny_components_factory):
    c = tiny_components_factory()
    for cat in c.meta.categories:
        ids = c.tokenizer(c.meta.prompt.prompt(cat)).input_ids
        assert c.tokenizer.convert_tokens_to_ids(category_token(cat)) in ids


def test_save_load_round_trip_keeps_outputs(tiny_components_factory, tmp_path, tiny_dataset):
    c = tiny_components_factory()
    fp = save(c, tmp_path / "m")
    assert fp == fingerprint(tmp_path / "m") and json.loads((tmp_path / "m/bg_platform.json").read_text())["fingerprint"] == fp
    c2 = load(tmp_path / "m")
    assert c2.meta.categories == c.meta.categories
    img, mask = _sample(tiny_dataset)
    a = BgPipeline(c).generate([img], [mask], [c.meta.categories[0]], [3], steps=2).images[0]
    b = BgPipeline(c2).generate([img], [mask], [c.meta.categories[0]], [3], steps=2).images[0]
    assert (a == b).all()


def _sample(dataset):
    from bg_platform.data import manifest
    from bg_platform.data.imageio import read_image, read_mask

    rec = manifest.read(dataset).iloc[0]
    return read_image(dataset / rec.image).rgb, read_mask(dataset / rec["mask"])


def test_fingerprint_depends_on_weights_not_on_tokenizer_use(tiny_components_factory, tmp_path):
    c = tiny_components_factory()
    before = save(c, tmp_path / "a")
    c.tokenizer(["marble background"], padding="max_length", truncation=True, max_length=c.tokenizer.model_max_length)
    assert save(c, tmp_path / "b") == before
    with torch.no_grad():
        next(c.unet.parameters()).add_(1.0)
    assert save(c, tmp_path / "c") != before


def test_real_sd_inpainting_layout_loads_through_the_same_loader(tmp_path, tiny_dataset):
    """Save tiny random SD-inpainting components in diffusers format (9-channel UNet,
    AutoencoderKL, CLIP) and load them back: identifier tokens are added, generation works."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from bg_platform.model.tokens import build_tiny_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=32, in_channels=9, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                                cross_attention_dim=32, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    tok = build_tiny_tokenizer([], 77)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet,
                                          scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1), safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(tmp_path / "sd")
    n_vocab = len(tok)
    c = load(tmp_path / "sd", categories=["marble", "wood"])
    assert c.meta.kind == "pretrained" and c.meta.categories == ("marble", "wood")
    assert len(c.tokenizer) == n_vocab + 2
    assert c.text_encoder.get_input_embeddings().weight.shape[0] == n_vocab + 2
    img, mask = _sample(tiny_dataset)
    out = BgPipeline(c).generate([img], [mask], ["wood"], [0], steps=2).images[0]
    keep = mask >= 128
    assert out.shape == img.shape and (out[keep] == img[keep]).all()
    save(c, tmp_path / "adopted")
    assert load(tmp_path / "adopted").meta.categories == ("marble", "wood")


def test_loader_errors_name_the_problem(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load(tmp_path / "missing")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "model_index.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load(tmp_path / "x")
    (tmp_path / "x" / "model_index.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="component 'unet' is missing"):
        load(tmp_path / "x")


def test_processor_matches_stock_attention_when_idle(tiny_components_factory):
    from diffusers.models.attention_processor import AttnProcessor2_0

    c = tiny_components_factory()
    unet = c.unet.eval()
    torch.manual_seed(0)
    x = torch.randn(2, unet.config.in_channels, 16, 16)
    text = torch.randn(2, c.tokenizer.model_max_length, unet.config.cross_attention_dim)
    with torch.no_grad():
        unet.set_attn_processor(AttnProcessor2_0())
        ref = unet(x, 10, text).sample
        store = attention.AttnStore()
        n = attention.install(unet, store)
        out = unet(x, 10, text).sample
    assert n >= 2
    assert torch.allclose(ref, out, atol=1e-5)


def _unet_with_store(c):
    store = attention.AttnStore()
    attention.install(c.unet, store)
    return c.unet, store


def test_confinement_removes_the_token_from_product_queries(tiny_components_factory):
    c = tiny_components_factory()
    unet, store = _unet_with_store(c)
    b, t = 2, c.tokenizer.model_max_length
    tokens = torch.zeros(b, t)
    tokens[:, 1] = 1
    product = torch.zeros(b, 1, 64, 64)
    product[:, :, 16:48, 16:48] = 1
    x = torch.randn(b, unet.config.in_channels, 16, 16)
    text = torch.randn(b, t, unet.config.cross_attention_dim)
    store.token_mask, store.product_mask, store.record = tokens, product, True
    with torch.no_grad():
        unet(x, 10, text)
        free = attention.background_mass(store, 1 - product)
        store.reset()
        store.confine = True
        unet(x, 10, text)
        confined = attention.background_mass(store, 1 - product)
    assert (confined > free).all() and (confined > 0.98).all()


def test_attention_loss_reaches_the_query_projection(tiny_components_factory):
    c = tiny_components_factory()
    unet, store = _unet_with_store(c)
    b, t = 2, c.tokenizer.model_max_length
    store.token_mask = torch.zeros(b, t)
    store.token_mask[:, 2] = 1
    store.record = True
    product = torch.zeros(b, 1, 64, 64)
    product[:, :, 20:44, 20:44] = 1
    unet(torch.randn(b, unet.config.in_channels, 16, 16), 10, torch.randn(b, t, unet.config.cross_attention_dim))
    loss = attention.attention_loss(store, 1 - product)
    loss.backward()
    grads = [m.to_q.weight.grad for n, m in unet.named_modules() if n.endswith("attn2") and m.to_q.weight.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


@pytest.fixture(scope="module")
def pipe(tiny_components_factory):
    return BgPipeline(tiny_components_factory())


def test_generation_preserves_product_pixels_exactly_at_any_size(pipe, tiny_dataset):
    from PIL import Image

    img, mask = _sample(tiny_dataset)
    big = np.asarray(Image.fromarray(img).resize((100, 80)))
    big_mask = np.asarray(Image.fromarray(mask).resize((100, 80), Image.NEAREST))
    out = pipe.generate([img, big], [mask, big_mask], [pipe.categories[0]] * 2, [0, 1], steps=2)
    for o, i, m in zip(out.images, [img, big], [mask, big_mask], strict=True):
        assert o.shape == i.shape
        keep = m >= 128
        assert (o[keep] == i[keep]).all()
        assert (o[~keep] != i[~keep]).any()


def test_an_image_does_not_depend_on_its_batch(pipe, tiny_dataset):
    img, mask = _sample(tiny_dataset)
    cat = pipe.categories[1]
    alone = pipe.generate([img], [mask], [cat], [7], steps=2).images[0]
    batched = pipe.generate([img, img, img], [mask] * 3, [pipe.categories[0], cat, cat], [1, 7, 9], steps=2).images[1]
    assert np.abs(alone.astype(int) - batched.astype(int)).max() <= 1


@pytest.mark.parametrize(
    "case, match",
    [
        ("unknown_category", "category: unknown value 'granite'; allowed values"),
        ("mask_size", "mask: size 32x32 differs"),
        ("empty_mask", "mask: empty"),
        ("full_mask", "leaving no background"),
    ],
)
def test_bad_requests_get_clear_errors(pipe, tiny_dataset, case, match):
    img, mask = _sample(tiny_dataset)
    cat = pipe.categories[0]
    if case == "unknown_category":
        cat = "granite"
    elif case == "mask_size":
        mask = mask[:32, :32]
    elif case == "empty_mask":
        mask = np.zeros_like(mask)
    else:
        mask = np.full_like(mask, 255)
    with pytest.raises(RequestError, match=match):
        pipe.generate([img], [mask], [cat], [0], steps=1)


def test_brand_token_is_added_once(tiny_components_factory):
    c = tiny_components_factory()
    n = len(c.tokenizer)
    t1 = add_brand_token(c, "aurora")
    t2 = add_brand_token(c, "aurora")
    assert t1 == t2 == "<brand:aurora>" and len(c.tokenizer) == n + 1 and c.meta.brands == ("aurora",)
