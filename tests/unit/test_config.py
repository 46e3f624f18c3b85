"""params files: every one in the repo loads; every problem is named in one message."""

from __future__ import annotations

from pathlib import Path

import pytest

from bg_platform import config
from bg_platform.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PARAM_FILES = sorted([ROOT / "params.yaml", *(ROOT / "profiles").glob("*.yaml")])


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_every_params_file_in_the_repo_loads(path):
    overlays = [] if path.name == "params.yaml" else [path]
    params = config.load(ROOT / "params.yaml", overlays)
    assert params.synth.image_size >= 32
    assert config.to_dict(params)["dataset"]["source"] in ("synth", "bg60k", "folder")


def test_default_profile_is_the_embedded_cpu_run():
    p = config.load(ROOT / "params.yaml")
    assert p.dataset.source == "synth" and p.model.kind == "tiny" and p.synth.image_size == 64


def test_unknown_and_mistyped_keys_are_all_reported_at_once(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("synth:\n  sed: 1\n  image_size: '64'\ntrain_base:\n  loop:\n    stpes: 3\nfoo: 1\n")
    with pytest.raises(ConfigError) as exc:
        config.load(bad)
    msg = str(exc.value)
    for key in ("synth.sed", "synth.image_size", "train_base.loop.stpes", "foo"):
        assert key in msg
    assert "4 problem(s)" in msg


def test_out_of_range_and_literal_values(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("synth:\n  image_size: 8\nmodel:\n  kind: huge\n")
    with pytest.raises(ConfigError, match=r"(?s)synth.image_size.*model.kind|model.kind.*synth.image_size"):
        config.load(bad)


def test_cross_field_checks(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("validate:\n  coverage_min: 0.9\n  coverage_max: 0.5\n")
    with pytest.raises(ConfigError, match="coverage_min"):
        config.load(bad)


def test_duplicate_keys_are_an_error(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("synth:\n  seed: 1\nsynth:\n  seed: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'synth'"):
        config.load(bad)


def test_overlay_merges_deeply(tmp_path):
    over = tmp_path / "o.yaml"
    over.write_text("train_base:\n  loop:\n    steps: 7\n")
    p = config.load(ROOT / "params.yaml", [over])
    assert p.train_base.loop.steps == 7
    assert p.train_base.loop.batch_size == config.load(ROOT / "params.yaml").train_base.loop.batch_size


def test_configs_are_frozen():
    p = config.load(ROOT / "params.yaml")
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        p.synth.seed = 3  # type: ignore[misc]


def test_explain_lists_every_leaf_with_help():
    lines = config.explain()
    assert any(line.startswith("train_base.loop.lr = ") and "#" in line for line in lines)
    assert any(line.startswith("synth.categories = ") for line in lines)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("synth: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        config.load(tmp_path)


def test_empty_bgp_params_means_the_default(monkeypatch):
    from bg_platform.cli import build_parser

    monkeypatch.setenv("BGP_PARAMS", "")
    assert build_parser().parse_args(["config"]).params == "params.yaml"
    monkeypatch.setenv("BGP_PARAMS", "other.yaml")
    assert build_parser().parse_args(["config"]).params == "other.yaml"
