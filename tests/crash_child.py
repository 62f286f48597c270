"""`python tests/crash_child.py ARGS...` runs `cnnkit ARGS...` with test hooks set by env vars,
so tests can kill or signal a real training process at a known point.

CNNKIT_HOOKS      folder for the handshake files: the child writes `paused` there when it
                  stops at a hook, and goes on once `go` appears (or waits to be killed).
CNNKIT_PAUSE_STEP pause inside optimizer step N (1-based, counted in this process).
CNNKIT_PAUSE_SAVE pause inside the Nth checkpoint write, half of the file's bytes on disk.
CNNKIT_SCHEDULER  "onecycle": train with torch's OneCycleLR over the whole run, a stand-in for
                  a non-constant learning-rate schedule with state of its own.

`python tests/crash_child.py --serve` is a fork server (tests/forkserver.py) of such runs: it
imports what a run imports, then forks one child per request, which sets the request's
environment and only then reads the variables above.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import torch

import cnnkit.checkpoint
import cnnkit.training.trainer
from cnnkit.cli import main

# What a training run imports besides the modules above; torch._dynamo (2.2 s of the ~7 s of
# imports) comes with the first torch optimizer. Imports only: see tests/forkserver.py.
PRELOAD = ("torch._dynamo", "matplotlib.backends.backend_agg", "cnnkit.training.schedules")


def pause() -> None:
    hooks = Path(os.environ.get("CNNKIT_HOOKS", "."))
    (hooks / "paused").touch()
    while not (hooks / "go").exists():
        time.sleep(0.02)


def pause_in_optimizer_step(n: int) -> None:
    build = cnnkit.training.trainer.build_optimizer
    steps = [0]

    def after_step(optimizer, args, kwargs) -> None:
        steps[0] += 1
        if steps[0] == n:
            pause()

    def build_and_hook(model, cfg):
        optimizer = build(model, cfg)
        optimizer.register_step_post_hook(after_step)
        return optimizer

    cnnkit.training.trainer.build_optimizer = build_and_hook


def pause_in_save(n: int) -> None:
    atomic_write = cnnkit.checkpoint.atomic_write
    calls = [0]

    def half_then_pause(path, write) -> None:
        calls[0] += 1
        if calls[0] != n:
            return atomic_write(path, write)

        def write_slowly(f) -> None:
            buffer = io.BytesIO()
            write(buffer)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            pause()
            f.write(data[len(data) // 2:])

        atomic_write(path, write_slowly)

    cnnkit.checkpoint.atomic_write = half_then_pause


def use_onecycle() -> None:
    def build(optimizer, cfg, *, steps_per_epoch):
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr,
                                                   total_steps=cfg.epochs * steps_per_epoch)

    cnnkit.training.trainer.build_scheduler = build


def run(argv: list[str]) -> int:
    """`cnnkit ARGV` with the hooks the environment asks for now (in a forked child: after
    the request's environment is set)."""
    if os.environ.get("CNNKIT_PAUSE_STEP"):
        pause_in_optimizer_step(int(os.environ["CNNKIT_PAUSE_STEP"]))
    if os.environ.get("CNNKIT_PAUSE_SAVE"):
        pause_in_save(int(os.environ["CNNKIT_PAUSE_SAVE"]))
    if os.environ.get("CNNKIT_SCHEDULER") == "onecycle":
        use_onecycle()
    return main(argv)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        from tests.forkserver import serve

        serve(run, preload=PRELOAD)
        sys.stderr.flush()
        os._exit(0)  # the interpreter's shutdown would take ~2 s (torch, sympy) for nothing
    else:
        sys.exit(run(sys.argv[1:]))
