"""A fork server for tests that need a real, separate process but not a fresh interpreter.

A fresh `python` that trains spends ~7 s importing torch, torch._dynamo and matplotlib before
a 1-second run. The server imports them once, then forks one child per request: a real OS
process (it can be sent SIGKILL, SIGTERM, SIGINT, and given an rlimit) that starts in
milliseconds.

Protocol: the server reads one JSON request a line on stdin,
    {"argv": [...], "env": {...}, "cwd": "...", "stdout": path, "stderr": path,
     "status": path, "file_size_limit": null | bytes}
forks, and answers the child's pid, one line on stdout. When the child ends the server writes
its exit status to `status` (atomically, as subprocess reports it: -N if signal N killed it).
Closing stdin shuts the server down: children still running after GRACE seconds are killed.

Rules the server keeps, because fork copies a process but not its threads:
- it only imports before forking, never computes with torch: a thread pool made in the
  server would be copied without its threads, and a child that uses it hangs;
- it has one thread: select() on stdin with a short timeout, and waitpid(WNOHANG) to reap;
- a child never returns into the server loop: it leaves with os._exit.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

GRACE = 10.0  # seconds a running child is given once stdin closes, then SIGKILL
TICK = 0.05  # seconds between looks for ended children


# The server: `serve(run)` in the process that was started with stdin and stdout as pipes.


def serve(run: Callable[[list[str]], int], *, preload: Iterable[str] = ()) -> None:
    """Answer requests on stdin until it closes; each child calls run(argv) -> exit code."""
    replies = os.dup(1)  # pids go here; a stray print in the server goes to stderr instead
    os.dup2(2, 1)
    for name in preload:
        importlib.import_module(name)
    children: dict[int, str] = {}  # pid -> status path
    pending, deadline = b"", None
    while deadline is None or (children and time.monotonic() < deadline):
        if deadline is None and select.select([0], [], [], TICK)[0]:
            data = os.read(0, 1 << 16)
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = _fork(run, request, replies)
                children[pid] = request["status"]
                os.write(replies, f"{pid}\n".encode())
            if not data:
                deadline = time.monotonic() + GRACE
        elif deadline is not None:
            time.sleep(TICK)
        _reap(children)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    while children:
        _reap(children)
        time.sleep(TICK)


def _reap(children: dict[int, str]) -> None:
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        path = children.pop(pid)
        Path(f"{path}.tmp").write_text(f"{os.waitstatus_to_exitcode(status)}\n")
        os.replace(f"{path}.tmp", path)  # the reader sees no status or a whole one


def _fork(run: Callable[[list[str]], int], request: dict, replies: int) -> int:
    sys.stdout.flush()  # or the child would write the server's buffered text again
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.close(replies)
        _redirect(request)
        code = _as_a_process_would(run, request)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _redirect(request: dict) -> None:
    """fd 0 from /dev/null and fds 1, 2 to the request's files: not the server's pipes."""
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                            (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)


def _as_a_process_would(run: Callable[[list[str]], int], request: dict) -> int:
    """Run in the request's environment; the exit code `python script ARGV` would give."""
    try:
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        if request["file_size_limit"] is not None:
            _limit_file_size(request["file_size_limit"])
        sys.argv = [sys.argv[0], *request["argv"]]
        return run(request["argv"])
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Python dies of the SIGINT it did not handle
        traceback.print_exc()
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        _flush()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            pass


def _limit_file_size(limit: int) -> None:
    """Files may not grow past `limit` bytes, and a write past it fails with EFBIG instead of
    the default SIGXFSZ kill: a full disk, as the program sees it."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


# The client: in the test process.


class ServedProcess:
    """A child of the fork server, with the part of subprocess.Popen's interface tests use."""

    def __init__(self, pid: int, status: Path):
        self.pid, self.status, self.returncode = pid, status, None

    def poll(self) -> int | None:
        if self.returncode is None and self.status.exists():
            self.returncode = int(self.status.read_text())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout or 0)
        while self.poll() is None:
            if timeout is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"forked pid {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # not yet reaped, so the pid is still this child's
            os.kill(self.pid, signum)


class ForkServer:
    """`python SCRIPT --serve` (which calls `serve`), started now; `spawn` forks a child."""

    def __init__(self, script: Path, *, env: dict[str, str], log: Path, timeout: float):
        self.log, self.timeout = log, timeout
        with open(log, "w") as stderr:
            self.process = subprocess.Popen([sys.executable, str(script), "--serve"], env=env,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=stderr)
        self._pending = b""

    def spawn(self, argv: list[str], *, env: dict[str, str], cwd: Path, stdout: Path,
              stderr: Path, status: Path, file_size_limit: int | None = None) -> ServedProcess:
        request = dict(argv=argv, env=env, cwd=str(cwd), stdout=str(stdout),
                       stderr=str(stderr), status=str(status), file_size_limit=file_size_limit)
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        return ServedProcess(int(self._reply()), status)

    def _reply(self) -> bytes:
        """One line from the server; the first waits for its imports (seconds)."""
        deadline = time.monotonic() + self.timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"fork server silent for {self.timeout} s: {self._log()}")
            data = os.read(fd, 1 << 16)
            if not data:
                raise RuntimeError(f"fork server ended: {self._log()}")
            self._pending += data
        line, self._pending = self._pending.split(b"\n", 1)
        return line

    def _log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        """Close stdin; the server kills children left after GRACE seconds and exits."""
        self.process.stdin.close()
        try:
            self.process.wait(timeout=GRACE + 20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


class Subprocesses:
    """The same interface with a fresh interpreter per child: where os.fork is missing."""

    def __init__(self, script: Path):
        self.script = script

    def spawn(self, argv: list[str], *, env: dict[str, str], cwd: Path, stdout: Path,
              stderr: Path, status: Path, file_size_limit: int | None = None
              ) -> subprocess.Popen:
        limit = None if file_size_limit is None else lambda: _limit_file_size(file_size_limit)
        with open(stdout, "w") as out, open(stderr, "w") as err:
            return subprocess.Popen([sys.executable, str(self.script), *argv], env=env,
                                    cwd=cwd, stdout=out, stderr=err, preexec_fn=limit)

    def close(self) -> None:
        pass
