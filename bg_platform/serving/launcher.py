"""Start and stop a real `bentoml serve` of the service as a subprocess (demo, tests, dev tools).

The server runs in its own process group (the BentoML arbiter and its workers), is ready when
`/readyz` answers 200, and is stopped with SIGTERM to the group (SIGKILL after a grace period).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bg_platform.serving.errors import ServingError

SERVICE_TARGET = "bentos.bg_service.service:BgService"
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningService:
    url: str
    admin_token: str
    log: Path
    process: subprocess.Popen

    def stop(self, grace_s: float = 30.0) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self) -> RunningService:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_service(
    env: dict[str, str],
    log: str | Path,
    *,
    target: str = SERVICE_TARGET,
    cwd: str | Path = REPO_ROOT,
    port: int | None = None,
    admin_token: str | None = None,
    timeout_s: float = 180.0,
    unset: tuple[str, ...] = (),
) -> RunningService:
    """`bentoml serve <target>` with `env` (BGP_* settings, BENTOML_HOME, ...) added to the
    environment; returns once ready. The log file keeps the server's output."""
    import secrets

    import httpx

    port = port or free_port()
    token = admin_token or env.get("BGP_ADMIN_TOKEN") or secrets.token_hex(16)
    full_env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "HF_HUB_OFFLINE": "1", **env, "BGP_ADMIN_TOKEN": token}
    for name in unset:
        full_env.pop(name, None)
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    bentoml = Path(sys.executable).parent / "bentoml"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(bentoml), "serve", target, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    service = RunningService(f"http://127.0.0.1:{port}", token, log, proc)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise ServingError(f"bentoml serve exited with {proc.returncode}; see {log}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{service.url}/readyz", timeout=5).status_code == 200:
                return service
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            service.stop()
            raise ServingError(f"bentoml serve not ready after {timeout_s:.0f} s; see {log}")
        time.sleep(0.5)
