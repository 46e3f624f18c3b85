"""The registry's only contact with storage: a few primitives over one fsspec filesystem.

Everything goes through fsspec's `url_to_fs` / AbstractFileSystem API, so a local folder,
`memory://`, `s3://` and `gs://` roots share one code path. Two primitives carry the atomicity:

- `put(path, data)`: readers see the old bytes or the new bytes, never a mix. On a local disk:
  write a hidden temp file in the same folder, fsync, rename over the target (POSIX rename is
  atomic). On object stores: one PUT, which is atomic by the store's contract.
- `create(path, data)`: exclusive create (FileExistsError if present). Atomic on a local disk
  (O_EXCL) and in memory://; on backends without a conditional PUT fsspec falls back to
  check-then-write, which is why the registry never *relies* on it for correctness (see ids.py).

`lock(...)` serialises alias changes between processes on a local disk (flock, released by the
kernel when a holder is killed) and between threads in one process; object stores have no lock,
and there the immutable event log is what keeps concurrent alias changes from losing anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from bg_platform.registry.errors import AdapterIntegrityError, RegistryError
from bg_platform.registry.ids import stamp

CHUNK_BYTES = 4 * 1024 * 1024
TEMP_PREFIX = ".tmp-"
Progress = Callable[[str, int, int], None]  # (file name, bytes done, bytes total)

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def temp_name(final_name: str) -> str:
    """Hidden, time-stamped sibling name: never listed as content, and `gc` can age it."""
    return f"{TEMP_PREFIX}{stamp()}-{secrets.token_hex(4)}-{final_name}"


def modified_time(info: dict[str, Any]) -> datetime | None:
    """Modification time from an fsspec `info()`/`ls(detail=True)` entry, whatever the backend calls it."""
    for key in ("mtime", "LastModified", "updated", "modified", "created", "mtime_ns"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, int | float):
            seconds = value / 1e9 if key == "mtime_ns" else value
            return datetime.fromtimestamp(seconds, tz=UTC)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


class Storage:
    def __init__(self, root: str, **storage_options: Any):
        if not isinstance(root, str) or not root.strip():
            raise RegistryError(f"registry root {root!r} is empty; pass a folder or a URL like s3://bucket/registry")
        self.url = root
        self.fs, path = url_to_fs(root, **storage_options)
        self.root = path.rstrip("/") or "/"
        self.local = isinstance(self.fs, LocalFileSystem)
        self._made_dirs: set[str] = set()

    # -- paths ---------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def uri(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)

    def _parent_dirs(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if parent not in self._made_dirs:
            self.fs.makedirs(parent, exist_ok=True)
            self._made_dirs.add(parent)

    # -- reads ---------------------------------------------------------------------------------
    def read_bytes(self, path: str) -> bytes:
        """The file's bytes; FileNotFoundError if it does not exist."""
        return self.fs.cat_file(path)

    def read_json(self, path: str) -> Any | None:
        """Parsed JSON, or None if the file does not exist."""
        try:
            raw = self.read_bytes(path)
        except FileNotFoundError:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise RegistryError(
                f"{self.uri(path)} is not valid JSON ({exc}); it was edited by hand or written by a broken "
                "tool: restore it from the event log (`bgp registry history`)"
            ) from None

    def read_many(self, paths: list[str], missing_ok: bool = False) -> dict[str, bytes]:
        """Several small files in one call (concurrent on async backends such as s3/gcs); with
        `missing_ok`, files that do not exist are left out instead of raising."""
        if not paths:
            return {}
        out = self.fs.cat(list(paths), on_error="omit" if missing_ok else "raise")
        return out if isinstance(out, dict) else {paths[0]: out}

    def _fresh(self, path: str) -> None:
        # Object-store filesystems (s3fs, gcsfs) cache listings per instance, without expiry by
        # default; other processes' writes must be seen, so listings are always fresh here.
        self.fs.invalidate_cache(path)

    def listdir(self, path: str) -> list[dict[str, Any]]:
        """Entries of a folder (name = basename); empty if the folder does not exist."""
        self._fresh(path)
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        out = []
        for entry in entries:
            name = posixpath.basename(entry["name"].rstrip("/"))
            if name:
                out.append({**entry, "name": name, "path": entry["name"].rstrip("/")})
        return out

    def glob(self, pattern: str) -> list[str]:
        self._fresh(pattern.split("*", 1)[0].rsplit("/", 1)[0])
        return sorted(self.fs.glob(pattern))

    def exists(self, path: str) -> bool:
        self._fresh(posixpath.dirname(path))
        return self.fs.exists(path)

    def hash_file(self, path: str) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        with self.fs.open(path, "rb") as fin:
            while chunk := fin.read(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
        return digest.hexdigest(), size

    # -- writes --------------------------------------------------------------------------------
    def put(self, path: str, data: bytes) -> None:
        """Atomic replace: a reader sees the old or the new content, never a partial file."""
        self._parent_dirs(path)
        if not self.local:
            self.fs.pipe_file(path, data)  # a single PUT on object stores
            return
        tmp = posixpath.join(posixpath.dirname(path), temp_name(posixpath.basename(path)))
        try:
            with self.fs.open(tmp, "wb") as fout:
                fout.write(data)
                fout.flush()
                os.fsync(fout.fileno())
            self.fs.mv(tmp, path)  # shutil.move -> os.rename: atomic replace on one POSIX filesystem
        finally:
            if self.fs.exists(tmp):
                self.fs.rm_file(tmp)

    def create(self, path: str, data: bytes) -> None:
        """Exclusive create; FileExistsError if the path exists (see the module docstring)."""
        self._parent_dirs(path)
        if self.local:
            with self.fs.open(path, "xb") as fout:  # O_EXCL
                fout.write(data)
        else:
            self.fs.pipe_file(path, data, mode="create")

    def upload(self, src: Path, dst: str, progress: Progress | None = None) -> tuple[str, int]:
        """Copy a local file to `dst`, hashing exactly the bytes written; returns (sha256, size)."""
        self._parent_dirs(dst)
        digest = hashlib.sha256()
        total = src.stat().st_size
        size = 0
        with open(src, "rb") as fin, self.fs.open(dst, "wb") as fout:
            while chunk := fin.read(CHUNK_BYTES):
                digest.update(chunk)
                fout.write(chunk)
                size += len(chunk)
                if progress is not None:
                    progress(src.name, size, total)
            if self.local:
                fout.flush()
                os.fsync(fout.fileno())  # weights must be durable before metadata.json commits them
        return digest.hexdigest(), size

    def download(self, path: str, dest: Path, expected_sha256: str, label: str) -> None:
        """Copy `path` to local `dest` via a temp file, renamed only if the sha256 matches."""
        tmp = dest.with_name(temp_name(dest.name))
        digest = hashlib.sha256()
        try:
            with self.fs.open(path, "rb") as fin, open(tmp, "wb") as fout:
                while chunk := fin.read(CHUNK_BYTES):
                    digest.update(chunk)
                    fout.write(chunk)
            actual = digest.hexdigest()
            if actual != expected_sha256:
                raise AdapterIntegrityError(checksum_message(label, self.uri(path), expected_sha256, actual))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def rm(self, path: str) -> None:
        self.fs.rm(path, recursive=True)

    @contextmanager
    def lock(self, *parts: str) -> Iterator[None]:
        """Exclusive section for one brand's alias changes (see the module docstring)."""
        key = f"{self.url}|{'/'.join(parts)}"
        with _THREAD_LOCKS_GUARD:
            thread_lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
        with thread_lock:
            if not self.local:
                yield
                return
            import fcntl

            lock_path = self.path(*parts)
            self._parent_dirs(lock_path)
            with open(lock_path, "a+b") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def checksum_message(label: str, uri: str, expected: str, actual: str) -> str:
    return (
        f"{label}: sha256 mismatch for {uri}: expected {expected} (recorded at publish), found {actual}; "
        "the stored file is corrupt or was modified. Do not load it: roll back "
        "(`bgp registry rollback <brand>`) or republish the adapter"
    )
