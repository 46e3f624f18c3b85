"""THE training loop: seeded resume gives the same weights, NaN stops with a clear error and a
kept checkpoint, bad checkpoints give clear errors; the diffusion task trains what it should."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bg_platform.config import LoopConfig
from bg_platform.training.loop import TrainingDiverged, TrainingError, latest_checkpoint, train


class ToyTask:
    """A linear regression: small, deterministic, with a data order and noise that matter."""

    def __init__(self, nan_at: int | None = None, crash_at: int | None = None):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 1)
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(64, 4, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
        self.nan_at = nan_at
        self.crash_at = crash_at

    def models(self):
        return {"m": self.model}

    def param_groups(self):
        return [{"params": list(self.model.parameters())}]

    def dataset(self):
        return torch.utils.data.TensorDataset(self.x, self.y)

    def loss(self, batch, step):
        if step == self.crash_at:
            raise KeyboardInterrupt("simulated kill")
        x, y = batch
        noise = torch.randn_like(y) * 0.01  # uses the global RNG: restored on resume
        loss = (self.model(x) - y - noise).pow(2).mean()
        if self.nan_at is not None and step == self.nan_at:
            loss = loss * float("nan")
        return loss, {"mse": float(loss.detach())}


CFG = LoopConfig(steps=12, batch_size=8, lr=0.05, warmup_steps=2, checkpoint_every=5, log_every=2, keep_checkpoints=3)


def test_resume_continues_to_identical_weights(tmp_path):
    full = ToyTask()
    train(full, CFG, tmp_path / "full", progress=False)
    # a run killed during step 7 (checkpoint at 5), then resumed in a fresh task
    with pytest.raises(KeyboardInterrupt):
        train(ToyTask(crash_at=7), CFG, tmp_path / "resume", progress=False)
    second = ToyTask()
    r = train(second, CFG, tmp_path / "resume", progress=False)
    assert r.resumed_from == 5
    for a, b in zip(full.model.parameters(), second.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_curve_csv_and_png_are_written(tmp_path):
    r = train(ToyTask(), CFG, tmp_path / "run", curve_csv=tmp_path / "plots/loss.csv", progress=False)
    text = (tmp_path / "plots/loss.csv").read_text().splitlines()
    assert text[0].startswith("step,loss,mse,lr") and len(text) == 1 + 6
    assert (tmp_path / "plots/loss.png").exists() and r.steps == 12


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_state(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 7.*last good state") as exc:
        train(ToyTask(nan_at=7), CFG, tmp_path / "run", progress=False)
    ck = latest_checkpoint(tmp_path / "run")
    assert ck is not None and ck.name == "step-0000007" and str(ck) in str(exc.value)
    resumed = ToyTask()
    r = train(resumed, CFG, tmp_path / "run", progress=False)
    assert r.resumed_from == 7 and all(torch.isfinite(p).all() for p in resumed.model.parameters())


def test_resume_from_a_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(TrainingError, match="does not exist"):
        train(ToyTask(), CFG, tmp_path / "run", resume=tmp_path / "nope", progress=False)


def test_resume_from_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(ToyTask(crash_at=6), CFG, tmp_path / "run", progress=False)
    ck = latest_checkpoint(tmp_path / "run")
    for f in ck.glob("*.safetensors"):
        f.write_bytes(b"garbage")
    with pytest.raises(TrainingError, match=r"is corrupt.*--no-resume"):
        train(ToyTask(), CFG, tmp_path / "run", progress=False)


def test_checkpoints_of_another_run_are_not_resumed(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(ToyTask(crash_at=6), CFG, tmp_path / "run", progress=False, run_key="a")
    ck = latest_checkpoint(tmp_path / "run", "a")
    import shutil

    shutil.copytree(ck, tmp_path / "kept" / ck.name)
    assert train(ToyTask(), CFG, tmp_path / "run", progress=False, run_key="b").resumed_from == 0
    ck = tmp_path / "kept" / ck.name
    with pytest.raises(TrainingError, match="belongs to another run"):
        train(ToyTask(), CFG, tmp_path / "run2", resume=ck, progress=False, run_key="b")


def test_diffusion_task_trains_unet_and_only_identifier_rows(tiny_components_factory, tiny_dataset, smoke_params, tmp_path):
    from bg_platform.training.data import load_set
    from bg_platform.training.diffusion import DiffusionTask, base_param_groups, identifier_ids

    c = tiny_components_factory()
    data = load_set(tiny_dataset, 64, splits=("train",), brand="")
    emb0 = c.text_encoder.get_input_embeddings().weight.detach().clone()
    unet0 = [p.detach().clone() for p in c.unet.parameters()]
    task = DiffusionTask(c, data, smoke_params.train_base.loss, base_param_groups(c, "tokens"))  # no augmentation
    r = train(task, dataclasses.replace(smoke_params.train_base.loop, steps=3), tmp_path / "run", progress=False)
    assert r.final_loss == r.final_loss  # finite
    emb1 = c.text_encoder.get_input_embeddings().weight.detach()
    ids = identifier_ids(c)
    assert len(ids) == len(c.meta.categories)
    changed = (emb1 - emb0).abs().sum(1) > 0
    others = torch.ones_like(changed)
    others[ids] = False
    assert changed[ids].any() and not changed[others].any()
    assert any(not torch.equal(a, b) for a, b in zip(unet0, c.unet.parameters(), strict=True))
