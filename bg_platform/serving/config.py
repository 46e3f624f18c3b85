"""ServingConfig: everything the serving process reads, as one frozen dataclass.

Serving reads artifacts (a saved base folder, the adapter registry), never params.yaml: a service
image must not depend on the training configuration it was built next to. Each field has a help
string and an environment variable (`ServingConfig.from_env()`), checked in `__post_init__`
with messages that name the variable, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bg_platform.errors import ConfigError

SCHEDULERS = ("ddim", "dpm", "euler", "ddpm")  # bg_platform.model.pipeline.SCHEDULERS (not imported: torch)


def _f(default: Any, env: str, help: str) -> Any:  # noqa: A002 - `help` reads best here
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True)
class ServingConfig:
    base_dir: str = _f("", "BGP_BASE_DIR", "saved base model folder (diffusers layout + bg_platform.json)")
    registry_root: str = _f("registry", "BGP_REGISTRY", "adapter registry root: a folder or an fsspec URL")
    slots: int = _f(4, "BGP_SLOTS", "pre-allocated LoRA slots on the UNet = most distinct adapters in one batch")
    max_rank: int = _f(16, "BGP_MAX_RANK", "slot rank; adapters of a larger rank are refused")
    cache_size: int = _f(64, "BGP_CACHE_SIZE", "prepared adapters kept in host RAM (LRU)")
    poll_interval_s: float = _f(10.0, "BGP_POLL_INTERVAL_S", "seconds between registry polls (0 = only /reload)")
    max_upload_bytes: int = _f(20_000_000, "BGP_MAX_UPLOAD_BYTES", "largest accepted image or mask file")
    max_pixels: int = _f(16_000_000, "BGP_MAX_PIXELS", "largest accepted image (width x height)")
    max_num_images: int = _f(8, "BGP_MAX_NUM_IMAGES", "most images one request may ask for")
    max_steps: int = _f(100, "BGP_MAX_STEPS", "most denoising steps one request may ask for")
    steps: int = _f(25, "BGP_STEPS", "default denoising steps")
    guidance: float = _f(3.0, "BGP_GUIDANCE", "default classifier-free guidance scale (1 = off)")
    scheduler: str = _f("ddim", "BGP_SCHEDULER", f"sampler, one of {list(SCHEDULERS)}")
    max_batch_rows: int = _f(16, "BGP_MAX_BATCH", "most images in one model batch")
    cross_brand_batching: bool = _f(True, "BGP_CROSS_BRAND_BATCHING", "let requests of different brands share a batch")
    max_queue_rows: int = _f(256, "BGP_MAX_QUEUE", "images waiting for the model before requests get 503")
    request_timeout_s: float = _f(300.0, "BGP_REQUEST_TIMEOUT_S", "longest a request waits for its images")
    admin_token_env: str = _f("BGP_ADMIN_TOKEN", "BGP_ADMIN_TOKEN_ENV", "env var holding the admin token of /reload")
    device: str = _f("cpu", "BGP_DEVICE", "torch device of the model")
    work_dir: str = _f("", "BGP_WORK_DIR", "local folder for verified adapter downloads ('' = a temp folder)")

    def __post_init__(self) -> None:
        problems = []

        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                env = self.field_env(name)
                problems.append(f"{name} ({env}): {getattr(self, name)!r} {what}")

        need(bool(self.base_dir), "base_dir", "is empty; set it to the folder `bgp train-base` wrote (or use the model store)")
        need(bool(self.registry_root), "registry_root", "is empty; set it to the adapter registry root")
        for name in ("slots", "max_rank", "cache_size", "max_upload_bytes", "max_pixels", "max_num_images",
                     "max_steps", "steps", "max_batch_rows", "max_queue_rows"):
            need(getattr(self, name) >= 1, name, "must be >= 1")
        need(self.cache_size >= self.slots, "cache_size", f"must be >= slots ({self.slots}): a batch's adapters must fit")
        need(self.steps <= self.max_steps, "steps", f"exceeds max_steps ({self.max_steps})")
        need(1.0 <= self.guidance <= 30.0, "guidance", "must be within [1, 30]")
        need(self.scheduler in SCHEDULERS, "scheduler", f"is not one of {list(SCHEDULERS)}")
        need(self.poll_interval_s >= 0, "poll_interval_s", "must be >= 0 (0 disables polling)")
        need(self.request_timeout_s > 0, "request_timeout_s", "must be > 0")
        need(self.admin_token_env.isidentifier(), "admin_token_env", "is not an environment variable name")
        if problems:
            raise ConfigError("invalid serving config:\n  " + "\n  ".join(problems))

    @classmethod
    def field_env(cls, name: str) -> str:
        return {f.name: f.metadata["env"] for f in dataclasses.fields(cls)}[name]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServingConfig:
        """Defaults, then environment variables (BGP_*), then explicit overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.metadata["env"], raw, type(f.default))
        values.update(overrides)
        return cls(**values)

    @classmethod
    def env_value(cls, name: str, env: Mapping[str, str] | None = None) -> Any:
        """One field from the environment (or its default), without building a whole config."""
        env = os.environ if env is None else env
        f = {f.name: f for f in dataclasses.fields(cls)}[name]
        raw = env.get(f.metadata["env"])
        return f.default if raw is None or raw == "" else _parse(f.metadata["env"], raw, type(f.default))

    @classmethod
    def explain(cls) -> str:
        """One line per field: env var, default, help (for the README and `--help`)."""
        return "\n".join(f"{f.metadata['env']:<26} {f.default!r:<14} {f.metadata['help']}" for f in dataclasses.fields(cls))


def _parse(var: str, raw: str, kind: type) -> Any:
    if kind is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{var}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise ConfigError(f"{var}={raw!r} is not a{'n integer' if kind is int else ' number'}") from None
    return raw
