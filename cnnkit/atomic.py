"""Crash-safe writes: a temporary file in the same directory, fsynced, then renamed over the
target. A crash at any moment leaves the old complete file or the new complete file. And
reads bounded to a file's bytes: a digest a MB at a time, a window onto a file's first bytes."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from cnnkit.errors import CnnkitError

# our temporary files: `.NAME.PID@HOST.cnnkit.tmp`, so that cleanup knows its own (a user's
# `.draft.99999.tmp` is not ours) and judges a PID only on the host that wrote it
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[\w.-]+)\.cnnkit\.tmp$")


def _host() -> str:
    return re.sub(r"[^\w.-]", "-", socket.gethostname())[:64] or "host"


def temp_name(path: Path) -> Path:
    """The temporary file this process writes `path` through."""
    return path.with_name(f".{path.name}.{os.getpid()}@{_host()}.cnnkit.tmp")


def is_our_temp(path: Path) -> bool:
    return _TEMP.match(path.name) is not None


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(f)` on a temporary file, then atomically replace `path` with it."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise CnnkitError(f"{path}: cannot save ({exc.strerror or exc}); "
                          f"the previous file, if any, is unchanged") from None
    except BaseException:
        _discard(tmp)
        raise
    _fsync_dir(path.parent)


def _discard(tmp: Path) -> None:
    """Remove a temporary file that may not exist, nor be creatable (a parent that is a
    regular file, a read-only folder): the write's own error is the one to report."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete the temporary files that a killed cnnkit writer left in `directory`: ours by
    name (`temp_name`), written on this host by a PID no longer running. The completed files,
    and anything not named as ours, are never touched."""
    removed = []
    for tmp in Path(directory).glob(".*.cnnkit.tmp"):
        found = _TEMP.match(tmp.name)
        if found and found["host"] == _host() and not _alive(int(found["pid"])):
            _discard(tmp)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":  # Windows' os.kill(pid, 0) would kill it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def sha256_of(f: BinaryIO, size: int, chunk: int = 1 << 20) -> bytes:
    """SHA-256 of the first `size` bytes of `f`, read a MB at a time."""
    f.seek(0)
    digest, left = hashlib.sha256(), size
    while left > 0:
        block = f.read(min(chunk, left))
        if not block:  # the file shrank under us
            break
        digest.update(block)
        left -= len(block)
    return digest.digest()


class Window(io.RawIOBase):
    """The first `size` bytes of an open file, as a file (a checkpoint's body before its
    trailer, read by torch where it needs it: no copy of the whole file in memory)."""

    def __init__(self, f: BinaryIO, size: int):
        super().__init__()
        self.f, self.size, self.pos = f, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = max(0, (0, self.pos, self.size)[whence] + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        count = max(0, min(len(buffer), self.size - self.pos))
        self.f.seek(self.pos)
        got = self.f.readinto(memoryview(buffer).cast("B")[:count]) or 0
        self.pos += got
        return got
