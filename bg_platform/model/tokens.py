"""Identifier tokens and the prompt template.

Every category gets ONE added token (e.g. `<cat:marble>`), every brand optionally one
(`<brand:aurora>`); the prompt is a fixed template filled with them, never written per product.
For the ablation "category in plain words", the template is filled with the category's name
instead, and the "identifier" is the span of tokens that spell it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

CATEGORY_FORMAT = "<cat:{}>"
BRAND_FORMAT = "<brand:{}>"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def category_token(category: str) -> str:
    return CATEGORY_FORMAT.format(slug(category))


def brand_token(brand: str) -> str:
    return BRAND_FORMAT.format(slug(brand))


def build_tiny_tokenizer(extra_tokens: Sequence[str], max_length: int):
    """A byte-level CLIP tokenizer built offline (no Hub): every byte is a token, identifiers are
    added tokens of their own. `model_max_length` must be set or the pipeline pads to ~1e30."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        for t in (ch, ch + "</w>"):
            vocab.setdefault(t, len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)
    tok.add_tokens(list(extra_tokens))
    return tok


@dataclass(frozen=True)
class PromptSpec:
    """How a (category, brand) request becomes a prompt."""

    template: str = "{category} background{brand}"
    mode: str = "identifier"  # identifier | words

    def category_text(self, category: str) -> str:
        return category_token(category) if self.mode == "identifier" else category.replace("_", " ")

    def prompt(self, category: str, brand_text: str | None = None) -> str:
        """`brand_text`: the brand's identifier token (or a serving slot's), None for no brand."""
        brand_part = f" by {brand_text}" if brand_text else ""
        return self.template.format(category=self.category_text(category), brand=brand_part)


def encode_prompts(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    out = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    return out.input_ids


def category_token_mask(tokenizer, spec: PromptSpec, input_ids: torch.Tensor, categories: Sequence[str | None]) -> torch.Tensor:
    """[B, T] float mask of the tokens that name each row's category (zeros for unconditional rows).

    Identifier mode: the one added token. Words mode: the tokens that spell the category name,
    located as the sub-sequence of its ids inside the prompt."""
    b, t = input_ids.shape
    mask = torch.zeros(b, t)
    for i, cat in enumerate(categories):
        if not cat:
            continue
        if spec.mode == "identifier":
            tid = tokenizer.convert_tokens_to_ids(category_token(cat))
            mask[i] = (input_ids[i] == tid).float()
        else:
            ids = tokenizer(spec.category_text(cat), add_special_tokens=False).input_ids
            row = input_ids[i].tolist()
            for start in range(t - len(ids) + 1):
                if row[start : start + len(ids)] == ids:
                    mask[i, start : start + len(ids)] = 1.0
                    break
        if mask[i].sum() == 0:
            raise ValueError(f"category {cat!r} not found in the tokenized prompt; is the prompt truncated?")
    return mask
