"""THE training loop. Every model in the platform is trained here: the codec-free Category-Wise
base, brand LoRA adapters and the evaluation judges differ only by their `Task` and config.

- accelerate-based: `accelerate launch -m bg_platform ...` spreads it over several GPUs
  (DDP, mixed precision) with no code change; on one CPU it is a plain loop;
- seeded, resumable: checkpoints (accelerate state: weights, optimizer, LR schedule, RNG states)
  are written atomically every `checkpoint_every` steps, the newest `keep_checkpoints` kept;
  resuming continues the identical data order and noise;
- a non-finite loss stops the run before the bad step is applied, saves that last good state
  as a checkpoint, and raises `TrainingDiverged` naming it;
- a loss-curve CSV (DVC plots) and PNG, a tqdm progress bar.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from bg_platform.config import LoopConfig
from bg_platform.errors import BgError

log = logging.getLogger(__name__)
CKPT_PREFIX = "step-"
STATE_FILE = "loop_state.json"


class TrainingError(BgError):
    pass


class TrainingDiverged(TrainingError):
    exit_code = 5


class Task(Protocol):
    """What the loop needs from a model-specific task."""

    def param_groups(self) -> list[dict[str, Any]]: ...  # AdamW param groups (trainable only)

    def models(self) -> dict[str, torch.nn.Module]: ...  # modules to put in train() and to checkpoint

    def dataset(self) -> torch.utils.data.Dataset: ...

    def loss(self, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    resumed_from: int
    curve_csv: Path | None


def _checkpoints(run_dir: Path) -> list[Path]:
    ck = run_dir / "checkpoints"
    if not ck.is_dir():
        return []
    done = [p for p in ck.iterdir() if p.name.startswith(CKPT_PREFIX) and (p / STATE_FILE).exists()]
    return sorted(done, key=lambda p: int(p.name.removeprefix(CKPT_PREFIX)))


def _key_of(path: Path) -> str | None:
    try:
        return json.loads((path / STATE_FILE).read_text()).get("run_key")
    except (OSError, ValueError):
        return None


def latest_checkpoint(run_dir: str | Path, run_key: str | None = None) -> Path | None:
    """Newest complete checkpoint of this run (same run_key), or None."""
    found = [p for p in _checkpoints(Path(run_dir)) if run_key is None or _key_of(p) == run_key]
    return found[-1] if found else None


class _Batches:
    """Seeded, resumable batch order: epoch e is a permutation drawn from (seed, e)."""

    def __init__(self, dataset, batch_size: int, seed: int, collate):
        self.dataset, self.batch_size, self.seed, self.collate = dataset, batch_size, seed, collate
        n = len(dataset)
        if n == 0:
            raise TrainingError("the training set is empty; check the dataset split and filters")
        self.per_epoch = max(1, n // batch_size) if n >= batch_size else 1

    def from_step(self, step: int) -> Iterator[Any]:
        epoch, skip = divmod(step, self.per_epoch)
        n = len(self.dataset)
        while True:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(n, generator=g)
            if n < self.batch_size:  # tiny sets (a few brand references): sample with repetition
                order = order.repeat(math.ceil(self.batch_size / n))
            for b in range(skip, self.per_epoch):
                idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                yield self.collate([self.dataset[int(i)] for i in idx])
            epoch, skip = epoch + 1, 0


def _atomic_save_state(accelerator, run_dir: Path, step: int, keep: int, extra: dict) -> Path:
    ck = run_dir / "checkpoints"
    ck.mkdir(parents=True, exist_ok=True)
    final = ck / f"{CKPT_PREFIX}{step:07d}"
    tmp = ck / f".tmp-{CKPT_PREFIX}{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    accelerator.save_state(str(tmp))
    (tmp / STATE_FILE).write_text(json.dumps({"step": step, **extra}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in _checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _load_state(accelerator, path: Path, run_key: str | None) -> int:
    if not path.is_dir():
        raise TrainingError(f"checkpoint {path} does not exist; pass an existing checkpoint folder or --no-resume")
    state = path / STATE_FILE
    try:
        meta = json.loads(state.read_text())
        step = int(meta["step"])
        if run_key is not None and meta.get("run_key") not in (None, run_key):
            raise TrainingError(
                f"checkpoint {path} belongs to another run (config/data key {meta.get('run_key')} != {run_key}); "
                f"resume it with the params it was trained with, or start over with --no-resume"
            )
        accelerator.load_state(str(path))
    except TrainingError:
        raise
    except FileNotFoundError as exc:
        raise TrainingError(
            f"checkpoint {path} is incomplete ({exc.filename or exc} missing); delete it to resume from an older "
            f"checkpoint, or start over with --no-resume"
        ) from None
    except Exception as exc:  # corrupt safetensors / pickle / json all surface differently
        raise TrainingError(
            f"checkpoint {path} is corrupt ({type(exc).__name__}: {str(exc)[:200]}); delete it to resume from an "
            f"older checkpoint, or start over with --no-resume"
        ) from None
    return step


class _Curve:
    def __init__(self, path: Path | None, start_step: int):
        self.path = path
        self.rows: list[dict[str, float]] = []
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if start_step > 0 and path.exists():  # keep the rows the resumed run already logged
            with open(path) as fh:
                self.rows = [
                    {k: float(v) for k, v in r.items()} for r in csv.DictReader(fh) if float(r["step"]) <= start_step
                ]

    def add(self, row: dict[str, float]) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        if self.path is None or not self.rows:
            return
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.path)

    def plot(self, title: str) -> Path | None:
        if self.path is None or not self.rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = [k for k in self.rows[0] if k not in ("step", "lr", "seconds")]
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        steps = [r["step"] for r in self.rows]
        for ax, k in zip(axes[0], keys, strict=False):
            ax.plot(steps, [r.get(k, float("nan")) for r in self.rows])
            ax.set_title(k)
            ax.set_xlabel("step")
            ax.set_yscale("log" if all(r.get(k, 1) > 0 for r in self.rows) else "linear")
        fig.suptitle(title)
        fig.tight_layout()
        out = self.path.with_suffix(".png")
        fig.savefig(out, dpi=90)
        plt.close(fig)
        return out


def train(
    task: Task,
    cfg: LoopConfig,
    run_dir: str | Path,
    *,
    resume: bool | str | Path = True,
    curve_csv: str | Path | None = None,
    desc: str = "train",
    progress: bool = True,
    accelerator=None,
    run_key: str | None = None,
) -> TrainResult:
    """Run `cfg.steps` optimizer steps of `task`. `resume`: True = continue from the newest
    checkpoint in run_dir with the same `run_key` if any; a path = that checkpoint (must exist);
    False = start over."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler
    from torch.utils.data import default_collate
    from tqdm import tqdm

    run_dir = Path(run_dir)
    accelerator = accelerator or Accelerator(mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    models = task.models()
    groups = task.param_groups()
    if not any(p.requires_grad for g in groups for p in g["params"]):
        raise TrainingError("nothing to train: the task has no trainable parameters")
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_sched = get_scheduler(
        "cosine" if cfg.schedule == "cosine" else "constant_with_warmup",
        optimizer,
        num_warmup_steps=cfg.warmup_steps,
        num_training_steps=cfg.steps,
    )
    names = list(models)
    prepared = accelerator.prepare(*models.values(), optimizer, lr_sched)
    for name, mod in zip(names, prepared[: len(names)], strict=True):
        models[name] = mod
    optimizer, lr_sched = prepared[len(names)], prepared[len(names) + 1]
    if hasattr(task, "bind"):
        task.bind(models)  # DDP-wrapped modules for the forward pass
    ema = None
    if cfg.ema_decay > 0:
        from diffusers.training_utils import EMAModel

        ema = EMAModel([p for g in groups for p in g["params"] if p.requires_grad], decay=cfg.ema_decay, use_ema_warmup=True)
        accelerator.register_for_checkpointing(ema)

    start = 0
    if resume:
        path = Path(resume) if not isinstance(resume, bool) else latest_checkpoint(run_dir, run_key)
        if path is not None:
            start = _load_state(accelerator, path, run_key)
            log.info("resumed from %s (step %d)", path, start)
    if start >= cfg.steps:
        log.info("checkpoint is already at step %d >= %d steps", start, cfg.steps)

    batches = _Batches(task.dataset(), cfg.batch_size, cfg.seed, getattr(task, "collate", default_collate))
    curve = _Curve(Path(curve_csv) if curve_csv else None, start)
    for m in models.values():
        m.train()
    bar = tqdm(total=cfg.steps, initial=start, desc=desc, disable=not progress or not accelerator.is_main_process)
    t0, loss_value = time.perf_counter(), float("nan")
    it = batches.from_step(start)
    step = start
    try:
        while step < cfg.steps:
            batch = next(it)
            loss, logs = task.loss(batch, step)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                saved = _atomic_save_state(accelerator, run_dir, step, cfg.keep_checkpoints, {"diverged_at": step, "run_key": run_key})
                raise TrainingDiverged(
                    f"loss became {loss_value} at step {step} ({logs}); the last good state (before this step) is "
                    f"saved as {saved}. Lower the learning rate (lr={cfg.lr}) or enable grad_clip, then resume."
                )
            accelerator.backward(loss)
            if cfg.grad_clip > 0 and accelerator.sync_gradients:
                accelerator.clip_grad_norm_([p for g in groups for p in g["params"] if p.requires_grad], cfg.grad_clip)
            optimizer.step()
            lr_sched.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step([p for g in groups for p in g["params"] if p.requires_grad])
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                row = {"step": step, "loss": loss_value, **logs, "lr": lr_sched.get_last_lr()[0]}
                row["seconds"] = round(time.perf_counter() - t0, 2)
                curve.add(row)
                bar.set_postfix(loss=f"{loss_value:.4f}")
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                curve.flush()
                _atomic_save_state(accelerator, run_dir, step, cfg.keep_checkpoints, {"run_key": run_key})
        if step > start and cfg.checkpoint_every <= cfg.steps:
            _atomic_save_state(accelerator, run_dir, step, cfg.keep_checkpoints, {"run_key": run_key})
    finally:
        bar.close()
        curve.flush()
    if ema is not None:
        ema.copy_to([p for g in groups for p in g["params"] if p.requires_grad])
    for m in models.values():
        m.eval()
    curve.plot(desc)
    return TrainResult(step, time.perf_counter() - t0, loss_value, start, curve.path)
