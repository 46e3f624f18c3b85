"""Independent judges: small CNN classifiers trained on REAL images only (never on generated ones).

The input is the background alone: product pixels are hidden (set to mid grey) and the product
mask is given as a 4th channel, so a judge can only score what the generator owns. The
penultimate layer (global-average-pooled features) is the feature space of the judge Fréchet
distance. Judges train in THE training loop (`bg_platform.training.loop`), and are stored as
safetensors + JSON (no pickles).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bg_platform.config import JudgeConfig
from bg_platform.errors import BgError
from bg_platform.training.data import ImageSet, ImageSetDataset, to_model_space


def judge_input(images: torch.Tensor, product: torch.Tensor) -> torch.Tensor:
    """images (B, 3, H, W) in [-1, 1], product (B, 1, H, W) {0,1} -> (B, 4, H, W): background only + mask."""
    return torch.cat([images * (1 - product), product], 1)


class JudgeNet(nn.Module):
    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()

        def block(i: int, o: int, pool: bool = True) -> list[nn.Module]:
            layers = [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
            layers += [nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        w = width
        self.features = nn.Sequential(
            nn.PixelUnshuffle(2),  # 64 px -> 32 x 32 x 16: full-resolution detail at a quarter of the cost
            *block(16, w),
            *block(w, 2 * w),
            *block(2 * w, 4 * w),
            *block(4 * w, 4 * w, pool=False),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * w, num_classes)
        self.feature_dim = 4 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class Judge:
    net: JudgeNet
    classes: tuple[str, ...]
    resolution: int

    @torch.no_grad()
    def _run(self, images_u8: torch.Tensor, masks_u8: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        self.net.eval()
        logits, feats = [], []
        for s in range(0, len(images_u8), batch):
            x, p = to_model_space(images_u8[s : s + batch], masks_u8[s : s + batch])
            f = self.net.features(judge_input(x, p))
            feats.append(f)
            logits.append(self.net.head(f))
        return torch.cat(logits), torch.cat(feats)

    def predict(self, images_u8: torch.Tensor, masks_u8: torch.Tensor) -> list[str]:
        logits, _ = self._run(images_u8, masks_u8)
        return [self.classes[i] for i in logits.argmax(1).tolist()]

    def features(self, images_u8: torch.Tensor, masks_u8: torch.Tensor) -> np.ndarray:
        return self._run(images_u8, masks_u8)[1].double().numpy()

    def accuracy(self, images_u8: torch.Tensor, masks_u8: torch.Tensor, labels: Sequence[str]) -> dict:
        pred = self.predict(images_u8, masks_u8)
        return accuracy_report(pred, labels, self.classes)

    def save(self, path: str | Path, metrics: dict | None = None) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(path / "judge.safetensors"))
        meta = {"classes": list(self.classes), "width": self.net.feature_dim // 4, "resolution": self.resolution}
        (path / "judge.json").write_text(json.dumps({**meta, "metrics": metrics or {}}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Judge:
        from safetensors.torch import load_file

        path = Path(path)
        try:
            meta = json.loads((path / "judge.json").read_text())
            state = load_file(str(path / "judge.safetensors"))
        except FileNotFoundError as exc:
            raise BgError(f"judge not found at {path} ({exc.filename}); run `dvc repro train_judges` first") from None
        net = JudgeNet(len(meta["classes"]), meta["width"])
        net.load_state_dict(state)
        net.eval()
        return cls(net, tuple(meta["classes"]), int(meta["resolution"]))


def accuracy_report(pred: Sequence[str], labels: Sequence[str], classes: Sequence[str]) -> dict:
    pred, labels = list(pred), list(labels)
    per = {}
    for c in classes:
        idx = [i for i, y in enumerate(labels) if y == c]
        if idx:
            per[c] = round(sum(pred[i] == c for i in idx) / len(idx), 4)
    acc = sum(p == y for p, y in zip(pred, labels, strict=True)) / max(len(labels), 1)
    return {"accuracy": round(acc, 4), "per_class": per, "n": len(labels)}


class JudgeTask:
    """Cross-entropy on real backgrounds; class-balanced sampling weights via the loss."""

    def __init__(self, net: JudgeNet, data: ImageSet, labels: Sequence[str], classes: Sequence[str]):
        self.net = net
        self.data = data
        self.classes = list(classes)
        self.targets = torch.tensor([self.classes.index(y) for y in labels])
        counts = torch.bincount(self.targets, minlength=len(self.classes)).float().clamp_min(1)
        self.weights = counts.sum() / (len(self.classes) * counts)  # balance rare classes (few brand refs)

    def models(self) -> dict[str, nn.Module]:
        return {"judge": self.net}

    def bind(self, models: dict[str, nn.Module]) -> None:
        self.net = models["judge"]

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.net.parameters())}]

    def dataset(self) -> torch.utils.data.Dataset:
        task = self

        class _WithTarget(ImageSetDataset):
            def __getitem__(self, i: int) -> dict:
                d = super().__getitem__(i)
                d["target"] = task.targets[i]
                return d

        return _WithTarget(self.data)

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        x, p = to_model_space(batch["image"], batch["mask"])
        flip = torch.rand(x.shape[0]) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        p = torch.where(flip[:, None, None, None], p.flip(3), p)
        logits = self.net(judge_input(x, p))
        loss = F.cross_entropy(logits, batch["target"], weight=self.weights)
        acc = (logits.argmax(1) == batch["target"]).float().mean()
        return loss, {"batch_accuracy": float(acc)}


def train_judge(
    data: ImageSet, labels: Sequence[str], classes: Sequence[str], cfg: JudgeConfig, run_dir: str | Path, name: str, progress: bool = True
) -> Judge:
    from bg_platform.training.loop import train

    torch.manual_seed(cfg.loop.seed)
    net = JudgeNet(len(classes), cfg.width)
    task = JudgeTask(net, data, labels, classes)
    train(task, cfg.loop, Path(run_dir) / name, resume=False, curve_csv=Path(run_dir) / name / "loss.csv", desc=f"judge:{name}", progress=progress)
    return Judge(net.eval(), tuple(classes), int(data.images.shape[1]))
