"""The run directory as a unit: one writer at a time (a lock), and a manifest that says what
it is (`run.json`).

`lock_directory(path)` takes an exclusive `flock` on the directory's own descriptor: no extra
file, and the kernel drops it when the process dies, however it dies. Where the filesystem
has no `flock` (some network mounts), an exclusive lock record `.cnnkit.lock` holding
"PID HOST" stands in, taken over when its holder on this host is gone. A forked child (a
DataLoader worker) closes its inherited copy at once, so the lock lives exactly as long as
the process that took it.

`run.json` (format 1) is written atomically by the holder only:

    {"format": 1, "cnnkit": "0.4.0", "torch": "2.5.1", "created": "2026-...Z",
     "updated": "...Z", "command": ["cnnkit", "train", ...], "config": "config.yaml",
     "status": "running" | "finished" | "interrupted" | "failed" | "pruned", "epoch": 3,
     "epochs": 10,
     "reason": null or one line, "pid": 4242, "host": "node7"}

"pruned": a search's pruner ended it after an epoch (cnnkit/experiments/search.py). A process
killed with SIGKILL leaves "running" with no lock held: `read_manifest` reports
that as "interrupted". Only the standard library is imported here (no torch), so sweeps and
other readers can use it cheaply.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from cnnkit.atomic import atomic_write_text
from cnnkit.errors import CnnkitError
from cnnkit.rundir import CONFIG, LOCK_RECORD, MANIFEST

try:
    import fcntl
except ImportError:  # Windows: the lock record only
    fcntl = None

RECORD = LOCK_RECORD
FORMAT = 1
# a run's statuses; "pruned": a search stopped it early on purpose (cnnkit.experiments)
STATUSES = ("running", "finished", "interrupted", "failed", "pruned")
_HELD_FDS: set[int] = set()  # directory descriptors this process holds flock on


def _close_in_child() -> None:
    for fd in list(_HELD_FDS):
        with contextlib.suppress(OSError):
            os.close(fd)  # the child's copy only: the parent keeps the lock
    _HELD_FDS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class DirectoryLock:
    """An exclusive lock on a directory, released by `close()`, on leaving a `with` block,
    or when the process ends."""

    def __init__(self, path: Path, *, fd: int | None = None, record: Path | None = None):
        self.path, self._fd, self._record, self._pid = path, fd, record, os.getpid()

    def close(self) -> None:
        if self._fd is not None:
            _HELD_FDS.discard(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None
        if self._record is not None and os.getpid() == self._pid:
            with contextlib.suppress(OSError):
                self._record.unlink()
            self._record = None

    def __enter__(self) -> DirectoryLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def lock_directory(path: str | Path, *, wait: float = 0.2) -> DirectoryLock:
    """Take the exclusive lock on the existing directory `path`, or raise CnnkitError "run
    directory DIR is in use by process PID on HOST". `wait`: seconds to retry first (a
    reader's brief shared lock is not a writer)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise CnnkitError(f"{path}: cannot open the run directory ({exc.strerror})") from None
    deadline = time.monotonic() + wait
    while True:
        try:
            if fcntl is None:
                raise OSError("no flock")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            os.close(fd)
            raise CnnkitError(in_use_message(path)) from None
        except OSError:  # ENOLCK, EOPNOTSUPP, EINVAL: the filesystem has no flock
            os.close(fd)
            return _lock_record(path)
        _HELD_FDS.add(fd)
        return DirectoryLock(path, fd=fd)


def in_use_message(path: Path) -> str:
    pid, host = _holder(path)
    return f"run directory {path} is in use by process {pid} on {host}"


def _holder(path: Path, *, wait: float = 2.0) -> tuple[Any, Any]:
    """The holder's PID and host, from the lock record or the manifest the holder writes
    right after taking the lock; waits briefly for a holder that has only just taken it."""
    deadline = time.monotonic() + wait
    while True:
        manifest = _read_json(path / MANIFEST) or {}
        found = _read_record(path / RECORD) or (
            (manifest["pid"], manifest["host"]) if "pid" in manifest else None)
        if found and (found[1] != socket.gethostname() or _alive(found[0])):
            return found
        if time.monotonic() >= deadline:
            return found or ("unknown", "unknown host")
        time.sleep(0.05)


def _lock_record(path: Path) -> DirectoryLock:
    """The lock without flock: a record created exclusively; one whose holder on this host
    has died is stale and taken over."""
    record = path / RECORD
    for _ in range(3):
        try:
            fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_record(record)
            if holder and holder[1] == socket.gethostname() and not _alive(holder[0]):
                with contextlib.suppress(OSError):
                    record.unlink()
                continue
            raise CnnkitError(in_use_message(path)) from None
        except OSError as exc:
            raise CnnkitError(f"{path}: cannot lock the run directory ({exc.strerror})") from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
        return DirectoryLock(path, record=record)
    raise CnnkitError(in_use_message(path))


def _read_record(record: Path) -> tuple[int, str] | None:
    try:
        pid, host = record.read_text().split()
        return int(pid), host
    except (OSError, ValueError):
        return None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def is_locked(path: str | Path) -> bool:
    """Whether some process (this one included) holds the directory's lock; takes a shared
    lock for an instant to find out, so it never stands in a writer's way for long."""
    path = Path(path)
    record = _read_record(path / RECORD)
    if record is not None:
        return record[1] != socket.gethostname() or _alive(record[0])
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # drops the shared lock too
    return False


def manifest_problem(data: Any) -> str | None:
    """What makes `data` not a manifest cnnkit wrote (its format and every key's type), or
    None: a folder is a run directory by this record, never by a file's name alone."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return f"not a cnnkit run manifest (no \"format\": {FORMAT})"
    types = {"status": str, "command": list, "epoch": int, "epochs": int, "pid": int,
             "host": str, "created": str, "config": str}
    for key, kind in types.items():
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
            return f"not a cnnkit run manifest ('{key}' should be {kind.__name__})"
    if data["status"] not in STATUSES:
        return f"not a cnnkit run manifest (status {data['status']!r})"
    return None


def read_manifest(run_dir: str | Path) -> dict | None:
    """RUN/run.json as a dict, None where there is none; a "running" run whose lock nobody
    holds (its process was killed) reads as "interrupted". CnnkitError for a run.json that
    cnnkit did not write (`manifest_problem`)."""
    run_dir = Path(run_dir)
    manifest = _read_json(run_dir / MANIFEST, strict=True)
    problem = None if manifest is None else manifest_problem(manifest)
    if problem:
        raise CnnkitError(f"{run_dir / MANIFEST}: {problem}")
    if manifest is not None and manifest.get("status") == "running" and not is_locked(run_dir):
        manifest["status"] = "interrupted"
        manifest["reason"] = manifest.get("reason") or (
            f"process {manifest.get('pid')} on {manifest.get('host')} ended without a word "
            f"(killed)")
    return manifest


def _read_json(path: Path, *, strict: bool = False) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        if not strict:
            return None
        raise CnnkitError(f"{path}: not a readable run manifest ({exc})") from None
    if not isinstance(data, dict):
        if strict:
            raise CnnkitError(f"{path}: not a run manifest (expected a JSON object)")
        return None
    return data


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds") \
        .replace("+00:00", "Z")


class RunDirectory:
    """A run directory while this process writes it: its lock held, its manifest kept."""

    def __init__(self, path: Path, lock: DirectoryLock, manifest: dict):
        self.path, self.lock, self.manifest = path, lock, manifest

    @classmethod
    def start(cls, path: Path, lock: DirectoryLock, *, command: list[str], epochs: int,
              epoch: int = 0, versions: dict[str, str], fresh: bool) -> RunDirectory:
        """The manifest of a run starting (fresh) or resuming, written at once: it names this
        process as the holder."""
        old = {} if fresh else (_read_json(path / MANIFEST) or {})
        now = utc_now()
        manifest = {"format": FORMAT, **versions, "created": old.get("created", now),
                    "updated": now, "command": list(command), "config": CONFIG,
                    "status": "running", "epoch": epoch, "epochs": epochs, "reason": None,
                    "pid": os.getpid(), "host": socket.gethostname()}
        run = cls(path, lock, manifest)
        run.write()
        return run

    def update(self, **changes: Any) -> None:
        self.manifest.update(changes, updated=utc_now())
        self.write()

    def write(self) -> None:
        atomic_write_text(self.path / MANIFEST, json.dumps(self.manifest, indent=1) + "\n")

    def close(self, status: str, reason: str | None = None) -> None:
        """The run's last word in the manifest, then the lock released."""
        try:
            self.update(status=status, reason=reason)
        finally:
            self.lock.close()
