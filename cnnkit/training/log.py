"""What a run prints, written for a file as much as for a terminal.

Every line goes to stdout (progress to stderr) unless the run is quiet, and is appended to
RUN/train.log with its UTC time, the final error line included. A terminal gets tqdm's bar;
anything else (nohup, a batch scheduler, a notebook) a progress line every
`train.log_every_seconds`, printed only at a step where the loss is read anyway (the NaN
watch's cadence on a GPU), so logging adds no host sync:

    epoch 1  step 120/600  loss 0.4113  2,310 img/s  ETA 0:00:41
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from cnnkit.errors import counted, display

if TYPE_CHECKING:
    from cnnkit.schema import TrainConfig
    from cnnkit.training.run import Run


class RunLog:
    """`log(line)`: printed (unless quiet) and appended to train.log once `open` was called."""

    def __init__(self, *, quiet: bool = False):
        self.quiet = quiet
        self._file: TextIO | None = None

    def open(self, path: Path) -> None:
        try:
            self._file = open(path, "a", encoding="utf-8", errors="replace", buffering=1)
        except OSError:  # a read-only run directory: the checkpoints report it, in one line
            self._file = None

    def __call__(self, text: str, *, err: bool = False, echo: bool = True,
                 file: bool = True) -> None:
        text = display(text)
        if echo and not self.quiet:
            try:
                print(text, file=sys.stderr if err else sys.stdout, flush=True)
            except (BrokenPipeError, ValueError):  # `cnnkit train ... | head -1`: the reader
                self._console_gone()  # has gone; the run goes on, train.log keeps every line
        if file and self._file is not None:
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            try:
                for line in text.splitlines() or [""]:
                    self._file.write(f"{stamp}  {line}\n")
            except OSError:  # a full disk must not hide the run's own error
                self.close()

    def _console_gone(self) -> None:
        """No more echo, and stdout onto /dev/null so that no later print or the
        interpreter's last flush meets the closed pipe."""
        self.quiet = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (AttributeError, OSError, ValueError):  # not a real file
            pass

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


class Progress:
    """Progress lines for a log that is not a terminal: one at the first step whose loss is
    read after `every` seconds since the last line (or the epoch's start)."""

    def __init__(self, log: RunLog, *, every: float, epoch: int, steps: int, start: int,
                 batch_size: int, echo: bool):
        self.log, self.every, self.epoch, self.steps = log, every, epoch, steps
        self.batch_size, self.echo = batch_size, echo
        self.begin = self.last = time.monotonic()
        self.start = start

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every

    def line(self, done: int, loss: float) -> None:
        now = time.monotonic()
        rate = (done - self.start) / max(now - self.begin, 1e-9)  # batches per second
        eta = (self.steps - done) / rate if rate > 0 else 0.0
        self.log(f"epoch {self.epoch + 1}  step {done}/{self.steps}  loss {loss:.4f}  "
                 f"{rate * self.batch_size:,.0f} img/s  ETA {_clock(eta)}", err=True,
                 echo=self.echo)
        self.last = now


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


WIDTH = 100  # the console's epoch line, data-wait figure included, at most
SHORT = {"balanced_acc": "bal_acc", "macro_f1": "f1"}  # the line's names; metrics.csv's full
# the line's metrics where the classes are out of balance: accuracy is then misleading, and
# balanced accuracy and macro-F1 take its place (on balanced data they repeat it)
UNEVEN = {"acc": ("balanced_acc", "macro_f1")}
PARTS = ("obj_acc", "cls_acc")  # localization's acc in parts: metrics.csv and train.log only


def epoch_line(row: dict, epochs: int, metrics: tuple[str, ...] = ("loss", "acc"), *,
               images: int = 0, best: bool = False, width: int | None = None) -> str:
    """`epoch  3/30  train loss 0.1234  val loss 0.2345 acc 0.9610  1.20s  lr 0.005  2,400
    img/s  * best`: train loss and the val `metrics` (every split's `metrics` without a
    validation split, or with `width` None: train.log's full line), the data wait where it
    was measured; lr and img/s where the line stays within `width`; `* best`: the epoch
    best.pt now holds."""
    val = "val_loss" in row
    parts = [f"epoch {row['epoch']:>3}/{epochs}"]
    for split in ("train", "val"):
        shown = metrics if width is None or split == "val" or not val else metrics[:1]
        if f"{split}_{metrics[0]}" in row:
            parts.append(" ".join([split] + [f"{SHORT.get(m, m) if width else m} "
                                             f"{_number(row[f'{split}_{m}'])}" for m in shown]))
    parts.append(f"{row['seconds']:.2f}s")
    if row.get("data_wait") is not None:  # the share of the epoch spent waiting for batches
        parts.append(f"wait {row['data_wait']:.0%}")
    extra = ([f"lr {row['lr']:.3g}"] if "lr" in row else []) + \
        ([f"{images / row['seconds']:,.0f} img/s"] if images and row["seconds"] > 0 else [])
    mark = ["* best"] if best else []
    for part in extra:
        if width is None or len("  ".join([*parts, part, *mark])) <= width:
            parts.append(part)
    return "  ".join([*parts, *mark])


def shown_metrics(metrics: tuple[str, ...], *, uneven: bool) -> tuple[str, ...]:
    """The task's metrics the console's epoch line shows: the extras (balanced accuracy,
    macro-F1) only where the classes are out of balance, in accuracy's place."""
    extras = {m for group in UNEVEN.values() for m in group}
    metrics = tuple(m for m in metrics if m not in PARTS)
    if not uneven:
        return tuple(m for m in metrics if m not in extras)
    return tuple(m for m in metrics if m not in UNEVEN or not set(UNEVEN[m]) <= set(metrics))


def _number(value: float) -> str:
    """4 decimals; 4 significant digits past 10,000 (a diverging loss stays short)."""
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


WAIT_HINT = 0.30  # share of an epoch spent waiting for batches, two epochs in a row


def data_wait_hint(history: list[dict], workers: int | None) -> str | None:
    """One line when the last two epochs each waited more than WAIT_HINT of their time for
    the next batch (history rows' data_wait), naming data.workers and the CPUs; said once
    per run: only on the epoch that first makes two in a row."""
    from cnnkit.training.fit import available_cpus

    waits = [row.get("data_wait") or 0.0 for row in history]
    over = [w > WAIT_HINT for w in waits]
    if len(over) < 2 or not (over[-1] and over[-2]) or any(
            a and b for a, b in zip(over[:-2], over[1:-1])):
        return None
    cpus = available_cpus()
    workers_text = "" if workers is None else f"data.workers is {workers}, "
    return (f"hint: the last 2 epochs waited {waits[-2]:.0%} and {waits[-1]:.0%} of their time "
            f"for the next batch; {workers_text}this machine has {cpus} CPUs: more "
            f"data.workers (up to {cpus}), a smaller data.image_size or fewer augmentations "
            f"keep the steps fed")


def header_lines(run: Run, steps_per_epoch: int) -> list[str]:
    """Who trains what where: the start header of the console and train.log."""
    import torch

    from cnnkit.version import version

    cfg, speed, model = run.cfg, run.speed, run.model
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sizes = {name: len(split) for name, split in run.data.splits.items()}
    device = next(model.parameters()).device
    accumulate = cfg.train.accumulate_steps
    micro = f" in {accumulate} micro-batches" if accumulate > 1 else ""
    start = f"resuming at epoch {run.state.epoch + 1}" + (
        f", step {run.state.step + 1}" if run.state.step else "") \
        if run.saved is not None else "starting"
    return [
        f"cnnkit {version()}, torch {torch.__version__}: {start} {cfg.source}",
        f"device {device}, precision {speed.precision}, channels_last "
        f"{'on' if speed.channels_last else 'off'}, compile {'on' if cfg.train.compile else 'off'}"
        + (f", {run.cluster.world_size} processes" if run.cluster.active else ""),
        f"parameters {total:,} ({trainable:,} trainable)" + _decays(run),
        f"data {cfg.data.name}: {sizes.get('train', 0):,} train, {sizes.get('val', 0):,} val; "
        f"batch {cfg.train.batch_size}{micro}, {counted(steps_per_epoch, 'step')} per epoch, "
        f"{counted(cfg.train.epochs, 'epoch')}",
        f"run directory {run.out}",
    ]


def _decays(run: Run) -> str:
    """", weight decay 0.0001 on 25,503,912, 0 on 53,120" where norms or biases differ."""
    from cnnkit.models.freeze import decay_counts

    train = run.cfg.train
    if train.norm_weight_decay is None and train.bias_weight_decay is None:
        return ""
    counts = decay_counts(run.model, train)
    return ", weight decay " + ", ".join(f"{decay:g} on {n:,}" for decay, n in counts.items())


def oom_message(train: TrainConfig, device: object) -> str:
    per_pass = -(-train.batch_size // train.accumulate_steps)
    return (f"{device} ran out of memory with {per_pass} examples per forward pass "
            f"(train.batch_size {train.batch_size}, train.accumulate_steps "
            f"{train.accumulate_steps}); set train.accumulate_steps to "
            f"{train.accumulate_steps * 2} or more for the same update in smaller "
            f"micro-batches, or lower train.batch_size")
