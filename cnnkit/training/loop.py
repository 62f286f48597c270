"""The per-batch work of one training epoch, with metrics that add up on the device (the host
reads them once per epoch; the evaluation pass is cnnkit/runtime/evaluate.py)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from cnnkit.errors import CheckpointError, CnnkitError
from cnnkit.runtime.speed import Speed
from cnnkit.tasks import Task, main_logits
from cnnkit.training.distributed import Cluster, all_sum, loss_weight
from cnnkit.training.ema import EMA
from cnnkit.training.guards import FiniteWatch, check_every_for, clip_gradients
from cnnkit.training.log import Progress, RunLog
from cnnkit.training.mixing import BatchMix, dominant


@dataclass
class Stepper:
    """What the optimizer steps of an epoch touch, and how they run."""

    model: nn.Module  # what is stepped: wrapped in DDP and compiled where those are on
    optimizer: torch.optim.Optimizer
    scheduler: Any  # an LRScheduler, stepped once per batch
    task: Task
    speed: Speed | None = None  # None: fp32 on the model's device
    cluster: Cluster = field(default_factory=Cluster)
    ema: EMA | None = None  # updated after each step
    grad_clip: float | None = None  # max L2 norm of all gradients together; None: no clipping
    log_every: int = 20  # steps between progress-bar updates (the only host syncs)
    quiet: bool = True  # no progress bar
    accumulate: int = 1  # micro-batches each batch is split into (one update per batch)
    log: RunLog | None = None  # progress lines (train.log; stderr when not a terminal)
    log_every_seconds: float = 30.0
    diverge_factor: float | None = None  # see guards.FiniteWatch
    baseline: torch.Tensor | None = None  # the loss the watch compares with, across epochs
    mix: BatchMix | None = None  # MixUp/CutMix of each batch (soft targets), before any step
    data_wait: float = 0.0  # share of the last epoch's seconds spent waiting for a batch


@dataclass
class StepEnd:
    """Where an epoch is after one optimizer step, for the callbacks' on_step_end."""

    epoch: int  # 0-based
    done: int  # batches of this epoch done, the one just stepped included
    steps: int  # batches in the epoch
    totals: torch.Tensor  # metric sums (task.stats) of the `done` batches, on the device
    watch: FiniteWatch  # watch.check() raises if a NaN/inf loss came before (a host sync)


def train_one_epoch(stepper: Stepper, loader, *, epoch: int, start: int = 0,
                    totals: torch.Tensor | None = None,
                    on_step: Callable[[StepEnd], None] | None = None
                    ) -> tuple[dict[str, float], float]:
    """One pass over the training split, from batch `start` with the metric sums `totals` of
    the batches before it (mid-epoch resume); `on_step` is called after each step. Metrics
    add up on the device; the host reads them once per `log_every` steps for the progress bar
    (or progress line) and once at the end."""
    model, task = stepper.model, stepper.task
    log_every, steps = stepper.log_every, len(loader)
    device = next(model.parameters()).device
    speed = stepper.speed or Speed.plain(device)
    model.train()
    watch = FiniteWatch(device, epoch=epoch, check_every=check_every_for(device, log_every),
                        # an epoch shorter than log_every still gets a window to compare
                        window=max(1, min(log_every, steps)), factor=stepper.diverge_factor,
                        baseline=stepper.baseline)
    terminal = sys.stderr.isatty()
    bar = tqdm(total=steps, initial=start, desc=f"epoch {epoch + 1}", leave=False,
               unit="batch", disable=stepper.quiet or not terminal)
    progress = None if stepper.log is None else Progress(
        stepper.log, every=stepper.log_every_seconds, epoch=epoch, steps=steps, start=start,
        batch_size=loader.global_batch_size(start) if hasattr(loader, "global_batch_size")
        else 0, echo=not terminal)
    begin, waits = time.perf_counter(), []
    for step, (x, y) in enumerate(_timed(loader.batches(epoch, start=start), waits),
                                  start=start):
        if stepper.mix is not None:  # the whole batch, before micro-batches: mixing.py
            x, y = stepper.mix(x, y, epoch=epoch, index=step)
        output, loss = _step(stepper, speed, watch, x, y, step, loader)
        stepper.scheduler.step()
        if stepper.ema is not None:
            stepper.ema.update(model)
        # mixed batches: accuracy and the rest against each image's dominant label
        batch = task.stats(main_logits(output).detach(),
                           y if stepper.mix is None else dominant(y), loss)
        if totals is not None and totals.shape != batch.shape:  # host metadata: no sync
            raise CheckpointError(f"last.pt: malformed checkpoint: 'totals' holds "
                                  f"{totals.numel()} sums where this run's task keeps "
                                  f"{batch.numel()}")
        totals = batch if totals is None else totals + batch
        bar.update(1)
        if not bar.disable and ((step + 1) % log_every == 0 or step == start):
            bar.set_postfix(loss=f"{loss.item():.4f}")  # from the first step on
        # the loss is read where the watch reads anyway: every step on the CPU, where a read
        # costs nothing, every log_every steps on a GPU (a host sync)
        if progress is not None and (step + 1) % watch.check_every == 0 and progress.due():
            progress.line(step + 1, loss.item())
        if on_step is not None:
            on_step(StepEnd(epoch, step + 1, steps, totals, watch))
    watch.check()
    stepper.baseline = watch.baseline
    if totals is None:
        raise CnnkitError(f"epoch {epoch + 1}: the training split gave no batches")
    metrics = task.summarize(all_sum(totals, stepper.cluster))  # syncs: honest time below
    seconds = time.perf_counter() - begin
    stepper.data_wait = sum(waits) / seconds if seconds > 0 else 0.0
    bar.close()
    return metrics, seconds


def _timed(batches: Iterator, waits: list[float]) -> Iterator:
    """`batches`, with the seconds the host waited for each appended to `waits`: what the
    loader (decoding workers, a copy to the device) keeps the steps waiting."""
    batches = iter(batches)
    while True:
        begin = time.perf_counter()
        try:
            item = next(batches)
        except StopIteration:
            return
        waits.append(time.perf_counter() - begin)
        yield item


def _step(stepper: Stepper, speed: Speed, watch: FiniteWatch, x: torch.Tensor,
          y: torch.Tensor, step: int, loader) -> tuple[Any, torch.Tensor]:
    """One optimizer step on batch `step`: forward and backward over `stepper.accumulate`
    micro-batches (each loss weighed by its share of the batch, so the gradient is the whole
    batch's), then the update. The output and the loss of the whole batch."""
    model, optimizer, cluster = stepper.model, stepper.optimizer, stepper.cluster
    optimizer.zero_grad(set_to_none=True)
    parts = _micro_batches(x.shape[0], stepper.accumulate)
    outputs, loss = [], None
    for i, (lo, hi) in enumerate(parts):
        last = i == len(parts) - 1
        with speed.autocast():
            output = model(speed.inputs(x[lo:hi]))
            part = stepper.task.loss(output, y[lo:hi])
        share = (hi - lo) / x.shape[0]
        loss = part.detach() * share if loss is None else loss + part.detach() * share
        if last:  # before the update: on the CPU a NaN never reaches the weights
            watch.observe(loss, step)
        weight = share
        if cluster.active:  # DDP averages over ranks; weigh by shard size (host arithmetic)
            weight *= loss_weight(y.shape[0], loader.global_batch_size(step), cluster.world_size)
        scaled = part if weight == 1.0 else part * weight
        if last:
            speed.backward_step(scaled, optimizer, before_step=lambda: clip_gradients(
                model.parameters(), stepper.grad_clip))
        else:  # gradients add up; under DDP the ranks exchange them once, at the last part
            with model.no_sync() if cluster.active else contextlib.nullcontext():
                (speed.scaler.scale(scaled) if speed.scaler else scaled).backward()
        outputs.append(output)
    return _joined(outputs), loss


def _micro_batches(n: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi) bounds of `parts` near-equal slices of n examples (fewer when n < parts)."""
    parts = max(1, min(parts, n))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _joined(outputs: list[Any]) -> Any:
    """The micro-batches' outputs as one batch's (the main logits are what stats read)."""
    if len(outputs) == 1:
        return outputs[0]
    return torch.cat([main_logits(o).detach() for o in outputs])
