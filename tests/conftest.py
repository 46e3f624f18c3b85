"""Shared fixtures: tiny, offline, fast."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_params():
    from bg_platform import config

    return config.load(ROOT / "params.yaml", [ROOT / "profiles" / "smoke.yaml"])


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, smoke_params):
    """A small BG-Synth dataset (all categories, all brands), generated once per session."""
    from bg_platform.data.synth import generate

    return generate(smoke_params.synth, tmp_path_factory.mktemp("data") / "dataset", progress=False)


@pytest.fixture(scope="session")
def tiny_components_factory(tiny_dataset, smoke_params):
    """Builds fresh random-init tiny components (seeded) on the tiny dataset."""
    from bg_platform.training.base import build_components
    from bg_platform.training.data import load_set

    data = load_set(tiny_dataset, smoke_params.model.resolution, splits=("train",), brand="")

    def make():
        return build_components(smoke_params, data)

    return make
