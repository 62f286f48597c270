"""The per-batch work: one training epoch and one evaluation pass, with metrics that add up
on the device (the host reads them once per epoch and split)."""

from __future__ import annotations

import sys
import time
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


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, scheduler,
                    task: Task, *, epoch: int, quiet: bool = True,
                    log_every: int = 20, start: int = 0, totals: torch.Tensor | None = None,
                    grad_clip: float | None = None, hook: Any = None,
                    ema: EMA | None = None, speed: Speed | None = None,
                    cluster: Cluster | None = None) -> tuple[dict[str, float], float]:
    """One pass over the training split, from batch `start` with the metric sums `totals` of
    the batches before it (mid-epoch resume). Metrics add up on the device; the host reads
    them once per `log_every` steps for the progress bar and once at the end."""
    device = next(model.parameters()).device
    speed = speed or Speed.plain(device)
    cluster = cluster or Cluster()
    model.train()
    watch = FiniteWatch(device, epoch=epoch, check_every=check_every_for(device, log_every))
    bar = tqdm(total=len(loader), initial=start, desc=f"epoch {epoch + 1}", leave=False,
               unit="batch", disable=quiet or not sys.stderr.isatty())
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
        speed.backward_step(loss_to_step, optimizer,
                            before_step=lambda: clip_gradients(model.parameters(), grad_clip))
        scheduler.step()
        if ema is not None:
            ema.update(model)
        batch = task.stats(main_logits(output).detach(), y, loss)
        totals = batch if totals is None else totals + batch
        bar.update(1)
        if not bar.disable and (step + 1) % log_every == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if hook is not None and hook.due(epoch, step + 1, len(loader)):
            watch.check()  # never save weights that a NaN has reached
            hook.save(step + 1, totals)
    watch.check()
    if totals is None:
        raise CnnkitError(f"epoch {epoch + 1}: the training split gave no batches")
    metrics = task.summarize(all_sum(totals, cluster))  # syncs the device: honest time below
    seconds = time.perf_counter() - begin
    bar.close()
    return metrics, seconds


@torch.no_grad()
def evaluate(model: nn.Module, loader, task: Task, *, speed: Speed | None = None,
             cluster: Cluster | None = None) -> dict[str, float]:
    speed = speed or Speed.plain(next(model.parameters()).device)
    model.eval()
    totals = None
    for x, y in loader.batches(0):
        with speed.autocast():
            logits = main_logits(model(speed.inputs(x)))
            batch = task.stats(logits, y, task.loss(logits, y, training=False))
        totals = batch if totals is None else totals + batch
    return task.summarize(all_sum(totals, cluster or Cluster()))
