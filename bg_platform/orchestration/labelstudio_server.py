"""A headless Label Studio server (label-studio 1.23.2 in its own venv, `.venv-ls`) on SQLite.

The server's pins clash with Airflow's, so it runs as a subprocess of `.venv-ls/bin/label-studio` and
is reached over HTTP only. Pitfalls this module exists to contain (notes/orchestration.md section 4):
- the admin user, its token and the organisation's legacy-token switch are created only at the FIRST
  start of a data dir; a later start with another token keeps the old one, so we verify the token;
- Label Studio reads `USERNAME`, `PASSWORD`, `PORT`, `HOST`, `DEBUG`, `SECRET_KEY`... without prefix,
  so the child gets a whitelisted environment instead of ours;
- a busy `--port` silently moves to the next free one: we refuse a busy port up front and
  health-check the exact URL.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bg_platform.errors import BgError

log = logging.getLogger(__name__)

DEFAULT_PORT = 8081  # 8080 is Airflow's api-server (notes 1.5)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_USERNAME = "admin@bg.local"
DEFAULT_START_TIMEOUT = 300.0  # the first start runs ~150 Django migrations: ~75 s on 2 busy cores
DB_NAME = "label_studio.sqlite3"
LOG_NAME = "server.log"
# Variables the server process may inherit; everything else (USERNAME, PORT, HOST, SECRET_KEY, DEBUG,
# DJANGO_*, stray LABEL_STUDIO_*) would be read by Label Studio's get_env and change its behaviour.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "SSL_CERT_FILE", "SYSTEMROOT")


class LabelStudioServerError(BgError):
    pass


def default_venv() -> Path:
    """`BGP_LS_VENV`, else `.venv-ls` in the working directory, else next to this checkout."""
    if os.environ.get("BGP_LS_VENV"):
        return Path(os.environ["BGP_LS_VENV"])
    here = Path.cwd() / ".venv-ls"
    if here.exists():
        return here
    return Path(__file__).resolve().parents[2] / ".venv-ls"


def executable(venv: str | Path | None = None) -> Path:
    venv = Path(venv) if venv else default_venv()
    exe = venv / "bin" / "label-studio"
    if not exe.exists():
        raise LabelStudioServerError(
            f"Label Studio server not installed: {exe} does not exist; run `make setup-labelstudio` "
            f"(or set BGP_LS_VENV to a venv with label-studio==1.23.2)"
        )
    return exe


def server_env(
    data_dir: Path,
    files_root: Path,
    username: str,
    password: str | None,
    token: str,
    extra: dict[str, str] | None,
) -> dict[str, str]:
    env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_DATABASE_NAME": str(data_dir / DB_NAME),
            "LABEL_STUDIO_USERNAME": username,
            "LABEL_STUDIO_USER_TOKEN": token,
            # read only when the organisation is created (first start); without it Token auth is refused
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files_root),
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",  # no internet on build machines: do not wait on PyPI
            "PYTHONUNBUFFERED": "1",
        }
    )
    if password:
        env["LABEL_STUDIO_PASSWORD"] = password
    env.update(extra or {})
    return env


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class ServerHandle:
    url: str
    port: int
    data_dir: Path
    files_root: Path
    log_path: Path
    process: subprocess.Popen = field(repr=False)
    started_in_s: float = 0.0

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        stop(self, timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no server log)"
    return "\n".join(text[-lines:])


def _get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Token {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def health(url: str, timeout: float = 5.0) -> bool:
    """True when `<url>/health` answers {"status": "UP"}."""
    try:
        status, body = _get(f"{url.rstrip('/')}/health", timeout=timeout)
    except (urllib.error.URLError, OSError, TimeoutError):
        return False
    if status != 200:
        return False
    try:
        return json.loads(body).get("status") == "UP"
    except (ValueError, AttributeError):
        return False


def check_token(url: str, token: str, data_dir: Path | None = None) -> None:
    status, body = _get(f"{url.rstrip('/')}/api/current-user/whoami", token)
    if status == 200:
        return
    where = f" for data dir {data_dir}" if data_dir else ""
    raise LabelStudioServerError(
        f"Label Studio at {url} is UP but rejects the token (HTTP {status}: {body[:200]!r}). The admin token"
        f"{where} is fixed at its first start: use that token in BGP_LS_TOKEN, or start on a fresh --data-dir. "
        f"'legacy token authentication has been disabled' means the data dir was first started without "
        f"LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true"
    )


def start_server(
    data_dir: str | Path,
    port: int,
    token: str,
    files_root: str | Path,
    *,
    username: str = DEFAULT_USERNAME,
    password: str | None = None,
    host: str = DEFAULT_HOST,
    timeout: float = DEFAULT_START_TIMEOUT,
    venv: str | Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> ServerHandle:
    """Start Label Studio on exactly `host:port`, wait for /health UP and a working `token`, return a handle.

    `password` is needed only at the first start of `data_dir` (it creates the admin user); `token` must
    then be the one used at that first start. `files_root` is LOCAL_FILES_DOCUMENT_ROOT: Local Files
    storages must be sub-folders of it.
    """
    if not token or len(token) <= 5:
        raise LabelStudioServerError(
            "token: Label Studio ignores user tokens of 5 characters or fewer; set BGP_LS_TOKEN to e.g. "
            "`python -c 'import secrets; print(secrets.token_hex(20))'`"
        )
    exe = executable(venv)
    data_dir = Path(data_dir).resolve()
    files_root = Path(files_root).resolve()
    first_start = not (data_dir / DB_NAME).exists()
    if first_start and not password:
        raise LabelStudioServerError(
            f"password: {data_dir} is a new Label Studio data dir and its admin user {username} needs a UI "
            f"password; set BGP_LS_PASSWORD (it is only read at the first start)"
        )
    if port_in_use(host, port):
        raise LabelStudioServerError(
            f"port {port} on {host} is already in use (Label Studio would silently move to {port + 1}); stop "
            f"what listens there (`ss -ltnp | grep :{port}`) or choose another --port / BGP_LS_PORT"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    files_root.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / LOG_NAME
    cmd = [str(exe), "start", "--no-browser", "--port", str(port), "--internal-host", host]
    if first_start:
        cmd.append("--enable-legacy-api-token")
    # the literal address, not "localhost": that may resolve to ::1, where the server does not listen
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    env = server_env(data_dir, files_root, username, password, token, extra_env)
    log_offset = log_path.stat().st_size if log_path.exists() else 0
    t0 = time.monotonic()
    with open(log_path, "ab") as log_fh:
        # own session: a Ctrl-C meant for the CLI does not race our orderly stop(); stop() kills the group
        proc = subprocess.Popen(
            cmd,
            cwd=data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    handle = ServerHandle(
        url=url, port=port, data_dir=data_dir, files_root=files_root, log_path=log_path, process=proc
    )
    atexit.register(handle.stop)  # never leave an orphan server behind a crashed caller
    log.info("starting Label Studio at %s (data dir %s, log %s)", url, data_dir, log_path)
    try:
        _wait_up(handle, timeout)
        _check_bound_port(handle, log_offset)
        check_token(url, token, data_dir)
    except BaseException:
        handle.stop()
        raise
    handle.started_in_s = time.monotonic() - t0
    log.info("Label Studio UP at %s in %.1f s", url, handle.started_in_s)
    return handle


def _wait_up(handle: ServerHandle, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not handle.running():
            raise LabelStudioServerError(
                f"Label Studio exited with code {handle.process.returncode} before {handle.url}/health was UP; "
                f"server log {handle.log_path}:\n{_log_tail(handle.log_path)}"
            )
        if health(handle.url, timeout=2.0):
            return
        time.sleep(1.0)
    raise LabelStudioServerError(
        f"Label Studio did not report UP at {handle.url}/health within {timeout:.0f} s (first starts run "
        f"migrations; a slow machine may need a longer --timeout); server log {handle.log_path}:\n"
        f"{_log_tail(handle.log_path)}"
    )


def _check_bound_port(handle: ServerHandle, log_offset: int) -> None:
    # /health UP on our URL could still come from another server if the port was taken between our
    # check and the bind (Label Studio then moves on silently); Django names the address it bound.
    with open(handle.log_path, "rb") as fh:
        fh.seek(log_offset)
        started = [
            ln
            for ln in fh.read().decode(errors="replace").splitlines()
            if "Starting development server at" in ln
        ]
    if started and not started[-1].rstrip("/").endswith(f":{handle.port}"):
        handle.stop()
        raise LabelStudioServerError(
            f"Label Studio moved off the busy port {handle.port} ({started[-1].strip()}); another process took "
            f"{handle.port} while it started: stop it or choose another --port"
        )


def stop(handle: ServerHandle, timeout: float = 20.0) -> None:
    """Stop the server's process group: SIGTERM, then SIGKILL after `timeout` s. Idempotent."""
    proc = handle.process
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("Label Studio (pid %s) ignored SIGTERM for %.0f s; killing it", proc.pid, timeout)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        proc.wait(timeout=timeout)


def serve(
    data_dir: str | Path,
    port: int,
    token: str,
    files_root: str | Path,
    *,
    username: str = DEFAULT_USERNAME,
    password: str | None = None,
    host: str = DEFAULT_HOST,
    timeout: float = DEFAULT_START_TIMEOUT,
) -> int:
    """Foreground server for `bgp labelstudio serve`: start, print how to connect, wait for Ctrl-C, stop."""
    # SIGTERM (systemd, docker, kill) and SIGINT (even where a shell set it to "ignore") end in an orderly
    # stop(): the server runs in its own session, so it would otherwise outlive us
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    handle = start_server(
        data_dir, port, token, files_root, username=username, password=password, host=host, timeout=timeout
    )
    print(
        f"Label Studio UP at {handle.url} (started in {handle.started_in_s:.0f} s)\n"
        f"  login: {username}   data dir: {handle.data_dir}   files root: {handle.files_root}\n"
        f"  log: {handle.log_path}\n"
        f"  clients: export BGP_LS_URL={handle.url} BGP_LS_TOKEN=<the token you started it with>\n"
        f"Ctrl-C stops it.",
        file=sys.stderr,
    )
    try:
        while handle.running():
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("stopping Label Studio...", file=sys.stderr)
        handle.stop()
        return 0
    raise LabelStudioServerError(
        f"Label Studio exited on its own with code {handle.process.returncode}; server log {handle.log_path}:\n"
        f"{_log_tail(handle.log_path)}"
    )
