"""The per-batch work: one training epoch and one evaluation pass, with metrics that add up
on the device (the host reads them once per epoch and split)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from cnnkit.errors import CnnkitError
from cnnkit.tasks import Task, main_logits
from cnnkit.training.distributed import Cluster, all_sum, loss_weight
from cnnkit.training.ema import EMA
from cnnkit.training.guards import FiniteWatch, check_every_for, clip_gradients
from cnnkit.training.speed import Speed


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
    and once at the end."""
    model, optimizer, task = stepper.model, stepper.optimizer, stepper.task
    cluster, log_every, steps = stepper.cluster, stepper.log_every, len(loader)
    device = next(model.parameters()).device
    speed = stepper.speed or Speed.plain(device)
    model.train()
    watch = FiniteWatch(device, epoch=epoch, check_every=check_every_for(device, log_every))
    bar = tqdm(total=steps, initial=start, desc=f"epoch {epoch + 1}", leave=False,
               unit="batch", disable=stepper.quiet or not sys.stderr.isatty())
    begin = time.perf_counter()
    for step, (x, y) in enumerate(loader.batches(epoch, start=start), start=start):
        with speed.autocast():
            output = model(speed.inputs(x))
            loss = task.loss(output, y)
        watch.observe(loss, step)  # before the update: on the CPU a NaN never reaches weights
        optimizer.zero_grad(set_to_none=True)
        if cluster.active:  # DDP averages over ranks; weigh by shard size (host arithmetic)
            loss_to_step = loss * loss_weight(y.shape[0], loader.global_batch_size(step),
                                              cluster.world_size)
        else:
            loss_to_step = loss
        speed.backward_step(loss_to_step, optimizer, before_step=lambda: clip_gradients(
            model.parameters(), stepper.grad_clip))
        stepper.scheduler.step()
        if stepper.ema is not None:
            stepper.ema.update(model)
        batch = task.stats(main_logits(output).detach(), y, loss)
        totals = batch if totals is None else totals + batch
        bar.update(1)
        if not bar.disable and (step + 1) % log_every == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if on_step is not None:
            on_step(StepEnd(epoch, step + 1, steps, totals, watch))
    watch.check()
    if totals is None:
        raise CnnkitError(f"epoch {epoch + 1}: the training split gave no batches")
    metrics = task.summarize(all_sum(totals, cluster))  # syncs the device: honest time below
    seconds = time.perf_counter() - begin
    bar.close()
    return metrics, seconds


@torch.no_grad()
def evaluate(model: nn.Module, loader, task: Task, *, speed: Speed | None = None,
             cluster: Cluster | None = None, split: str = "val") -> dict[str, float]:
    """The task's metrics over `loader`, which holds the split named `split`."""
    speed = speed or Speed.plain(next(model.parameters()).device)
    model.eval()
    totals = None
    for x, y in loader.batches(0):
        with speed.autocast():
            logits = main_logits(model(speed.inputs(x)))
            batch = task.stats(logits, y, task.loss(logits, y, training=False))
        totals = batch if totals is None else totals + batch
    if totals is None:
        raise CnnkitError(f"evaluate: split '{split}' gave no batches (it is empty, or holds "
                          f"fewer examples than there are ranks)")
    return task.summarize(all_sum(totals, cluster or Cluster()))
