"""Where an orchestrated run lives and how its steps talk to each other, without Airflow.

- `Settings`: the deployment (repo root, params + profiles, work dir), read from the environment of
  the process that runs a step (an Airflow worker, a test, a shell).
- `RunContext`: one run of one brand. Its folder is keyed on the run id (never on logical_date,
  which manual runs do not have), so reruns and concurrent runs of other brands never share a folder.
- Steps record their result (or error) as `<run_dir>/steps/<name>.json`; the next step reads the
  previous one's record, and the summary reads them all. Files instead of XCom, so the same step
  functions run under Airflow, in a test, or from a shell, and every worker that mounts the work
  dir sees the same state.
- `locked(path)`: an exclusive file lock for the few things two runs may share (a brand's
  DVC-tracked dataset, a content-keyed training folder).
- `run_bgp(...)`: a `bgp` subcommand as a subprocess, its output streamed into the task log and kept
  in a log file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bg_platform.errors import BgError

log = logging.getLogger(__name__)

STEPS = ("pull", "prepare", "validate", "train", "evaluate", "gate", "reload", "smoke")


class OrchestrationError(BgError):
    """A step failed in a way a retry may fix (a server down, a crashed subprocess)."""


class StopRun(BgError):
    """A step failed in a way a retry cannot fix (bad data, failed gate, bad settings): the DAGs'
    retry policy fails the task at once instead of retrying it."""

    exit_code = 3


# ---------------------------------------------------------------------------------------------
# Settings


def _checkout_root() -> Path:
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    repo: Path  # git + DVC repo: params.yaml, models/, data/ (paths in params are relative to it)
    params: Path
    profiles: tuple[Path, ...] = ()
    work_dir: Path = Path()  # run folders, pulls, content-keyed adapter/evaluation caches
    brand_data_dir: Path = Path()  # DVC-tracked brand datasets, one folder per brand (inside the repo)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """BGP_REPO (default: the working directory when it holds params.yaml, else this checkout),
        BGP_PARAMS (default <repo>/params.yaml), BGP_PROFILES (overlays, ':'-separated, relative to
        the repo), BGP_RUNS_DIR (default <repo>/runs/orchestration; a shared volume when tasks run on
        several machines; not BGP_WORK_DIR, the service's download folder), BGP_BRAND_DATA_DIR
        (default <repo>/data/brands)."""
        env = os.environ if env is None else env
        if env.get("BGP_REPO"):
            repo = Path(env["BGP_REPO"]).expanduser()
        elif (Path.cwd() / "params.yaml").exists():
            repo = Path.cwd()
        else:
            repo = _checkout_root()
        repo = repo.resolve()
        if not repo.is_dir():
            raise StopRun(f"BGP_REPO: {repo} is not a folder; point it at the project's git + DVC repo")
        params = Path(env.get("BGP_PARAMS") or repo / "params.yaml")
        params = (params if params.is_absolute() else repo / params).resolve()
        if not params.exists():
            raise StopRun(
                f"BGP_PARAMS: {params} does not exist; set BGP_REPO to the project repo (which holds params.yaml) "
                f"or BGP_PARAMS to the params file"
            )
        profiles = []
        for raw in (env.get("BGP_PROFILES") or "").split(os.pathsep):
            if raw.strip():
                p = Path(raw.strip())
                p = (p if p.is_absolute() else repo / p).resolve()
                if not p.exists():
                    raise StopRun(f"BGP_PROFILES: {raw!r} -> {p} does not exist; list existing overlay files")
                profiles.append(p)
        work = Path(env.get("BGP_RUNS_DIR") or repo / "runs" / "orchestration")
        work = (work if work.is_absolute() else repo / work).resolve()
        data = Path(env.get("BGP_BRAND_DATA_DIR") or repo / "data" / "brands")
        data = (data if data.is_absolute() else repo / data).resolve()
        return cls(repo=repo, params=params, profiles=tuple(profiles), work_dir=work, brand_data_dir=data)

    def load_params(self, overlays: tuple[Path, ...] = ()):
        from bg_platform import config

        return config.load(self.params, [*self.profiles, *overlays])

    def path(self, value: str) -> Path:
        """A path from params.yaml: relative ones are relative to the repo."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.repo / p

    def registry_root(self, params) -> str:
        """BGP_REGISTRY (the variable the service reads too), else params.yaml registry.root."""
        root = os.environ.get("BGP_REGISTRY") or params.registry.root
        return root if "://" in root else str(self.path(root))

    def to_env(self) -> dict[str, str]:
        """The environment that makes a subprocess (or another worker) resolve the same settings."""
        return {
            "BGP_REPO": str(self.repo),
            "BGP_PARAMS": str(self.params),
            "BGP_PROFILES": os.pathsep.join(str(p) for p in self.profiles),
            "BGP_RUNS_DIR": str(self.work_dir),
            "BGP_BRAND_DATA_DIR": str(self.brand_data_dir),
        }


# ---------------------------------------------------------------------------------------------
# Runs and step records


def safe_name(text: str) -> str:
    """A run id as a folder name: Airflow run ids hold ':' and '+' ("manual__2026-01-01T00:00:00+00:00")."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")
    if not name:
        raise StopRun(f"run_id: {text!r} has no usable characters; use letters, digits, '_', '-' or '.'")
    return name[:120]


@dataclass
class RunContext:
    settings: Settings
    brand: str
    run_id: str

    @property
    def brand_dir(self) -> Path:
        return self.settings.work_dir / "brands" / self.brand

    @property
    def run_dir(self) -> Path:
        return self.brand_dir / "runs" / safe_name(self.run_id)

    def step_path(self, step: str) -> Path:
        return self.run_dir / "steps" / f"{step}.json"

    def record(self, step: str) -> dict[str, Any] | None:
        path = self.step_path(step)
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def result(self, step: str) -> dict[str, Any]:
        """The result of an earlier step of this run; a clear error when it did not succeed."""
        rec = self.record(step)
        if rec is None or rec.get("status") != "ok":
            state = "did not run" if rec is None else f"ended {rec.get('status')}: {rec.get('error', '')}"
            raise OrchestrationError(
                f"step {step!r} of run {self.run_id} (brand {self.brand}) {state}; its record "
                f"{self.step_path(step)} is needed here: re-run the DAG from {step!r}"
            )
        return rec["result"]

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        """Record a step: ok + result, or failed + the error message (then re-raise)."""
        rec = StepRecord(name)
        t0 = time.monotonic()
        self.step_path(name).parent.mkdir(parents=True, exist_ok=True)
        try:
            yield rec
        except BaseException as exc:
            body = {"status": "failed", "error": str(exc) or type(exc).__name__,
                    "error_type": type(exc).__name__, "permanent": isinstance(exc, StopRun)}  # fmt: skip
            self._write(name, body | {"details": rec.details, "seconds": round(time.monotonic() - t0, 2)})
            raise
        self._write(name, {"status": "ok", "result": rec.result, "seconds": round(time.monotonic() - t0, 2)})

    def _write(self, name: str, body: dict[str, Any]) -> None:
        from bg_platform.data.imageio import atomic_write_bytes

        body = {"step": name, "brand": self.brand, "run_id": self.run_id, "finished_at": time.time(), **body}
        atomic_write_bytes(self.step_path(name), json.dumps(body, indent=1, default=str).encode())


@dataclass
class StepRecord:
    name: str
    result: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # kept on failure too (e.g. the report path)


def asdict_str(obj: Any) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(obj), default=str))


# ---------------------------------------------------------------------------------------------
# Locks and subprocesses


@contextlib.contextmanager
def locked(path: Path, what: str) -> Iterator[None]:
    """Exclusive lock on `path` (created if needed); logs when it has to wait for another run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for %s (another run holds %s)", what, path)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def bgp_command(settings: Settings, overlays: tuple[Path, ...], *args: str) -> list[str]:
    cmd = [sys.executable, "-m", "bg_platform", "--params", str(settings.params)]
    for p in (*settings.profiles, *overlays):
        cmd += ["--profile", str(p)]
    return cmd + list(args)


def run_bgp(
    settings: Settings, overlays: tuple[Path, ...], args: list[str], *, cwd: Path, log_path: Path, timeout: float,
    what: str,
) -> str:  # fmt: skip
    """Run `bgp <args>`; stream its output into our log and `log_path`; return the output's tail.

    A non-zero exit raises: StopRun for exit codes the CLI uses for bad input (2, 3: a retry gives
    the same answer), OrchestrationError otherwise (a crash, a kill: a retry may pass)."""
    cmd = bgp_command(settings, overlays, *args)
    env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
           "GX_ANALYTICS_ENABLED": "False", "DVC_NO_ANALYTICS": "1"}  # fmt: skip
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=40)
    log.info("%s: %s (cwd %s, log %s)", what, " ".join(cmd), cwd, log_path)
    with open(log_path, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, start_new_session=True,
        )  # fmt: skip

        def pump() -> None:  # a thread, so a child that hangs silently still hits the timeout below
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                line = line.rstrip()
                if line and "it/s]" not in line and "s/it]" not in line:  # tqdm redraws are noise in a task log
                    tail.append(line)
                    log.info("[%s] %s", what, line)

        reader = threading.Thread(target=pump, name=f"bgp-{what}", daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise OrchestrationError(
                f"{what} took over {timeout:.0f} s and was stopped; log {log_path}. Raise the step's timeout "
                f"or check the machine's load"
            ) from None
        except BaseException:
            _kill(proc)  # an Airflow timeout / kill of the task must not leave training running
            raise
        finally:
            reader.join(timeout=10)
    text = "\n".join(tail)
    if proc.returncode != 0:
        cls = StopRun if proc.returncode in (2, 3) else OrchestrationError
        raise cls(f"{what} failed (exit {proc.returncode}); log {log_path}; last lines:\n{text}")
    return text


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(timeout=10)
